"""MIMIC-III / MIMIC-IV reader: the official table layout -> ``events`` and ``stays``.

Layouts
-------
- MIMIC-III: one folder of ``ICUSTAYS.csv.gz`` ... (gzip or plain CSV; upper- or lower-case file
  names and headers). Stays are ``ICUSTAYS.icustay_id``.
- MIMIC-IV: ``hosp/`` and ``icu/`` folders of lower-case ``*.csv.gz`` (``icu/icustays``,
  ``icu/chartevents``, ``icu/inputevents``, ``icu/outputevents``, ``icu/procedureevents``,
  ``hosp/admissions``, ``hosp/patients``, ``hosp/labevents``, ``hosp/prescriptions``,
  ``hosp/microbiologyevents``). Stays are ``icustays.stay_id``.

Item ids map to concepts through ``ehr/mimic_items.toml`` (CareVue and MetaVision ids; the
concepts, canonical units and plausible ranges come from ``ehr/concepts.toml``). Units are
converted at ingest (°F -> °C; FiO2 in percent or fraction -> fraction) and values are range
checked by :func:`ehr.sources.plausibility.check_values`.

Codes in ``events`` (namespace ``MIMIC-III`` or ``MIMIC-IV``):

- ``<NS>/<itemid>``: a charted/lab item; ``concept`` set for mapped concepts, null for GCS
  components (unit ``{score}``) and weights (``kg``).
- ``<NS>/gcs_total``: MetaVision GCS total (eye + verbal + motor at the same charttime; an
  intubated verbal response "No Response-ETT" makes the total 15, as mimic-code does), concept ``gcs``.
- ``<NS>/abx``: an antibiotic prescription (text_value = drug, numeric_value = prescribed
  duration in h). MIMIC-III prescriptions carry dates only, so the time is midnight of the start date.
  Antibiotics are the drug names matching :data:`ANTIBIOTIC_PATTERN` (mimic-code
  ``antibiotic.sql``), excluding topical/ophthalmic/otic routes and creams, ointments, gels.
- ``<NS>/culture``: one per specimen (subject, time, specimen type); text_value = specimen type,
  numeric_value = 1 if an organism grew (org_name set, not "NEGATIVE"/"CANCELLED", org_itemid not
  90856). Time = charttime, or chartdate when charttime is null.
- ``<NS>/norepinephrine|epinephrine|dopamine|dobutamine|phenylephrine`` (mcg/kg/min) and
  ``<NS>/vasopressin`` (U/min): infusion rates. MetaVision intervals give an event at the start
  and every hour until the end and a 0 at the end; CareVue gives the charted rates (a "D/C'd" or
  "Stopped" row without rate gives 0). mcg/min rates are divided by the patient weight
  (MetaVision ``patientweight``, else the stay's first charted weight, else 80 kg, counted).
- ``<NS>/vent``: 1 where a ventilator setting was charted (mimic-code's ventilation items) or
  hourly during a MetaVision ventilation procedure, 0 at its end.
- ``<NS>/urine_output``: urine volume in mL (GU irrigant in counted negative, as mimic-code).

Hospital-level rows (labs, prescriptions, cultures, and ICU rows without a stay id) are given to
the subject's ICU stay whose window ``[intime - 24 h, outtime]`` holds their time (the later stay
when windows overlap); rows outside every window are counted and left out.

Stays: ``age`` is age at ICU admission; MIMIC shifts the date of birth of patients older than 89
by about 300 years (MIMIC-IV caps ``anchor_age`` at 91): these ages are set to 91.4, the median age
of that group reported by the MIMIC-III documentation (each counted as repaired).
``onset_time``/``sepsis`` come from :func:`ehr.labels.label_stays` (extra column
``suspicion_time``); ``bsi`` = a positive blood culture during the stay window;
``onset_setting`` = ``"community"`` when onset is < 4 days (96 h) after hospital admission,
else ``"hospital"``.

Bad input is counted in the :class:`~ehr.sources.report.IngestReport` with file, row and field:
a missing optional table (skipped), an unmapped item id (skipped), an unparseable timestamp or
id (row rejected), a charted value with text only (kept, ``text_value`` set, ``numeric_value``
null), a value outside the plausible range (repaired or rejected). A missing required table
(icustays, admissions, patients) or a table from the other MIMIC version raises
:class:`~ehr.sources.report.IngestError`. A CSV line with too few fields reads as empty cells (then
counted, e.g. as a missing timestamp); extra trailing fields are ignored by the CSV parser.

Examples
--------
>>> events, stays, report = read_mimic("../shared/data/mimic-iii-demo")  # doctest: +SKIP
>>> len(stays)  # doctest: +SKIP
136
"""

from __future__ import annotations

import logging
import re
import time as _time
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ehr.concepts import convert, load_concepts
from ehr.labels import definition_params, label_stays
from ehr.schema import columns, validate
from ehr.sources.plausibility import check_values
from ehr.sources.report import IngestError, IngestReport

__all__ = ["MimicCohort", "read_mimic", "load_item_map", "ANTIBIOTIC_PATTERN", "AGE_OVER_89"]

log = logging.getLogger(__name__)

AGE_OVER_89 = 91.4
LOOKBACK_H = 24.0  # hospital-level rows up to 24 h before ICU admission belong to the stay
ONSET_SETTING_DAYS = 4.0
DEFAULT_WEIGHT_KG = 80.0
CHUNK_ROWS = 2_000_000
NAMESPACE = {"iii": "MIMIC-III", "iv": "MIMIC-IV"}
SOURCE = {"iii": "mimic3", "iv": "mimic4"}

#: antibiotic drug names (lower-case substrings), after MIT-LCP mimic-code ``antibiotic.sql``
ANTIBIOTIC_PATTERN = re.compile(
    "adoxa|ala-tet|alodox|amikacin|amikin|amoxicil|amphotericin|anidulafungin|ancef|clavulanate|"
    "ampicillin|augmentin|avelox|avidoxy|azactam|azithromycin|aztreonam|axetil|bactocill|bactrim|"
    "bactroban|bethkis|biaxin|bicillin l-a|cayston|cefazolin|cedax|cefoxitin|ceftazidime|cefaclor|"
    "cefadroxil|cefdinir|cefditoren|cefepime|cefotan|cefotetan|cefotaxime|ceftaroline|cefpodoxime|"
    "cefpirome|cefprozil|ceftibuten|ceftin|ceftriaxone|cefuroxime|cephalexin|cephalothin|cephapririn|"
    "chloramphenicol|cipro|claforan|clarithromycin|cleocin|clindamycin|cubicin|dicloxacillin|"
    "dirithromycin|doryx|doxycy|duricef|dynacin|ery-tab|eryped|eryc|erythrocin|erythromycin|factive|"
    "flagyl|fortaz|furadantin|garamycin|gentamicin|kanamycin|keflex|kefzol|ketek|levaquin|"
    "levofloxacin|lincocin|linezolid|macrobid|macrodantin|maxipime|mefoxin|metronidazole|meropenem|"
    "methicillin|minocin|minocycline|monodox|monurol|morgidox|moxatag|moxifloxacin|mupirocin|myrac|"
    "nafcillin|neomycin|nicazel doxy 30|nitrofurantoin|norfloxacin|noroxin|ocudox|ofloxacin|omnicef|"
    "oracea|oraxyl|oxacillin|pc pen vk|pce dispertab|penicillin|periostat|pfizerpen|piperacillin|"
    "tazobactam|primsol|proquin|raniclor|rifadin|rifampin|rocephin|smz-tmp|septra|solodyn|"
    "spectracef|streptomycin|sulfadiazine|sulfamethoxazole|trimethoprim|sulfatrim|sulfisoxazole|"
    "suprax|synercid|tazicef|tetracycline|timentin|tobramycin|unasyn|vancocin|vancomycin|vantin|"
    "vibativ|vibra-tabs|vibramycin|zinacef|zithromax|zosyn|zyvox|daptomycin|tigecycline|ertapenem|"
    "imipenem|doripenem|colistin|polymyxin"
)
_ABX_EXCLUDE_DRUG = re.compile("cream|desensitization|ophth oint|gel|ointment|drops|ophth")
_ABX_EXCLUDE_ROUTE = {"ou", "os", "od", "au", "as", "ad", "tp", "both eyes", "left eye", "right eye",
                      "both ears", "left ear", "right ear", "ophthalmic", "topical"}

# logical table -> file stem per version (MIMIC-IV: folder/stem)
_LAYOUT = {
    "iii": {
        "icustays": "icustays", "admissions": "admissions", "patients": "patients",
        "chartevents": "chartevents", "labevents": "labevents",
        "microbiologyevents": "microbiologyevents", "prescriptions": "prescriptions",
        "inputevents_mv": "inputevents_mv", "inputevents_cv": "inputevents_cv",
        "outputevents": "outputevents", "procedureevents": "procedureevents_mv",
    },
    "iv": {
        "icustays": "icu/icustays", "admissions": "hosp/admissions", "patients": "hosp/patients",
        "chartevents": "icu/chartevents", "labevents": "hosp/labevents",
        "microbiologyevents": "hosp/microbiologyevents", "prescriptions": "hosp/prescriptions",
        "inputevents_mv": "icu/inputevents", "outputevents": "icu/outputevents",
        "procedureevents": "icu/procedureevents",
    },
}
_REQUIRED = ("icustays", "admissions", "patients")
_ETT = re.compile(r"ETT|ET/Trach", re.IGNORECASE)
_RATE_UNITS = {  # rate unit (lower-case) -> (factor, divide by weight, canonical unit)
    "mcg/kg/min": (1.0, False, "ug/kg/min"), "mcgkgmin": (1.0, False, "ug/kg/min"),
    "mg/kg/min": (1000.0, False, "ug/kg/min"), "mcg/kg/hour": (1 / 60, False, "ug/kg/min"),
    "mcg/min": (1.0, True, "ug/kg/min"), "mcgmin": (1.0, True, "ug/kg/min"),
    "mg/min": (1000.0, True, "ug/kg/min"), "mg/hour": (1000 / 60, True, "ug/kg/min"),
    "units/min": (1.0, False, "U/min"), "umin": (1.0, False, "U/min"), "u/min": (1.0, False, "U/min"),
    "units/hour": (1 / 60, False, "U/min"), "uhr": (1 / 60, False, "U/min"), "u/hr": (1 / 60, False, "U/min"),
}
_EVENT_COLS = columns("events")


class MimicCohort(NamedTuple):
    """What :func:`read_mimic` returns (unpacks as ``events, stays, report``)."""

    events: pd.DataFrame
    stays: pd.DataFrame
    report: IngestReport


@lru_cache(maxsize=2)
def load_item_map(path: str | None = None) -> dict:
    """Load ``mimic_items.toml``: ``{"items": DataFrame(itemid, table, concept, unit), "signals": {...}}``.

    Every concept must exist in ``concepts.toml`` (ValueError naming it otherwise).
    """
    if path is None:
        text = resources.files("ehr").joinpath("mimic_items.toml").read_text(encoding="utf-8")
        origin = "ehr/mimic_items.toml"
    else:
        text, origin = Path(path).read_text(encoding="utf-8"), str(path)
    raw = tomllib.loads(text)
    known = load_concepts()
    rows = []
    for concept, entry in raw.get("concepts", {}).items():
        if concept not in known:
            raise ValueError(f"{origin}: concept '{concept}' is not in concepts.toml")
        for it in entry.get("items", []):
            rows.append((int(it["id"]), it["table"], concept, it["unit"]))
    items = pd.DataFrame(rows, columns=["itemid", "table", "concept", "unit"])
    dup = items.duplicated(["itemid", "table"])
    if dup.any():
        raise ValueError(f"{origin}: item id {int(items.loc[dup, 'itemid'].iloc[0])} is mapped twice")
    return {"items": items, "signals": raw.get("signals", {})}


# ---------------------------------------------------------------- files

def _index_files(root: Path) -> dict[str, Path]:
    """Map 'stem' and 'folder/stem' (lower-case, without .csv/.csv.gz) to files."""
    out: dict[str, Path] = {}
    dirs = [(root, "")] + [(d, d.name.lower() + "/") for d in root.iterdir() if d.is_dir()]
    for d, prefix in dirs:
        for f in d.iterdir():
            name = f.name.lower()
            for ext in (".csv.gz", ".csv"):
                if f.is_file() and name.endswith(ext):
                    out.setdefault(prefix + name[: -len(ext)], f)
    return out


def _detect_version(files: dict[str, Path], root: Path) -> str:
    if "icu/icustays" in files or "hosp/admissions" in files:
        return "iv"
    if "icustays" in files:
        return "iii"
    raise IngestError(f"{root}: no ICUSTAYS table (MIMIC-III: ICUSTAYS.csv[.gz]; MIMIC-IV: icu/icustays.csv.gz)")


def _header(path: Path) -> list[str]:
    try:
        return [c.lower() for c in pd.read_csv(path, nrows=0).columns]
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a clear IngestError
        raise IngestError(f"{path}: cannot read the CSV header ({exc})") from exc


def _check_version(path: Path, header: list[str], version: str, table: str) -> None:
    """A table from the other MIMIC version is a clear error, not a silent mis-read."""
    if table in ("labevents", "microbiologyevents", "admissions"):
        return
    if table == "patients":
        iii, iv = "dob" in header, "anchor_age" in header
    elif table == "prescriptions":
        iii, iv = "startdate" in header, "starttime" in header
    else:
        iii, iv = "icustay_id" in header, "stay_id" in header
    if version == "iii" and iv and not iii:
        raise IngestError(f"{path}: this {table} table has MIMIC-IV columns (e.g. 'stay_id'/'anchor_age'/"
                          f"'starttime') but MIMIC-III was requested; read it with version='iv'")
    if version == "iv" and iii and not iv:
        raise IngestError(f"{path}: this {table} table has MIMIC-III columns (e.g. 'icustay_id'/'dob'/"
                          f"'startdate') but MIMIC-IV was requested; read it with version='iii'")


class _Tables:
    """Finds and reads the tables of one MIMIC copy (lower-cased headers, strings, row numbers)."""

    def __init__(self, root: Path, version: str, report: IngestReport):
        self.root, self.version, self.report = root, version, report
        self.files = _index_files(root)

    def path(self, table: str) -> Path | None:
        return self.files.get(_LAYOUT[self.version][table])

    def read(self, table: str, want: list[str], need: list[str], itemids: set[int] | None = None,
             id_col: str = "itemid", time_col: str | None = None, numeric: tuple[str, ...] = (),
             text_items: set[int] | None = None) -> pd.DataFrame | None:
        """Read ``want`` columns (``need`` must exist) keeping rows whose ``id_col`` is in ``itemids``.

        Large tables are compacted chunk by chunk so that a full MIMIC copy fits in memory:
        ``time_col`` is parsed into ``time`` (problems counted), ``numeric`` columns become floats
        and ``value`` keeps its text only where ``valuenum`` is empty or the item is in ``text_items``.
        """
        path = self.path(table)
        if path is None:
            expected = _LAYOUT[self.version][table]
            if table in _REQUIRED:
                raise IngestError(f"{self.root}: required table '{expected}' (.csv or .csv.gz) is missing")
            self.report.add(expected, None, None, "missing table", "skipped",
                            "its signals are absent from events")
            return None
        header = _header(path)
        _check_version(path, header, self.version, table)
        missing = [c for c in need if c not in header]
        if missing:
            raise IngestError(f"{path}: missing column(s) {missing} (header: {header})")
        cols = [c for c in want if c in header]
        reader = pd.read_csv(path, usecols=lambda c: c.lower() in cols, dtype=str, chunksize=CHUNK_ROWS,
                             on_bad_lines="skip", keep_default_na=True)
        parts, n = [], 0
        for chunk in reader:
            chunk.columns = [c.lower() for c in chunk.columns]
            chunk["_row"] = np.arange(n + 1, n + len(chunk) + 1)
            n += len(chunk)
            if itemids is not None:
                ids = pd.to_numeric(chunk[id_col], errors="coerce")
                bad = ids.isna()
                if bad.any():
                    self._bad(path.name, chunk.loc[bad], id_col, "unparseable item id", "rejected_row")
                keep = ids.isin(itemids)
                skipped = int((~keep & ~bad).sum())
                if skipped:
                    ex = chunk.loc[~keep & ~bad].iloc[0]
                    self.report.add(path.name, int(ex["_row"]), id_col, "item id not mapped", "skipped",
                                    f"e.g. itemid {ex[id_col]}", n=skipped)
                chunk = chunk.loc[keep].assign(**{id_col: ids[keep].astype("int64")})
            chunk.attrs["file"] = path.name
            if time_col is not None:
                chunk["time"] = self.times(chunk, time_col)
                chunk = chunk.drop(columns=[time_col])
            for c in numeric:
                if c in chunk:
                    chunk[c] = pd.to_numeric(chunk[c], errors="coerce")
            if "value" in chunk and "valuenum" in chunk and pd.api.types.is_float_dtype(chunk["valuenum"]):
                plain = chunk["valuenum"].notna()
                if text_items is not None:
                    plain &= ~chunk[id_col].isin(text_items)
                chunk["value"] = chunk["value"].where(~plain)
            parts.append(chunk)
        self.report.files_read += 1
        self.report.rows_read += n
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols + ["_row"])
        df.attrs["file"] = path.name
        return df

    def _bad(self, file: str, rows: pd.DataFrame, field: str, problem: str, action: str) -> None:
        for _, r in rows.head(5).iterrows():
            self.report.add(file, int(r["_row"]), field, problem, action, f"value {r[field]!r}", n=0)
        self.report.counts[(problem, action)] += len(rows)

    def times(self, df: pd.DataFrame, col: str, *, required: bool = True) -> pd.Series:
        """Parse a timestamp column; count unparseable non-empty cells."""
        raw = df[col]
        t = pd.to_datetime(raw, errors="coerce", format="ISO8601")
        bad = raw.notna() & t.isna()
        if bad.any():
            self._bad(df.attrs.get("file", col), df.loc[bad], col, "unparseable timestamp",
                      "rejected_row" if required else "rejected_value")
        if required and raw.isna().any():
            self._bad(df.attrs.get("file", col), df.loc[raw.isna()], col, "missing timestamp", "rejected_row")
        return t.astype("datetime64[ns]")

    def ints(self, df: pd.DataFrame, col: str) -> pd.Series:
        raw = df[col]
        v = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & v.isna()
        if bad.any():
            self._bad(df.attrs.get("file", col), df.loc[bad], col, "unparseable id", "rejected_row")
        return v


# ---------------------------------------------------------------- stays

def _read_stays(tb: _Tables, report: IngestReport) -> pd.DataFrame:
    v = tb.version
    sid_col = "icustay_id" if v == "iii" else "stay_id"
    icu = tb.read("icustays", ["subject_id", "hadm_id", sid_col, "first_careunit", "intime", "outtime"],
                  ["subject_id", "hadm_id", sid_col, "intime", "outtime"])
    adm = tb.read("admissions", ["hadm_id", "admittime", "hospital_expire_flag"], ["hadm_id", "admittime"])
    pat_cols = ["subject_id", "gender", "dob"] if v == "iii" else ["subject_id", "gender", "anchor_age", "anchor_year"]
    pat = tb.read("patients", pat_cols, pat_cols[:1])
    st = pd.DataFrame({
        "subject_id": tb.ints(icu, "subject_id"), "hadm_id": tb.ints(icu, "hadm_id"),
        "stay_id": tb.ints(icu, sid_col), "department": icu.get("first_careunit"),
        "admit_time": tb.times(icu, "intime"), "discharge_time": tb.times(icu, "outtime"),
    })
    bad = st[["subject_id", "stay_id", "admit_time", "discharge_time"]].isna().any(axis=1)
    if bad.any():
        ex = icu.loc[bad].iloc[0]
        report.add(icu.attrs["file"], int(ex["_row"]), None, "ICU stay without id, intime or outtime",
                   "rejected_row", n=int(bad.sum()))
    st = st.loc[~bad]
    dup = st.duplicated("stay_id")
    if dup.any():
        report.add(icu.attrs["file"], int(icu.loc[dup[dup].index[0], "_row"]), sid_col, "duplicate stay id",
                   "rejected_row", n=int(dup.sum()))
        st = st.loc[~dup]
    st = st.astype({"subject_id": "int64", "stay_id": "int64"})
    adm = adm.assign(hadm_id=pd.to_numeric(adm["hadm_id"], errors="coerce"),
                     admittime=tb.times(adm, "admittime", required=False))
    adm = adm.dropna(subset=["hadm_id"]).drop_duplicates("hadm_id").set_index("hadm_id")
    st["hospital_admit_time"] = st["hadm_id"].map(adm["admittime"]).astype("datetime64[ns]")
    if "hospital_expire_flag" in adm:
        flag = pd.to_numeric(st["hadm_id"].map(adm["hospital_expire_flag"]), errors="coerce")
        st["death"] = flag.map({1.0: True, 0.0: False}).astype("object")
    else:
        st["death"] = None
    pat = pat.assign(subject_id=pd.to_numeric(pat["subject_id"], errors="coerce")).dropna(subset=["subject_id"])
    pat = pat.drop_duplicates("subject_id").set_index("subject_id")
    st["sex"] = st["subject_id"].map(pat["gender"]).where(lambda s: s.isin(["F", "M"]))
    if v == "iii":
        dob = st["subject_id"].map(tb.times(pat.reset_index(), "dob", required=False).set_axis(pat.index))
        age = (st["admit_time"].dt.year - dob.dt.year) + (st["admit_time"].dt.dayofyear - dob.dt.dayofyear) / 365.25
    else:
        anchor_age = pd.to_numeric(st["subject_id"].map(pat["anchor_age"]), errors="coerce")
        anchor_year = pd.to_numeric(st["subject_id"].map(pat["anchor_year"]), errors="coerce")
        age = anchor_age + (st["admit_time"].dt.year - anchor_year)
        age = age.where(anchor_age < 91, 999.0)  # MIMIC-IV marks > 89 as anchor_age 91
    old = age > 89
    if old.any():
        report.add(tb.files[_LAYOUT[v]["patients"]].name, None, "dob" if v == "iii" else "anchor_age",
                   "age over 89 (shifted by de-identification)", "repaired", f"set to {AGE_OVER_89}",
                   n=int(old.sum()))
    st["age"] = age.where(~old, AGE_OVER_89).astype("float64")
    st["source"] = SOURCE[v]
    return st.reset_index(drop=True)


def _assign_stays(df: pd.DataFrame, stays: pd.DataFrame, report: IngestReport, file: str,
                  stay_col: str | None) -> pd.DataFrame:
    """Give each row (subject_id, time[, stay col]) a stay_id; count rows left out."""
    # rows without a time were counted when their timestamp was parsed
    no_subject = df["subject_id"].isna() & df["time"].notna()
    if no_subject.any():
        report.add(file, int(df.loc[no_subject, "_row"].iloc[0]), "subject_id", "missing or unparseable subject id",
                   "rejected_row", n=int(no_subject.sum()))
    df = df.loc[df["time"].notna() & df["subject_id"].notna()].copy()
    df["subject_id"] = df["subject_id"].astype("int64")
    known = set(stays["stay_id"].tolist())
    sid = pd.to_numeric(df[stay_col], errors="coerce") if stay_col and stay_col in df else pd.Series(np.nan, index=df.index)
    unknown = sid.notna() & ~sid.isin(known)
    if unknown.any():
        ex = df.loc[unknown].iloc[0]
        report.add(file, int(ex["_row"]), stay_col, "stay id not in ICU stays", "rejected_row",
                   f"e.g. {ex[stay_col]}", n=int(unknown.sum()))
    df["stay_id"] = sid.where(~unknown)
    todo = df["stay_id"].isna() & ~unknown
    if todo.any():
        win = stays[["subject_id", "stay_id", "admit_time", "discharge_time"]].copy()
        win["start"] = win["admit_time"] - pd.Timedelta(hours=LOOKBACK_H)
        win = win.sort_values("start")
        q = df.loc[todo, ["subject_id", "time"]].reset_index().sort_values("time")
        m = pd.merge_asof(q, win[["subject_id", "start", "stay_id", "discharge_time"]], left_on="time",
                          right_on="start", by="subject_id", direction="backward")
        m.loc[m["time"] > m["discharge_time"], "stay_id"] = np.nan
        df.loc[m["index"].to_numpy(), "stay_id"] = m["stay_id"].to_numpy()
        outside = todo & df["stay_id"].isna()
        if outside.any():
            report.add(file, int(df.loc[outside, "_row"].iloc[0]), "time", "row outside every ICU stay window",
                       "skipped", n=int(outside.sum()))
    df = df.loc[df["stay_id"].notna()]
    return df.assign(stay_id=df["stay_id"].astype("int64"))


def _events(df: pd.DataFrame, code, numeric=None, text=None, unit=None, concept=None) -> pd.DataFrame:
    n = len(df)

    def col(x, dtype):
        if isinstance(x, (pd.Series, np.ndarray)):
            return np.asarray(x)
        return np.full(n, x, dtype=dtype)

    return pd.DataFrame({
        "subject_id": df["subject_id"].to_numpy(dtype="int64"), "stay_id": df["stay_id"].to_numpy(dtype="int64"),
        "time": df["time"].to_numpy(dtype="datetime64[ns]"), "code": col(code, object),
        "numeric_value": col(numeric, "float64").astype("float64") if numeric is not None else np.full(n, np.nan),
        "text_value": col(text, object), "unit": col(unit, object), "concept": col(concept, object),
    })


# ---------------------------------------------------------------- measurements

def _concept_events(df: pd.DataFrame, table: str, ns: str, report: IngestReport, file: str) -> pd.DataFrame:
    """Concept-mapped rows -> events in canonical units (text-only values kept as text)."""
    items = load_item_map()["items"]
    items = items.loc[items["table"] == table].set_index("itemid")
    df = df.loc[df["itemid"].isin(items.index)]
    if df.empty:
        return pd.DataFrame(columns=_EVENT_COLS)
    concept = df["itemid"].map(items["concept"])
    unit = df["itemid"].map(items["unit"])
    num = pd.to_numeric(df["valuenum"], errors="coerce") if "valuenum" in df else pd.Series(np.nan, index=df.index)
    text = df["value"] if "value" in df else pd.Series(None, index=df.index, dtype=object)
    # MIMIC sometimes leaves valuenum empty although value is a number
    num = num.fillna(pd.to_numeric(text, errors="coerce"))
    text_only = num.isna() & text.notna()
    if text_only.any():
        ex = df.loc[text_only].iloc[0]
        report.add(file, int(ex["_row"]), "valuenum", "charted value with text only", "repaired",
                   f"kept as text_value {str(ex['value'])!r} (itemid {ex['itemid']})", n=int(text_only.sum()))
    out_val = np.full(len(df), np.nan)
    keep = np.ones(len(df), dtype=bool)
    rows = df["_row"].to_numpy()
    for (c, u), idx in df.groupby([concept.to_numpy(), unit.to_numpy()]).indices.items():
        v = num.to_numpy(dtype="float64")[idx]
        if u == "fraction_or_percent":
            v = np.where(v > 1.0, v / 100.0, v)
        else:
            v = convert(c, v, u)
        present = ~np.isnan(v)
        vv, ok = check_values(c, v, report, file, rows[idx], field=f"valuenum (itemid→{c})")
        out_val[idx] = vv
        keep[idx] = ok | ~present
    canon = concept.map({k: c.unit for k, c in load_concepts().items()})
    ev = _events(df, code=(ns + "/" + df["itemid"].astype(str)).to_numpy(), numeric=out_val,
                 text=text.where(text_only).to_numpy(), unit=canon.to_numpy(), concept=concept.to_numpy())
    return ev.loc[keep]


def _chart_signals(ce: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    sig = load_item_map()["signals"]
    out = []
    num = pd.to_numeric(ce["valuenum"], errors="coerce") if "valuenum" in ce else pd.Series(np.nan, index=ce.index)
    value = ce["value"] if "value" in ce else pd.Series(None, index=ce.index, dtype=object)
    # GCS components (raw) and the MetaVision total
    comp_ids = {k: set(sig[f"gcs_{k}"]["chartevents"]) for k in ("eye", "verbal", "motor")}
    all_comp = set().union(*comp_ids.values())
    m = ce["itemid"].isin(all_comp)
    if m.any():
        g = ce.loc[m]
        out.append(_events(g, code=(ns + "/" + g["itemid"].astype(str)).to_numpy(), numeric=num[m].to_numpy(),
                           text=value[m].to_numpy(), unit="{score}"))
        mv = g.loc[g["itemid"].isin([220739, 223900, 223901])].copy()
        if len(mv):
            mv["num"] = num[mv.index]
            mv["ett"] = (mv["itemid"] == 223900) & value[mv.index].fillna("").str.contains(_ETT)
            mv["part"] = mv["itemid"].map({220739: "eye", 223900: "verbal", 223901: "motor"})
            piv = mv.pivot_table(index=["subject_id", "stay_id", "time"], columns="part", values="num", aggfunc="min")
            ett = mv.groupby(["subject_id", "stay_id", "time"])["ett"].any()
            piv = piv.reindex(columns=["eye", "verbal", "motor"])
            total = piv.sum(axis=1, min_count=3)
            total = total.where(~ett.reindex(piv.index).fillna(False), 15.0).dropna()
            total = total.loc[(total >= 3) & (total <= 15)]
            t = total.reset_index()
            out.append(_events(t, code=ns + "/gcs_total", numeric=t[0].to_numpy(), unit="{score}", concept="gcs"))
    # weights
    w = ce["itemid"].isin(sig["weight"]["chartevents"]) & num.gt(0)
    if w.any():
        g = ce.loc[w]
        out.append(_events(g, code=(ns + "/" + g["itemid"].astype(str)).to_numpy(), numeric=num[w].to_numpy(), unit="kg"))
    # ventilation
    v = ce["itemid"].isin(sig["vent"]["chartevents"])
    text = value.fillna("").str.lower()
    device = ce["itemid"].isin([467, 226732])
    v &= ~device | text.str.contains("ventilator")
    v &= ~ce["itemid"].isin([720, 223848]) | ~text.str.startswith("other")
    v &= value.notna() | num.notna()
    if v.any():
        g = ce.loc[v].drop_duplicates(["stay_id", "time"])
        out.append(_events(g, code=ns + "/vent", numeric=1.0, text=g["itemid"].astype(str).to_numpy(), unit="1"))
    return out


def _expand_hourly(df: pd.DataFrame, value: np.ndarray, end: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with an interval [time, end) -> one row at the start and every hour until the end."""
    dur_h = ((end - df["time"]) / pd.Timedelta("1h")).fillna(0).clip(lower=0, upper=24 * 60)
    n = (np.ceil(dur_h.to_numpy()).astype("int64")).clip(min=1)
    rep = df.loc[df.index.repeat(n)].copy()
    offs = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    rep["time"] = rep["time"].to_numpy() + offs * np.timedelta64(1, "h")
    return rep, np.repeat(value, n)


def _vasopressors(tb: _Tables, stays: pd.DataFrame, weights: pd.Series, ns: str, report: IngestReport) -> list:
    sig = load_item_map()["signals"]
    agent_of = {i: a for a in ("norepinephrine", "epinephrine", "dopamine", "dobutamine", "vasopressin",
                               "phenylephrine") for i in sig[a]["inputevents"]}
    sid_col = "icustay_id" if tb.version == "iii" else "stay_id"
    out = []
    for table, interval in (("inputevents_mv", True), ("inputevents_cv", False)):
        if table not in _LAYOUT[tb.version]:
            continue
        tcol = "starttime" if interval else "charttime"
        want = ["subject_id", sid_col, tcol, "endtime", "itemid", "rate", "rateuom", "patientweight",
                "statusdescription", "stopped"]
        df = tb.read(table, want, ["subject_id", tcol, "itemid"], itemids=set(agent_of), time_col=tcol,
                     numeric=("subject_id",))
        if df is None or df.empty:
            continue
        file = df.attrs["file"]
        if "statusdescription" in df:
            rw = df["statusdescription"].fillna("").str.lower().eq("rewritten")
            if rw.any():
                report.add(file, int(df.loc[rw, "_row"].iloc[0]), "statusdescription", "rewritten infusion row",
                           "skipped", "superseded by a corrected row (mimic-code excludes them)", n=int(rw.sum()))
            df = df.loc[~rw]
        df = _assign_stays(df, stays, report, file, sid_col)
        rate = pd.to_numeric(df.get("rate"), errors="coerce") if "rate" in df else pd.Series(np.nan, index=df.index)
        uom = df.get("rateuom", pd.Series("", index=df.index)).fillna("").str.lower().str.strip()
        stopped = df.get("stopped", pd.Series("", index=df.index)).fillna("").str.lower()
        zero = rate.isna() & stopped.isin(["d/c'd", "stopped"]) if not interval else pd.Series(False, index=df.index)
        has = rate.notna()
        rule = uom.map(lambda u: _RATE_UNITS.get(u))
        unknown = has & rule.isna()
        if unknown.any():
            ex = df.loc[unknown].iloc[0]
            report.add(file, int(ex["_row"]), "rateuom", "unknown vasopressor rate unit", "rejected_row",
                       f"{ex.get('rateuom')!r}", n=int(unknown.sum()))
        ok = has & ~unknown
        factor = rule[ok].map(lambda r: r[0]).astype(float)
        per_kg = rule[ok].map(lambda r: r[1]).astype(bool)
        w = pd.to_numeric(df.loc[ok].get("patientweight"), errors="coerce") if "patientweight" in df else \
            pd.Series(np.nan, index=df.index[ok])
        w = w.where(w > 0).fillna(df.loc[ok, "stay_id"].map(weights))
        need_w = per_kg & w.isna()
        if need_w.any():
            report.add(file, int(df.loc[need_w[need_w].index[0], "_row"]), "rate", "no weight for a mcg/min rate",
                       "repaired", f"assumed {DEFAULT_WEIGHT_KG} kg", n=int(need_w.sum()))
        w = w.fillna(DEFAULT_WEIGHT_KG)
        val = rate[ok] * factor / np.where(per_kg, w, 1.0)
        unit = rule[ok].map(lambda r: r[2])
        g = df.loc[ok]
        code = ns + "/" + g["itemid"].map(agent_of)
        if interval:
            end = tb.times(g, "endtime", required=False) if "endtime" in g else pd.Series(pd.NaT, index=g.index)
            rep, vals = _expand_hourly(g.assign(_code=code, _unit=unit), val.to_numpy(), end)
            ev = _events(rep, code=rep["_code"].to_numpy(), numeric=vals, text=rep["itemid"].astype(str).to_numpy(),
                         unit=rep["_unit"].to_numpy())
            ends = g.assign(time=end).dropna(subset=["time"])
            z = _events(ends, code=code[ends.index].to_numpy(), numeric=0.0, unit=unit[ends.index].to_numpy())
            z = z.loc[~pd.MultiIndex.from_frame(z[["stay_id", "code", "time"]]).isin(
                pd.MultiIndex.from_frame(ev[["stay_id", "code", "time"]]))]
            out += [ev, z]
        else:
            out.append(_events(g, code=code.to_numpy(), numeric=val.to_numpy(), text=g["itemid"].astype(str).to_numpy(),
                               unit=unit.to_numpy()))
            if zero.any():
                gz = df.loc[zero]
                out.append(_events(gz, code=(ns + "/" + gz["itemid"].map(agent_of)).to_numpy(), numeric=0.0))
    return out


# ---------------------------------------------------------------- main

def read_mimic(path, version: str = "auto", definition: str = "sepsis3", *, progress: bool = False) -> MimicCohort:
    """Read a MIMIC-III or MIMIC-IV copy into ``events`` and ``stays`` with Sepsis-3 labels.

    Parameters
    ----------
    path : the MIMIC-III folder of tables, or the MIMIC-IV folder holding ``hosp/`` and ``icu/``
    version : ``"auto"`` (MIMIC-IV when ``hosp/``/``icu/`` exist), ``"iii"`` or ``"iv"``
    definition : onset definition for the labels, see :func:`ehr.labels.definition_params`
    progress : show a progress bar over the tables (off in the library)

    Returns
    -------
    MimicCohort
        ``(events, stays, report)``; the report counts every skipped, repaired or rejected row
        (``report.timings`` holds seconds per step, ``report.definition`` the label parameters).

    Examples
    --------
    >>> events, stays, report = read_mimic("tests/ehr/fixtures/mimic4")  # doctest: +SKIP
    """
    root = Path(path)
    if not root.is_dir():
        raise IngestError(f"{root}: not a folder of MIMIC tables")
    if version not in ("auto", "iii", "iv"):
        raise ValueError(f"version must be 'auto', 'iii' or 'iv', got {version!r}")
    params = definition_params(definition)
    files = _index_files(root)
    detected = _detect_version(files, root)
    if version != "auto" and version != detected:
        raise IngestError(f"{root}: this folder has the MIMIC-{detected.upper()} layout "
                          f"({'hosp/, icu/' if detected == 'iv' else 'ICUSTAYS.csv[.gz] at the top'}) but "
                          f"version={version!r} was requested; use version={detected!r} or 'auto'")
    v = detected
    ns = NAMESPACE[v]
    report = IngestReport(source=f"{SOURCE[v]}:{root}")
    report.timings = {}
    report.definition = params
    tb = _Tables(root, v, report)
    t0 = _time.perf_counter()
    steps = ["stays", "chartevents", "labevents", "microbiology", "prescriptions", "inputevents",
             "outputevents", "procedureevents", "labels"]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(steps), desc="MIMIC", unit="table")

    def tick(name, t):
        report.timings[name] = round(_time.perf_counter() - t, 3)
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)
        return _time.perf_counter()

    t = t0
    stays = _read_stays(tb, report)
    t = tick("stays", t)
    sid_col = "icustay_id" if v == "iii" else "stay_id"
    items = load_item_map()["items"]
    sig = load_item_map()["signals"]
    parts: list[pd.DataFrame] = []

    # chartevents: concept items + GCS components + weights + ventilator settings
    chart_ids = set(items.loc[items["table"] == "chartevents", "itemid"]) | {
        i for k in ("gcs_eye", "gcs_verbal", "gcs_motor", "weight", "vent") for i in sig[k]["chartevents"]}
    text_ids = {i for k in ("gcs_eye", "gcs_verbal", "gcs_motor", "vent") for i in sig[k]["chartevents"]}
    ce = tb.read("chartevents", ["subject_id", sid_col, "itemid", "charttime", "value", "valuenum", "error"],
                 ["subject_id", "itemid", "charttime"], itemids=chart_ids, time_col="charttime",
                 numeric=("subject_id", sid_col, "valuenum", "error"), text_items=text_ids)
    weights = pd.Series(dtype="float64")
    if ce is not None and len(ce):
        file = ce.attrs["file"]
        if "error" in ce:
            err = pd.to_numeric(ce["error"], errors="coerce").eq(1)
            if err.any():
                report.add(file, int(ce.loc[err, "_row"].iloc[0]), "error", "row marked as error", "rejected_row",
                           n=int(err.sum()))
                ce = ce.loc[~err]
        ce = _assign_stays(ce, stays, report, file, sid_col)
        parts.append(_concept_events(ce, "chartevents", ns, report, file))
        sigs = _chart_signals(ce, ns)
        parts += sigs
        wt = [s for s in sigs if len(s) and s["unit"].iloc[0] == "kg"]
        if wt:
            weights = wt[0].sort_values("time").groupby("stay_id")["numeric_value"].first()
        report.values_read += len(ce)
    t = tick("chartevents", t)

    lab_ids = set(items.loc[items["table"] == "labevents", "itemid"])
    le = tb.read("labevents", ["subject_id", "itemid", "charttime", "value", "valuenum"],
                 ["subject_id", "itemid", "charttime"], itemids=lab_ids, time_col="charttime",
                 numeric=("subject_id", "valuenum"))
    if le is not None and len(le):
        file = le.attrs["file"]
        le = _assign_stays(le, stays, report, file, None)
        parts.append(_concept_events(le, "labevents", ns, report, file))
        report.values_read += len(le)
    t = tick("labevents", t)

    mb = tb.read("microbiologyevents", ["subject_id", "hadm_id", "chartdate", "charttime", "spec_type_desc", "org_name",
                                        "org_itemid"],
                 ["subject_id", "spec_type_desc"])
    if mb is not None and len(mb):
        file = mb.attrs["file"]
        ct = tb.times(mb, "charttime", required=False) if "charttime" in mb else pd.Series(pd.NaT, index=mb.index)
        cd = tb.times(mb, "chartdate", required=False) if "chartdate" in mb else pd.Series(pd.NaT, index=mb.index)
        mb = mb.assign(subject_id=pd.to_numeric(mb["subject_id"], errors="coerce"), time=ct.fillna(cd))
        if mb["time"].isna().any():
            ex = mb.loc[mb["time"].isna()]
            report.add(file, int(ex["_row"].iloc[0]), "charttime", "missing timestamp", "rejected_row",
                       "neither charttime nor chartdate", n=len(ex))
        org = mb.get("org_name", pd.Series(None, index=mb.index)).fillna("").str.strip()
        # org_itemid 90856 is "NEGATIVE" in MIMIC-IV (mimic-code treats it as no growth)
        neg_id = pd.to_numeric(mb.get("org_itemid", pd.Series(np.nan, index=mb.index)), errors="coerce").eq(90856)
        mb["positive"] = ((org != "") & ~org.str.upper().isin(["CANCELLED", "NEGATIVE"]) & ~neg_id).astype(float)
        mb = _assign_stays(mb, stays, report, file, None)
        mb = (mb.groupby(["subject_id", "stay_id", "time", "spec_type_desc"], dropna=False)
              .agg(positive=("positive", "max"), _row=("_row", "first")).reset_index())
        parts.append(_events(mb, code=ns + "/culture", numeric=mb["positive"].to_numpy(),
                             text=mb["spec_type_desc"].to_numpy(), unit="1"))
    t = tick("microbiology", t)

    start_col, end_col = ("startdate", "enddate") if v == "iii" else ("starttime", "stoptime")
    pr = tb.read("prescriptions", ["subject_id", "hadm_id", start_col, end_col, "drug", "route"],
                 ["subject_id", start_col, "drug"])
    if pr is not None and len(pr):
        file = pr.attrs["file"]
        drug = pr["drug"].fillna("").str.lower()
        route = pr.get("route", pd.Series("", index=pr.index)).fillna("").str.lower().str.strip()
        abx = drug.str.contains(ANTIBIOTIC_PATTERN) & ~drug.str.contains(_ABX_EXCLUDE_DRUG) & ~route.isin(_ABX_EXCLUDE_ROUTE)
        pr = pr.loc[abx]
        pr = pr.assign(subject_id=pd.to_numeric(pr["subject_id"], errors="coerce"), time=tb.times(pr, start_col))
        end = tb.times(pr, end_col, required=False) if end_col in pr else pd.Series(pd.NaT, index=pr.index)
        pr["dur"] = ((end - pr["time"]) / pd.Timedelta("1h")).where(lambda d: d >= 0)
        pr = _assign_stays(pr, stays, report, file, None)
        parts.append(_events(pr, code=ns + "/abx", numeric=pr["dur"].to_numpy(), text=pr["drug"].to_numpy(), unit="h"))
    t = tick("prescriptions", t)

    parts += _vasopressors(tb, stays, weights, ns, report)
    t = tick("inputevents", t)

    uo_ids = set(sig["urine_output"]["outputevents"])
    oe = tb.read("outputevents", ["subject_id", sid_col, "charttime", "itemid", "value", "iserror"],
                 ["subject_id", "charttime", "itemid", "value"], itemids=uo_ids, time_col="charttime",
                 numeric=("subject_id", sid_col, "iserror"))
    if oe is not None and len(oe):
        file = oe.attrs["file"]
        if "iserror" in oe:
            err = pd.to_numeric(oe["iserror"], errors="coerce").eq(1)
            if err.any():
                report.add(file, int(oe.loc[err, "_row"].iloc[0]), "iserror", "row marked as error", "rejected_row",
                           n=int(err.sum()))
            oe = oe.loc[~err]
        oe = _assign_stays(oe, stays, report, file, sid_col)
        vol = pd.to_numeric(oe["value"], errors="coerce")
        vol = vol.where(~oe["itemid"].isin(sig["urine_output"].get("negative", [])), -vol)
        oe = oe.loc[vol.notna()]
        parts.append(_events(oe, code=ns + "/urine_output", numeric=vol[oe.index].to_numpy(),
                             text=oe["itemid"].astype(str).to_numpy(), unit="mL"))
    t = tick("outputevents", t)

    pe = tb.read("procedureevents", ["subject_id", sid_col, "starttime", "endtime", "itemid", "statusdescription"],
                 ["subject_id", "starttime", "itemid"], itemids=set(sig["vent"]["procedureevents"]))
    if pe is not None and len(pe):
        file = pe.attrs["file"]
        pe = pe.loc[~pe.get("statusdescription", pd.Series("", index=pe.index)).fillna("").str.lower().eq("rewritten")]
        pe = pe.assign(subject_id=pd.to_numeric(pe["subject_id"], errors="coerce"), time=tb.times(pe, "starttime"))
        pe = _assign_stays(pe, stays, report, file, sid_col)
        end = tb.times(pe, "endtime", required=False) if "endtime" in pe else pd.Series(pd.NaT, index=pe.index)
        rep, vals = _expand_hourly(pe, np.ones(len(pe)), end)
        ev = _events(rep, code=ns + "/vent", numeric=vals, text=rep["itemid"].astype(str).to_numpy(), unit="1")
        ends = pe.assign(time=end).dropna(subset=["time"])
        z = _events(ends, code=ns + "/vent", numeric=0.0, unit="1")
        parts += [ev, z]
    t = tick("procedureevents", t)

    parts = [p for p in parts if len(p)]
    events = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=_EVENT_COLS)
    events = events[_EVENT_COLS].astype({"subject_id": "int64", "stay_id": "int64", "numeric_value": "float64",
                                         "time": "datetime64[ns]"})
    events = events.sort_values(["stay_id", "time", "code"], kind="stable").reset_index(drop=True)

    lab = label_stays(events, stays, definition).set_index("stay_id")
    stays = _finish_stays(stays, events, lab, ns)
    tick("labels", t)
    if bar is not None:
        bar.close()
    report.timings["total"] = round(_time.perf_counter() - t0, 3)
    validate(events, "events", source=str(root))
    validate(stays, "stays", source=str(root))
    return MimicCohort(events, stays, report)


def _finish_stays(stays: pd.DataFrame, events: pd.DataFrame, lab: pd.DataFrame, ns: str) -> pd.DataFrame:
    st = stays.copy()
    st["sepsis"] = st["stay_id"].map(lab["sepsis"]).fillna(False).astype(bool)
    st["onset_time"] = st["stay_id"].map(lab["onset_time"]).astype("datetime64[ns]")
    st["suspicion_time"] = st["stay_id"].map(lab["suspicion_time"]).astype("datetime64[ns]")
    code = events["code"]
    st["antibiotic_time"] = st["stay_id"].map(events.loc[code == ns + "/abx"].groupby("stay_id")["time"].min())
    st["antibiotic_time"] = st["antibiotic_time"].astype("datetime64[ns]")
    cul = events.loc[code == ns + "/culture"]
    blood = cul.loc[cul["text_value"].fillna("").str.upper().str.contains("BLOOD CULTURE")]
    pos = blood.groupby("stay_id")["numeric_value"].max() > 0
    st["bsi"] = st["stay_id"].map(pos).where(st["stay_id"].isin(cul["stay_id"])).astype("object")
    st.loc[st["bsi"].isna() & st["stay_id"].isin(cul["stay_id"]), "bsi"] = False
    days = (st["onset_time"] - st["hospital_admit_time"]) / pd.Timedelta("1D")
    st["onset_setting"] = np.where(st["onset_time"].isna() | days.isna(), None,
                                   np.where(days < ONSET_SETTING_DAYS, "community", "hospital"))
    for c in ("sepsis_label_time", "surgery_time"):
        st[c] = pd.Series(pd.NaT, index=st.index, dtype="datetime64[ns]")
    for c in ("pneumonia", "hypercapnic"):
        st[c] = None
    cols = columns("stays") + ["suspicion_time"]
    return st[cols].sort_values("stay_id").reset_index(drop=True)
