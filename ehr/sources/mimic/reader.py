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
  Antibiotics are the drug names matching :data:`~ehr.sources.mimic.items.ANTIBIOTIC_PATTERN` (mimic-code
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
(icustays, admissions, patients; and chartevents, labevents, prescriptions, microbiologyevents,
without which Sepsis-3 cannot be labelled, unless named in ``allow_missing``), a truncated or corrupt
table, or a table from the other MIMIC version raises :class:`~ehr.sources.report.IngestError`.
Symlinks to files outside the folder are not followed (counted). A CSV line with too few or too many
fields is left out and counted (``wrong number of fields``, with its line number). Large tables are
streamed a block at a time (:mod:`ehr.sources.mimic.tables`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ehr.cohort import Cohort
from ehr.labels import definition_params, label_stays
from ehr.schema import validate
from ehr.sources.mimic.infusions import vasopressor_events, ventilation_events
from ehr.sources.mimic.items import EVENT_COLUMNS, chart_signals, concept_events, is_antibiotic, load_item_map, make_events
from ehr.sources.mimic.stays import assign_stays, finish_stays, read_stays
from ehr.sources.mimic.tables import MimicTables, detect_version, index_files
from ehr.sources.flow import reader_flow
from ehr.sources.report import IngestError, IngestReport

__all__ = ["read_mimic", "NAMESPACE", "SOURCE"]

NAMESPACE = {"iii": "MIMIC-III", "iv": "MIMIC-IV"}
SOURCE = {"iii": "mimic3", "iv": "mimic4"}


def read_mimic(path, version: str = "auto", definition: str = "sepsis3", allow_missing=()) -> Cohort:
    """Read a MIMIC-III or MIMIC-IV copy into ``events`` and ``stays`` with Sepsis-3 labels.

    Parameters
    ----------
    path : the MIMIC-III folder of tables, or the MIMIC-IV folder holding ``hosp/`` and ``icu/``
    version : ``"auto"`` (MIMIC-IV when ``hosp/``/``icu/`` exist), ``"iii"`` or ``"iv"``
    definition : onset definition for the labels, see :func:`ehr.labels.definition_params`
    allow_missing : tables that may be missing (of :data:`~ehr.sources.mimic.tables.ALLOWABLE`);
        without this, a missing required table raises :class:`~ehr.sources.report.IngestError`.
        The report names the tables allowed to be missing (``allowed_missing``).

    Returns
    -------
    Cohort
        ``events`` and ``stays`` (validated; ``stays`` has the extra column ``suspicion_time``),
        ``report`` counting every skipped, repaired or rejected row (``report.timings`` holds
        seconds per step, ``report.definition`` the label parameters) and ``meta`` (``source``,
        ``path``, ``definition``); no ``cxr``.

    Examples
    --------
    >>> cohort = read_mimic("tests/ehr/fixtures/mimic4")
    >>> cohort.stays["stay_id"].tolist(), cohort.stays["sepsis"].tolist()
    ([1000, 2000], [True, False])
    """
    root = Path(path)
    if not root.is_dir():
        raise IngestError(f"{root}: not a folder of MIMIC tables")
    if version not in ("auto", "iii", "iv"):
        raise ValueError(f"version must be 'auto', 'iii' or 'iv', got {version!r}")
    params = definition_params(definition)
    detected = detect_version(index_files(root), root)
    if version != "auto" and version != detected:
        raise IngestError(f"{root}: this folder has the MIMIC-{detected.upper()} layout "
                          f"({'hosp/, icu/' if detected == 'iv' else 'ICUSTAYS.csv[.gz] at the top'}) but "
                          f"version={version!r} was requested; use version={detected!r} or 'auto'")
    ns = NAMESPACE[detected]
    report = IngestReport(source=f"{SOURCE[detected]}:{root}")
    report.definition = params
    tb = MimicTables(root, detected, report, allow_missing)
    t0 = last = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal last
        now = time.perf_counter()
        report.timings[step] = round(now - last, 3)
        last = now

    stays = read_stays(tb)
    lap("stays")
    parts, weights = _chartevents(tb, stays, ns)
    lap("chartevents")
    parts += _labevents(tb, stays, ns)
    lap("labevents")
    parts += _microbiology(tb, stays, ns)
    lap("microbiology")
    parts += _prescriptions(tb, stays, ns)
    lap("prescriptions")
    parts += vasopressor_events(tb, stays, weights, ns)
    lap("inputevents")
    parts += _urine_output(tb, stays, ns)
    lap("outputevents")
    parts += ventilation_events(tb, stays, ns)
    lap("procedureevents")

    parts = [p for p in parts if len(p)]
    events = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)
    events = events[EVENT_COLUMNS].astype({"subject_id": "int64", "stay_id": "int64", "numeric_value": "float64",
                                           "time": "datetime64[ns]"})
    events = events.sort_values(["stay_id", "time", "code"], kind="stable").reset_index(drop=True)
    lab = label_stays(events, stays, definition).set_index("stay_id")
    stays = finish_stays(stays, events, lab, ns)
    lap("labels")
    report.timings["total"] = round(time.perf_counter() - t0, 3)
    validate(events, "events", source=str(root))
    validate(stays, "stays", source=str(root))
    reader_flow(report, n_seen=tb.stay_flow.get("read", len(stays)), what=f"ICU stay rows ({tb.path('icustays').name})",
                stays=stays, excluded=tb.stay_flow.get("excluded"))
    meta = {"source": SOURCE[detected], "path": str(root), "definition": definition,
            "allowed_missing": list(tb.allow_missing)}
    return Cohort(events, stays, meta=meta, report=report)


def _chartevents(tb: MimicTables, stays: pd.DataFrame, ns: str) -> tuple[list[pd.DataFrame], pd.Series]:
    """Concept items, GCS components, weights and ventilator settings; the first weight per stay."""
    items, sig = load_item_map()["items"], load_item_map()["signals"]
    chart_ids = set(items.loc[items["table"] == "chartevents", "itemid"]) | {
        i for k in ("gcs_eye", "gcs_verbal", "gcs_motor", "weight", "vent") for i in sig[k]["chartevents"]}
    text_ids = {i for k in ("gcs_eye", "gcs_verbal", "gcs_motor", "vent") for i in sig[k]["chartevents"]}
    ce = tb.read("chartevents", ["subject_id", tb.stay_col, "itemid", "charttime", "value", "valuenum", "error"],
                 ["subject_id", "itemid", "charttime"], itemids=chart_ids, time_col="charttime",
                 numeric=("subject_id", tb.stay_col, "valuenum", "error"), text_items=text_ids)
    weights = pd.Series(dtype="float64")
    if ce is None or not len(ce):
        return [], weights
    file = ce.attrs["file"]
    ce = tb.drop_error_rows(ce, "error")
    ce = assign_stays(ce, stays, tb.report, file, tb.stay_col)
    parts = [concept_events(ce, "chartevents", ns, tb.report, file)]
    sigs = chart_signals(ce, ns)
    parts += sigs
    wt = [s for s in sigs if len(s) and s["unit"].iloc[0] == "kg"]
    if wt:
        weights = wt[0].sort_values("time").groupby("stay_id")["numeric_value"].first()
    tb.report.values_read += len(ce)
    return parts, weights


def _labevents(tb: MimicTables, stays: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    items = load_item_map()["items"]
    lab_ids = set(items.loc[items["table"] == "labevents", "itemid"])
    le = tb.read("labevents", ["subject_id", "itemid", "charttime", "value", "valuenum"],
                 ["subject_id", "itemid", "charttime"], itemids=lab_ids, time_col="charttime",
                 numeric=("subject_id", "valuenum"))
    if le is None or not len(le):
        return []
    file = le.attrs["file"]
    le = assign_stays(le, stays, tb.report, file, None)
    tb.report.values_read += len(le)
    return [concept_events(le, "labevents", ns, tb.report, file)]


def _microbiology(tb: MimicTables, stays: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    """``<NS>/culture``: one per (subject, time, specimen); 1 if an organism grew."""
    mb = tb.read("microbiologyevents", ["subject_id", "hadm_id", "chartdate", "charttime", "spec_type_desc",
                                        "org_name", "org_itemid"],
                 ["subject_id", "spec_type_desc"])
    if mb is None or not len(mb):
        return []
    file = mb.attrs["file"]
    when = tb.optional_times(mb, "charttime").fillna(tb.optional_times(mb, "chartdate"))
    mb = mb.assign(subject_id=pd.to_numeric(mb["subject_id"], errors="coerce"), time=when)
    if mb["time"].isna().any():
        ex = mb.loc[mb["time"].isna()]
        tb.report.add(file, int(ex["_row"].iloc[0]), "charttime", "missing timestamp", "rejected_row",
                      "neither charttime nor chartdate", n=len(ex))
    org = mb.get("org_name", pd.Series(None, index=mb.index)).fillna("").str.strip()
    # org_itemid 90856 is "NEGATIVE" in MIMIC-IV (mimic-code treats it as no growth)
    neg_id = pd.to_numeric(mb.get("org_itemid", pd.Series(float("nan"), index=mb.index)), errors="coerce").eq(90856)
    mb["positive"] = ((org != "") & ~org.str.upper().isin(["CANCELLED", "NEGATIVE"]) & ~neg_id).astype(float)
    mb = assign_stays(mb, stays, tb.report, file, None)
    mb = (mb.groupby(["subject_id", "stay_id", "time", "spec_type_desc"], dropna=False)
          .agg(positive=("positive", "max"), _row=("_row", "first")).reset_index())
    return [make_events(mb, code=ns + "/culture", numeric=mb["positive"].to_numpy(),
                        text=mb["spec_type_desc"].to_numpy(), unit="1")]


def _prescriptions(tb: MimicTables, stays: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    """``<NS>/abx``: antibiotic prescriptions (text_value = drug, numeric_value = duration in h)."""
    start_col, end_col = ("startdate", "enddate") if tb.version == "iii" else ("starttime", "stoptime")
    pr = tb.read("prescriptions", ["subject_id", "hadm_id", start_col, end_col, "drug", "route"],
                 ["subject_id", start_col, "drug"])
    if pr is None or not len(pr):
        return []
    file = pr.attrs["file"]
    pr = pr.loc[is_antibiotic(pr["drug"], pr.get("route", pd.Series("", index=pr.index)))]
    pr = pr.assign(subject_id=pd.to_numeric(pr["subject_id"], errors="coerce"), time=tb.times(pr, start_col))
    end = tb.optional_times(pr, end_col)
    pr["dur"] = ((end - pr["time"]) / pd.Timedelta("1h")).where(lambda d: d >= 0)
    pr = assign_stays(pr, stays, tb.report, file, None)
    return [make_events(pr, code=ns + "/abx", numeric=pr["dur"].to_numpy(), text=pr["drug"].to_numpy(), unit="h")]


def _urine_output(tb: MimicTables, stays: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    """``<NS>/urine_output`` in mL (GU irrigant in counted negative, as mimic-code)."""
    sig = load_item_map()["signals"]
    oe = tb.read("outputevents", ["subject_id", tb.stay_col, "charttime", "itemid", "value", "iserror"],
                 ["subject_id", "charttime", "itemid", "value"], itemids=set(sig["urine_output"]["outputevents"]),
                 time_col="charttime", numeric=("subject_id", tb.stay_col, "iserror"))
    if oe is None or not len(oe):
        return []
    file = oe.attrs["file"]
    oe = tb.drop_error_rows(oe, "iserror")
    oe = assign_stays(oe, stays, tb.report, file, tb.stay_col)
    vol = pd.to_numeric(oe["value"], errors="coerce")
    vol = vol.where(~oe["itemid"].isin(sig["urine_output"].get("negative", [])), -vol)
    oe = oe.loc[vol.notna()]
    return [make_events(oe, code=ns + "/urine_output", numeric=vol[oe.index].to_numpy(),
                        text=oe["itemid"].astype(str).to_numpy(), unit="mL")]
