"""Finding and reading the CSV tables of one MIMIC-III or MIMIC-IV copy.

:class:`MimicTables` knows both layouts (MIMIC-III: one folder, upper- or lower-case names;
MIMIC-IV: ``hosp/`` and ``icu/``), streams large tables with pyarrow's CSV reader a block of
``BLOCK_BYTES`` at a time (gzip decompressed on the fly), keeps only the columns and the item ids
asked for before anything becomes a pandas frame (so memory holds one block plus the rows kept,
not the 300 M rows of MIMIC-IV's chartevents), lower-cases headers, numbers rows (``_row``,
1-based, for error messages) and counts every unreadable id or timestamp in the ingest report.
A CSV line with the wrong number of fields is left out and counted (``wrong number of fields``).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ehr.sources.files import inside
from ehr.sources.report import IngestError, IngestReport

__all__ = ["MimicTables", "LAYOUT", "REQUIRED", "ALLOWABLE", "index_files", "detect_version", "check_allow_missing"]

#: bytes of CSV text per streamed block (about 400k chartevents rows)
BLOCK_BYTES = 32 << 20
#: what is lost without a table (for messages)
_WITHOUT = {
    "chartevents": "there are no vital signs, GCS or ventilator settings, so SOFA and onset are wrong",
    "labevents": "there are no laboratory values, so SOFA and onset are wrong",
    "prescriptions": "there are no antibiotics, so no suspected infection and no Sepsis-3 onset",
    "microbiologyevents": "there are no cultures, so no suspected infection and no Sepsis-3 onset",
}

# logical table -> file stem per version (MIMIC-IV: folder/stem)
LAYOUT = {
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
#: without these there are no stays (icustays, admissions, patients) or no Sepsis-3 labels: SOFA
#: needs chartevents and labevents, suspected infection needs prescriptions and microbiologyevents
REQUIRED = ("icustays", "admissions", "patients", "chartevents", "labevents", "prescriptions",
            "microbiologyevents")
#: tables a reader may be allowed to go without (``allow_missing``); the stays tables are never optional
ALLOWABLE = REQUIRED[3:]
_UNREADABLE = (EOFError, OSError, zlib.error, UnicodeDecodeError, pd.errors.ParserError, ValueError)


def index_files(root: Path, outside: list | None = None) -> dict[str, Path]:
    """Map 'stem' and 'folder/stem' (lower-case, without .csv/.csv.gz) to files.

    Symlinks to files or folders outside ``root`` are not followed (their names go to ``outside``).
    """
    out: dict[str, Path] = {}
    dirs = [(root, "")]
    for d in sorted(root.iterdir()):
        if d.is_dir():
            if inside(d, root):
                dirs.append((d, d.name.lower() + "/"))
            elif outside is not None:
                outside.append(d.name)
    for d, prefix in dirs:
        for f in sorted(d.iterdir()):
            name = f.name.lower()
            for ext in (".csv.gz", ".csv"):
                if f.is_file() and name.endswith(ext):
                    if not inside(f, root):
                        if outside is not None:
                            outside.append(prefix + f.name)
                        continue
                    out.setdefault(prefix + name[: -len(ext)], f)
    return out


def check_allow_missing(names) -> tuple[str, ...]:
    """Lower-cased table names that may be missing; ``ValueError`` naming an unknown one."""
    out = tuple(str(n).strip().lower() for n in names if str(n).strip())
    bad = [n for n in out if n not in ALLOWABLE]
    if bad:
        raise ValueError(f"allow_missing: unknown or required table(s) {bad}; the tables that may be missing "
                         f"are {', '.join(ALLOWABLE)}")
    return out


def detect_version(files: dict[str, Path], root: Path) -> str:
    """``"iv"`` for the hosp/icu layout, ``"iii"`` for a flat folder with ICUSTAYS."""
    if "icu/icustays" in files or "hosp/admissions" in files:
        return "iv"
    if "icustays" in files:
        return "iii"
    raise IngestError(f"{root}: no ICUSTAYS table (MIMIC-III: ICUSTAYS.csv[.gz]; MIMIC-IV: icu/icustays.csv.gz)")


def _header(path: Path) -> list[str]:
    """The header as written (case kept)."""
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a clear IngestError
        raise IngestError(f"{path}: cannot read the CSV header ({exc}); the file is truncated, corrupt or "
                          "not a CSV") from exc


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


class MimicTables:
    """Finds and reads the tables of one MIMIC copy (lower-cased headers, strings, row numbers)."""

    def __init__(self, root: Path, version: str, report: IngestReport, allow_missing=()):
        self.root, self.version, self.report = root, version, report
        outside: list[str] = []
        self.files = index_files(root, outside)
        for name in outside:
            report.add(name, None, None, "symlink to a file outside the input folder", "rejected_file", "not followed")
        self.allow_missing = check_allow_missing(allow_missing)
        report.allowed_missing = [n for n in self.allow_missing]
        self.stay_col = "icustay_id" if version == "iii" else "stay_id"
        self.stay_flow: dict = {}

    def path(self, table: str) -> Path | None:
        return self.files.get(LAYOUT[self.version][table])

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
            expected = LAYOUT[self.version][table]
            if table in REQUIRED and table not in self.allow_missing:
                why = "" if table in REQUIRED[:3] else (
                    f"; without it {_WITHOUT[table]} (pass --allow-missing {table} to read the rest anyway)")
                raise IngestError(f"{self.root}: required table '{expected}' (.csv or .csv.gz) is missing{why}")
            allowed = table in self.allow_missing
            self.report.add(expected, None, None, "missing table (allowed)" if allowed else "missing table",
                            "skipped", f"without it {_WITHOUT.get(table, 'its signals are absent from events')}")
            return None
        written = _header(path)
        header = [c.lower() for c in written]
        _check_version(path, header, self.version, table)
        missing = [c for c in need if c not in header]
        if missing:
            raise IngestError(f"{path}: missing column(s) {missing} (header: {header})")
        cols = [c for c in want if c in header]
        parts, n = [], 0
        try:
            for batch in self._stream(path, [w for w in written if w.lower() in cols]):
                batch = batch.rename_columns([c.lower() for c in batch.column_names])
                rows = np.arange(n + 1, n + batch.num_rows + 1)
                n += batch.num_rows
                if itemids is not None:
                    batch, rows = self._keep_items(batch, rows, path.name, id_col, itemids)
                chunk = batch.to_pandas()
                chunk["_row"] = rows
                if itemids is not None:
                    chunk[id_col] = chunk[id_col].astype("int64")
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
        except _UNREADABLE as exc:  # pyarrow's errors are ValueError / OSError subclasses
            raise IngestError(f"{path}: unreadable after {n:,} data row(s) ({type(exc).__name__}: {exc}); the "
                              "file is truncated or corrupt") from exc
        self.report.files_read += 1
        self.report.rows_read += n
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols + ["_row"])
        df.attrs["file"] = path.name
        return df

    def _stream(self, path: Path, columns: list[str]):
        """Record batches of ``columns`` (all as strings); lines with a wrong field count are counted."""
        bad = []

        def invalid(row) -> str:
            bad.append(row)
            return "skip"

        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(include_columns=columns, strings_can_be_null=True,
                                                 column_types={c: pa.string() for c in columns}))
        yield from reader
        if bad:
            first = bad[0]
            self.report.add(path.name, first.number, None, "wrong number of fields", "rejected_row",
                            f"{first.actual_columns} field(s), expected {first.expected_columns}", n=len(bad))

    def _keep_items(self, batch: pa.RecordBatch, rows: np.ndarray, file: str, id_col: str,
                    itemids: set[int]) -> tuple[pa.RecordBatch, np.ndarray]:
        """The rows of ``batch`` whose ``id_col`` is in ``itemids``; unparseable and unmapped ids counted."""
        raw = batch.column(id_col)
        ids = pd.to_numeric(pd.Series(raw.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy()
        bad = np.isnan(ids)
        if bad.any():
            frame = pd.DataFrame({id_col: raw.filter(pa.array(bad)).to_pylist(), "_row": rows[bad]})
            self._bad(file, frame, id_col, "unparseable item id", "rejected_row")
        keep = np.isin(ids, np.fromiter(itemids, dtype=float))
        skipped = int((~keep & ~bad).sum())
        if skipped:
            i = int(np.flatnonzero(~keep & ~bad)[0])
            self.report.add(file, int(rows[i]), id_col, "item id not mapped", "skipped",
                            f"e.g. itemid {raw[i].as_py()}", n=skipped)
        batch = batch.filter(pa.array(keep)).set_column(
            batch.schema.get_field_index(id_col), id_col, pc.cast(pa.array(ids[keep]), pa.int64()))
        return batch, rows[keep]

    def _bad(self, file: str, rows: pd.DataFrame, field: str, problem: str, action: str) -> None:
        for _, r in rows.head(5).iterrows():
            self.report.add(file, int(r["_row"]), field, problem, action, f"value {r[field]!r}", n=0)
        self.report.tally(field, problem, action, len(rows))

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

    def optional_times(self, df: pd.DataFrame, col: str) -> pd.Series:
        """:meth:`times` of an optional column (empty cells allowed); all NaT when it is absent."""
        if col not in df:
            return pd.Series(pd.NaT, index=df.index)
        return self.times(df, col, required=False)

    def ints(self, df: pd.DataFrame, col: str) -> pd.Series:
        raw = df[col]
        v = pd.to_numeric(raw, errors="coerce")
        bad = raw.notna() & v.isna()
        if bad.any():
            self._bad(df.attrs.get("file", col), df.loc[bad], col, "unparseable id", "rejected_row")
        return v

    def drop_error_rows(self, df: pd.DataFrame, col: str) -> pd.DataFrame:
        """Rows flagged ``col == 1`` (MIMIC's charting-error flag) are counted and left out."""
        if col not in df:
            return df
        err = pd.to_numeric(df[col], errors="coerce").eq(1)
        if err.any():
            self.report.add(df.attrs["file"], int(df.loc[err, "_row"].iloc[0]), col, "row marked as error",
                            "rejected_row", n=int(err.sum()))
        return df.loc[~err]
