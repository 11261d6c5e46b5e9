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

Bad input (each case counted per field in the :class:`~ehr.sources.report.IngestReport`, with
file, row and field): an empty file, a wrong or missing header (the message names the missing and
unexpected columns) or a name that is not ``pNNNNNN.psv`` -> the file is rejected; a non-numeric
cell -> the value is rejected; a negative, fractional, repeated or decreasing ``ICULOS``, or one over
a year (:data:`MAX_ICULOS_H`) -> the row is rejected; a ``SepsisLabel`` other than 0/1, a ``Gender``
other than 0/1, unit flags other than 0/1, an ``Age`` outside [0, 120] -> the value is rejected
(stored as missing); a value outside the plausible range -> converted by the rules of
:mod:`ehr.sources.plausibility` (°F temperatures, FiO2 in percent, unit shifts such as ionised
calcium) or rejected. Two files of one stay, no readable file or no usable row, a corrupt zip or zip
member, or members that expand beyond the bounds of :mod:`ehr.sources.files` raise
:class:`~ehr.sources.report.IngestError`; symlinks out of the folder are not followed. With
``errors="raise"`` the first problem raises. The report's ``flow`` accounts for every file.

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
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort
from ehr.concepts import load_concepts, source_map
from ehr.schema import validate
from ehr.sources.flow import reader_flow
from ehr.sources.files import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES, iter_files
from ehr.sources.plausibility import check_values
from ehr.sources.report import MAX_EXAMPLES, IngestError, IngestReport

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
#: a row later than a year into the stay is taken as an error (set A's longest stay has 336 rows)
MAX_ICULOS_H = 8760.0
#: (field, test of a valid value, problem): a failing value is rejected (stored as missing), counted
_CODED = (
    ("SepsisLabel", lambda v: (v == 0) | (v == 1), "label not 0 or 1"),
    ("Gender", lambda v: (v == 0) | (v == 1), "sex code not 0 (female) or 1 (male)"),
    ("Unit1", lambda v: (v == 0) | (v == 1), "unit flag not 0 or 1"),
    ("Unit2", lambda v: (v == 0) | (v == 1), "unit flag not 0 or 1"),
    ("Age", lambda v: (v >= 0) & (v <= 120), "age outside [0, 120] years"),
    # hours from hospital to ICU admission: negative as a rule, small positive values occur in set A
    ("HospAdmTime", lambda v: np.abs(v) <= 24 * 365 * 10, "hospital admission more than 10 years from ICU "
     "admission"),
)
_ID = re.compile(r"p(\d+)\.psv$")


def _stay_id(name: str, report: IngestReport, errors: str) -> int | None:
    m = _ID.search(name)
    if not m:
        msg = "file name is not pNNNNNN.psv"
        if errors == "raise":
            raise IngestError(f"{name}: {msg}")
        report.add(name, None, None, msg, "rejected_file")
        return None
    return int(m.group(1))


def _header_problem(raw: bytes, first: bytes, body: bytes, header: bytes) -> tuple[str | None, str]:
    """(problem, detail) of a file's header, or (None, "") when it is the challenge's."""
    if not raw.strip():
        return "empty file", ""
    text = first.decode("utf-8", "replace").strip()
    if first.strip() != header:
        if re.fullmatch(r"[-+0-9.eENa|]+", text or "x"):
            return "missing header (first line holds data)", ""
        got = text.split("|")
        missing = [h for h in HEADER if h not in got]
        extra = [g[:40] for g in got if g not in HEADER]
        detail = "; ".join(part for part in (f"missing column(s) {missing[:5]}" if missing else "",
                                             f"unexpected column(s) {extra[:5]}" if extra else "") if part)
        return "wrong header", detail or "columns out of order"
    if not body.strip():
        return "header only, no rows", ""
    return None, ""


def _split_files(path: Path, report: IngestReport, errors: str, limits: dict):
    """Check headers; return the concatenated bodies, row counts, file names and stay ids."""
    header = "|".join(HEADER).encode()
    bodies, n_rows, names, ids = [], [], [], []
    seen: dict[int, str] = {}
    for name, raw in iter_files(path, ".psv", report, **limits):
        report.files_read += 1
        raw = raw.replace(b"\r\n", b"\n")
        first, _, body = raw.partition(b"\n")
        problem, detail = _header_problem(raw, first, body, header)
        if problem:
            if errors == "raise":
                raise IngestError(f"{name}: {problem}{': ' + detail if detail else ''}")
            report.add(name, None, None, problem, "rejected_file", detail)
            continue
        sid = _stay_id(name, report, errors)
        if sid is None:
            continue
        if sid in seen:  # two files of one stay: which one holds the stay cannot be told
            raise IngestError(f"{path}: stay id {sid} appears in more than one file ({seen[sid]} twice)")
        seen[sid] = name
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


def _reject_rows(report, errors, names, file_of_row, row_in_file, mask, field, problem, detail):
    """Count rows of ``mask`` as rejected (a few as examples); raise at the first with ``errors="raise"``."""
    idx = np.flatnonzero(mask)
    if not len(idx):
        return
    if errors == "raise":
        i = idx[0]
        raise IngestError(f"{names[file_of_row[i]]}, row {row_in_file[i]}, field {field}: {problem} ({detail(i)})")
    for i in idx[:MAX_EXAMPLES]:
        report.add(names[file_of_row[i]], int(row_in_file[i]), field, problem, "rejected_row", detail(i), n=0)
    report.tally(field, problem, "rejected_row", len(idx))


def _bad_rows(x, col, file_of_row, row_in_file, names, row_rejected, report, errors) -> np.ndarray:
    """Rows to reject: ICULOS missing, negative, fractional, over :data:`MAX_ICULOS_H`, or not increasing."""
    iculos = x[:, col["ICULOS"]]
    with np.errstate(invalid="ignore"):
        bad_iculos = np.isnan(iculos) | (iculos < 0) | (iculos != np.round(iculos))
        too_long = ~bad_iculos & (iculos > MAX_ICULOS_H)
    unusable = bad_iculos | too_long
    same_file = np.concatenate([[False], file_of_row[1:] == file_of_row[:-1]])
    # compare with the running maximum so that one bad row does not condemn the next good one
    # (a rejected row must not reset the comparison: carry the last good ICULOS over it)
    good = pd.Series(np.where(unusable, np.nan, iculos)).groupby(file_of_row).ffill()
    running = good.groupby(file_of_row).cummax().shift(1)
    running[~same_file] = np.nan
    not_increasing = ~unusable & same_file & (iculos <= running.to_numpy())
    for mask, problem in ((bad_iculos, "negative, fractional or missing ICULOS"),
                          (too_long, f"ICULOS over {MAX_ICULOS_H:g} h (one year)"),
                          (not_increasing, "repeated or decreasing ICULOS")):
        # rows already rejected for their field count are counted once, there
        _reject_rows(report, errors, names, file_of_row, row_in_file, mask & ~row_rejected, "ICULOS", problem,
                     lambda i: f"ICULOS={iculos[i]:g}")
    return unusable | not_increasing | row_rejected


def _check_codes(x, col, file_names, rows, report, errors) -> None:
    """Fields with a fixed set of codes or a range (labels, sex, units, age): others become NaN, counted."""
    for field, ok, problem in _CODED:
        v = x[:, col[field]]
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~np.isnan(v) & ~ok(v))
        if not len(bad):
            continue
        if errors == "raise":
            raise IngestError(f"{file_names[bad[0]]}, row {rows[bad[0]]}, field {field}: {problem} "
                              f"({v[bad[0]]:g})")
        for i in bad[:MAX_EXAMPLES]:
            report.add(str(file_names[i]), int(rows[i]), field, problem, "rejected_value", f"{field}={v[i]:g}", n=0)
        report.tally(field, problem, "rejected_value", len(bad))
        x[bad, col[field]] = np.nan


def read_physionet(path, *, errors: str = "report", max_member_bytes: int = MAX_MEMBER_BYTES,
                   max_total_bytes: int = MAX_TOTAL_BYTES) -> Cohort:
    """Read PhysioNet 2019 ``.psv`` files (a directory or the challenge zip).

    Parameters
    ----------
    path : directory of ``.psv`` files (searched recursively, symlinks out of it not followed) or
        a zip holding them
    errors : ``"report"`` (default) repairs or rejects bad input and counts it in the report;
        ``"raise"`` raises :class:`IngestError` at the first problem
    max_member_bytes, max_total_bytes : bounds on one file and on a zip's expanded members
        (:mod:`ehr.sources.files`)

    Returns
    -------
    Cohort
        ``events`` and ``stays`` (validated contract tables), ``report`` (the ingest report, with
        the cohort flow) and ``meta`` (``source``, ``path``); no ``cxr``.
    """
    if errors not in ("report", "raise"):
        raise ValueError(f"errors must be 'report' or 'raise', got {errors!r}")
    path = Path(path)
    report = IngestReport(source=f"{SOURCE}:{path}")
    limits = {"max_member_bytes": max_member_bytes, "max_total_bytes": max_total_bytes}
    bodies, n_rows, names, ids = _split_files(path, report, errors, limits)
    if not bodies:
        why = "; ".join(p.message() for p in report.examples[:3])
        raise IngestError(f"{path}: no readable .psv file ({report.files_read} file(s) seen)"
                          + (f": {why}" if why else ""))
    file_of_row = np.repeat(np.arange(len(n_rows)), n_rows)
    starts = np.concatenate([[0], np.cumsum(n_rows)[:-1]])
    row_in_file = np.arange(int(n_rows.sum())) - np.repeat(starts, n_rows) + 1
    x, row_rejected = _parse(bodies, file_of_row, row_in_file, names, report, errors)
    report.rows_read = len(x)

    col = {h: i for i, h in enumerate(HEADER)}
    keep = ~_bad_rows(x, col, file_of_row, row_in_file, names, row_rejected, report, errors)
    if not keep.any():
        why = "; ".join(p.message() for p in report.examples[:3])
        raise IngestError(f"{path}: no usable row in {len(names)} file(s): {why}")
    files_with_rows = set(file_of_row[keep].tolist())
    x, file_of_row, row_in_file = x[keep], file_of_row[keep], row_in_file[keep]
    file_names = np.asarray(names, dtype=object)
    _check_codes(x, col, file_names[file_of_row], row_in_file, report, errors)
    iculos = x[:, col["ICULOS"]].astype(np.int64)
    stay = ids[file_of_row]
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
    reader_flow(report, n_seen=report.files_read, what=".psv files (one stay each)", stays=st,
                excluded={"every row rejected": len(names) - len(files_with_rows)})
    validate(events, "events", source=str(path))
    validate(st, "stays", source=str(path))
    return Cohort(events, st, meta={"source": SOURCE, "path": str(path)}, report=report)
