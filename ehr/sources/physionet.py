"""PhysioNet/CinC Challenge 2019 reader: a directory of ``.psv`` files or the challenge zip.

Each file is one ICU stay, one row per ICU hour (``ICULOS``), 40 variables and ``SepsisLabel``.
The reader produces the contract tables ``events`` and ``stays`` (``ehr/schema.py``):

- Times: the challenge has no calendar times. Every stay is admitted to the ICU at
  ``EPOCH`` (2019-01-01 00:00); the row with ``ICULOS = k`` holds what was registered during ICU
  hour ``k`` and becomes available at ``EPOCH + k h`` (the end of that hour), so the screen of
  that row sees it and nothing later.
- Ids: ``p000123.psv`` -> ``stay_id = subject_id = 123``.
- Labels (the challenge's definition): ``SepsisLabel`` is 1 from 6 h before Sepsis-3 onset, so
  ``onset_time = time of the first labelled row + 6 h``; ``sepsis_label_time`` keeps the raw
  first-label time and the raw hourly label is kept as event ``PHYSIONET2019/SepsisLabel``.
- Every row also yields an ``PHYSIONET2019/ICULOS`` event, so the screen grid covers every
  challenge row (790,215 for set A) even when a row has no measurement.
- Static: ``Age``, ``Gender`` (0 = F, 1 = M), ``Unit1``/``Unit2`` (MICU/SICU) -> ``department``,
  ``HospAdmTime`` (hours, negative = before ICU) -> ``hospital_admit_time``.

Bad input (each case counted in the :class:`~ehr.sources.report.IngestReport`, with file, row and
field): an empty file, a wrong or missing header -> the file is rejected; a non-numeric cell ->
the value is rejected; a negative, repeated or decreasing ``ICULOS`` -> the row is rejected; a
value outside the plausible range -> repaired by the rules of :mod:`ehr.sources.plausibility`
(Fahrenheit temperatures, FiO2 in percent) or rejected. A corrupt zip raises
:class:`~ehr.sources.report.IngestError`. With ``errors="raise"`` the first problem raises.

Examples
--------
>>> cohort = read_physionet("../shared/data/physionet2019/training_setA.zip")  # doctest: +SKIP
>>> len(cohort.stays), int(cohort.stays.sepsis.sum())  # doctest: +SKIP
(20336, 1790)
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort
from ehr.concepts import load_concepts, source_map
from ehr.schema import validate
from ehr.sources.plausibility import check_values
from ehr.sources.report import IngestError, IngestReport

__all__ = ["read_physionet", "HEADER", "EPOCH", "SOURCE"]

log = logging.getLogger(__name__)

SOURCE = "physionet2019"
CODE_PREFIX = "PHYSIONET2019/"
EPOCH = pd.Timestamp("2019-01-01 00:00:00")
HEADER = ("HR|O2Sat|Temp|SBP|MAP|DBP|Resp|EtCO2|BaseExcess|HCO3|FiO2|pH|PaCO2|SaO2|AST|BUN|"
          "Alkalinephos|Calcium|Chloride|Creatinine|Bilirubin_direct|Glucose|Lactate|Magnesium|"
          "Phosphate|Potassium|Bilirubin_total|TroponinI|Hct|Hgb|PTT|WBC|Fibrinogen|Platelets|"
          "Age|Gender|Unit1|Unit2|HospAdmTime|ICULOS|SepsisLabel").split("|")
_HOUR_NS = 3_600_000_000_000
_ID = re.compile(r"p(\d+)\.psv$")


def _iter_files(path: Path):
    """Yield (name, bytes) for every .psv file in a directory or zip, sorted by name."""
    if path.is_dir():
        for f in sorted(path.rglob("*.psv")):
            yield f.name, f.read_bytes()
        return
    if not path.exists():
        raise IngestError(f"{path}: no such file or directory")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise IngestError(f"{path}: not a readable zip file ({exc})") from exc
    with zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".psv"))
        for n in names:
            try:
                yield Path(n).name, zf.read(n)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # corrupt member
                raise IngestError(f"{path}: member {n} is corrupt ({exc})") from exc


def _stay_id(name: str, report: IngestReport, errors: str) -> int | None:
    m = _ID.search(name)
    if not m:
        msg = "file name is not pNNNNNN.psv"
        if errors == "raise":
            raise IngestError(f"{name}: {msg}")
        report.add(name, None, None, msg, "rejected_file")
        return None
    return int(m.group(1))


def _split_files(path: Path, report: IngestReport, errors: str):
    """Check headers; return the concatenated bodies, row counts, file names and stay ids."""
    header = "|".join(HEADER).encode()
    bodies, n_rows, names, ids = [], [], [], []
    for name, raw in _iter_files(path):
        report.files_read += 1
        raw = raw.replace(b"\r\n", b"\n")
        first, _, body = raw.partition(b"\n")
        problem = None
        if not raw.strip():
            problem = "empty file"
        elif first.strip() != header:
            got = first.decode("utf-8", "replace").strip().split("|")
            if got and re.fullmatch(r"[-+0-9.eENa|]+", first.decode("utf-8", "replace").strip() or "x"):
                problem = "missing header (first line holds data)"
            else:
                missing = [h for h in HEADER if h not in got]
                extra = [g for g in got if g not in HEADER]
                problem = f"wrong header: missing {missing[:5]}, unexpected {extra[:5]}"
        elif not body.strip():
            problem = "header only, no rows"
        if problem:
            if errors == "raise":
                raise IngestError(f"{name}: {problem}")
            report.add(name, None, None, problem, "rejected_file")
            continue
        sid = _stay_id(name, report, errors)
        if sid is None:
            continue
        if not body.endswith(b"\n"):
            body += b"\n"
        lines = [ln for ln in body.split(b"\n") if ln.strip()]
        body = b"\n".join(lines) + b"\n"
        bodies.append(body)
        n_rows.append(len(lines))
        names.append(name)
        ids.append(sid)
    return bodies, np.array(n_rows, dtype=np.int64), names, np.array(ids, dtype=np.int64)


def _parse(bodies, file_of_row, row_in_file, names, report: IngestReport, errors: str) -> np.ndarray:
    """Parse all rows at once (fast path); on bad cells, locate and reject them."""
    buf = b"".join(bodies)
    # the C parser pads short rows with NaN; a separator count catches them (and long rows)
    fast = buf.count(b"|") == len(file_of_row) * (len(HEADER) - 1)
    try:
        if not fast:
            raise ValueError("field count differs")
        frame = pd.read_csv(io.BytesIO(buf), sep="|", header=None, names=HEADER, dtype="float64",
                            engine="c", na_values=["NaN", "nan", ""], keep_default_na=False)
        return frame.to_numpy(), np.zeros(len(frame), dtype=bool)
    except (ValueError, pd.errors.ParserError):
        pass
    # slow path, only for bad input: read as text, then locate every non-numeric cell
    frame = pd.read_csv(io.BytesIO(buf), sep="|", header=None, names=range(len(HEADER) + 20),
                        dtype=str, engine="python", keep_default_na=False)
    width = frame.notna().sum(axis=1).to_numpy()
    bad_width = np.flatnonzero(width != len(HEADER))
    out = np.full((len(frame), len(HEADER)), np.nan)
    keep_row = np.ones(len(frame), dtype=bool)
    for i in bad_width:
        msg = f"row has {width[i]} fields, expected {len(HEADER)}"
        if errors == "raise":
            raise IngestError(f"{names[file_of_row[i]]}, row {row_in_file[i]}: {msg}")
        report.add(names[file_of_row[i]], int(row_in_file[i]), None, "wrong number of fields", "rejected_row", msg)
        keep_row[i] = False
    for j, col in enumerate(HEADER):
        text = frame[j].fillna("").str.strip()
        num = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
        bad = np.isnan(num) & ~text.isin(["", "NaN", "nan"]).to_numpy() & keep_row
        for i in np.flatnonzero(bad):
            msg = f"non-numeric value {text.iloc[i]!r}"
            if errors == "raise":
                raise IngestError(f"{names[file_of_row[i]]}, row {row_in_file[i]}, field {col}: {msg}")
            report.add(names[file_of_row[i]], int(row_in_file[i]), col, "non-numeric value", "rejected_value", msg)
        out[:, j] = num
    out[~keep_row] = np.nan
    return out, ~keep_row


def read_physionet(path, *, errors: str = "report") -> Cohort:
    """Read PhysioNet 2019 ``.psv`` files (a directory or the challenge zip).

    Parameters
    ----------
    path : directory of ``.psv`` files (searched recursively) or a zip holding them
    errors : ``"report"`` (default) repairs or rejects bad input and counts it in the report;
        ``"raise"`` raises :class:`IngestError` at the first problem

    Returns
    -------
    Cohort
        ``events`` and ``stays`` (validated contract tables), ``report`` (the ingest report) and
        ``meta`` (``source``, ``path``); no ``cxr``.
    """
    if errors not in ("report", "raise"):
        raise ValueError(f"errors must be 'report' or 'raise', got {errors!r}")
    path = Path(path)
    report = IngestReport(source=f"{SOURCE}:{path}")
    bodies, n_rows, names, ids = _split_files(path, report, errors)
    if not bodies:
        raise IngestError(f"{path}: no readable .psv file found ({report.files_read} file(s) seen)")
    file_of_row = np.repeat(np.arange(len(n_rows)), n_rows)
    starts = np.concatenate([[0], np.cumsum(n_rows)[:-1]])
    row_in_file = np.arange(int(n_rows.sum())) - np.repeat(starts, n_rows) + 1
    x, row_rejected = _parse(bodies, file_of_row, row_in_file, names, report, errors)
    report.rows_read = len(x)

    # rows: ICULOS must be a positive integer, strictly increasing within a file
    col = {h: i for i, h in enumerate(HEADER)}
    iculos = x[:, col["ICULOS"]]
    bad_iculos = np.isnan(iculos) | (iculos < 0) | (iculos != np.round(iculos))
    same_file = np.concatenate([[False], file_of_row[1:] == file_of_row[:-1]])
    # compare with the running maximum so that one bad row does not condemn the next good one
    # (a rejected row must not reset the comparison: carry the last good ICULOS over it)
    good = pd.Series(np.where(bad_iculos, np.nan, iculos)).groupby(file_of_row).ffill()
    running = good.groupby(file_of_row).cummax().shift(1)
    running[~same_file] = np.nan
    not_increasing = ~bad_iculos & same_file & (iculos <= running.to_numpy())
    for mask, problem in ((bad_iculos, "negative, fractional or missing ICULOS"),
                          (not_increasing, "repeated or decreasing ICULOS")):
        # rows already rejected for their field count are counted once, there
        idx = np.flatnonzero(mask & ~row_rejected)
        if len(idx) and errors == "raise":
            i = idx[0]
            raise IngestError(f"{names[file_of_row[i]]}, row {row_in_file[i]}, field ICULOS: {problem} "
                              f"({iculos[i]:g})")
        for i in idx[:200]:
            report.add(names[file_of_row[i]], int(row_in_file[i]), "ICULOS", problem, "rejected_row",
                       f"ICULOS={iculos[i]:g}", n=0)
        if len(idx):
            report.counts[(problem, "rejected_row")] += len(idx)
    keep = ~(bad_iculos | not_increasing | row_rejected)
    x, file_of_row, row_in_file = x[keep], file_of_row[keep], row_in_file[keep]
    iculos = x[:, col["ICULOS"]].astype(np.int64)
    stay = ids[file_of_row]
    file_names = np.asarray(names, dtype=object)
    t_ns = EPOCH.value + iculos * _HOUR_NS

    # events: one per present concept value, plus ICULOS and the raw label for every row
    parts = []
    for field, concept in source_map("physionet").items():
        v = x[:, col[field]]
        present = np.flatnonzero(~np.isnan(v))
        if not len(present):
            continue
        vals, ok = check_values(concept, v[present], report, file_names[file_of_row[present]],
                                row_in_file[present], field)
        sel = present[ok]
        report.values_read += len(present)
        parts.append((field, concept, sel, vals[ok]))
    if errors == "raise":
        rejected = [p for p in report.examples if p.action.startswith("rejected")]
        if rejected:
            raise IngestError(rejected[0].message())
    for field in ("ICULOS", "SepsisLabel"):
        v = x[:, col[field]]
        sel = np.flatnonzero(~np.isnan(v))
        parts.append((field, None, sel, v[sel]))
    concepts = load_concepts()
    sizes = [len(p[2]) for p in parts]
    codes = [CODE_PREFIX + p[0] for p in parts]
    concept_names = [p[1] for p in parts]
    code_idx = np.repeat(np.arange(len(parts)), sizes)
    rows = np.concatenate([p[2] for p in parts])
    code_cat = pd.Categorical.from_codes(code_idx, categories=codes)
    cats = sorted({c for c in concept_names if c})
    cmap = np.array([cats.index(c) if c else -1 for c in concept_names])
    units = sorted({concepts[c].unit for c in cats})
    umap = np.array([units.index(concepts[c].unit) if c else -1 for c in concept_names])
    events = pd.DataFrame({
        "subject_id": stay[rows],
        "stay_id": stay[rows],
        "time": pd.to_datetime(t_ns[rows]),
        "code": code_cat,
        "numeric_value": np.concatenate([p[3] for p in parts]),
        "text_value": pd.Series(pd.NA, index=range(len(rows)), dtype="string"),
        "unit": pd.Categorical.from_codes(umap[code_idx], categories=units),
        "concept": pd.Categorical.from_codes(cmap[code_idx], categories=cats),
    })
    events = events.sort_values(["stay_id", "time"], kind="stable").reset_index(drop=True)

    # stays: static fields from the first row, times from the ICULOS range, labels from SepsisLabel
    first = np.concatenate([[True], stay[1:] != stay[:-1]])
    last = np.concatenate([stay[1:] != stay[:-1], [True]])
    label = x[:, col["SepsisLabel"]]
    never = np.iinfo(np.int64).max
    lab_rows = pd.Series(np.where(label == 1, t_ns, never)).groupby(stay).min()
    st = pd.DataFrame({
        "subject_id": stay[first],
        "stay_id": stay[first],
        "source": SOURCE,
        "admit_time": np.full(int(first.sum()), EPOCH.to_datetime64(), dtype="datetime64[ns]"),
        "discharge_time": pd.to_datetime(t_ns[last]),
    })
    st["hospital_admit_time"] = EPOCH + pd.to_timedelta(x[first, col["HospAdmTime"]], unit="h")
    st["age"] = x[first, col["Age"]]
    g = x[first, col["Gender"]]
    st["sex"] = pd.Series(np.where(g == 0, "F", np.where(g == 1, "M", None)), dtype=object)
    u1, u2 = x[first, col["Unit1"]], x[first, col["Unit2"]]
    st["department"] = pd.Series(np.where(u1 == 1, "MICU", np.where(u2 == 1, "SICU", None)), dtype=object)
    lab_ns = lab_rows.reindex(st["stay_id"]).to_numpy()
    label_time = pd.to_datetime(np.where(lab_ns == never, np.iinfo(np.int64).min, lab_ns))  # min -> NaT
    st["sepsis"] = ~pd.isna(label_time)
    st["onset_time"] = label_time + pd.Timedelta(hours=6)
    st["sepsis_label_time"] = label_time
    for c in ("antibiotic_time", "surgery_time"):
        st[c] = pd.NaT
    for c in ("death", "bsi", "pneumonia", "hypercapnic"):
        st[c] = pd.Series([pd.NA] * len(st), dtype="boolean")
    st["onset_setting"] = pd.Series([None] * len(st), dtype=object)
    st = st.sort_values("stay_id").reset_index(drop=True)
    dup = st["stay_id"].duplicated()
    if dup.any():
        raise IngestError(f"{path}: stay id {int(st.stay_id[dup].iloc[0])} appears in more than one file")
    log.info("read %d stays, %d rows, %d events", len(st), len(x), len(events))
    validate(events, "events", source=str(path))
    validate(st, "stays", source=str(path))
    return Cohort(events, st, meta={"source": SOURCE, "path": str(path)}, report=report)
