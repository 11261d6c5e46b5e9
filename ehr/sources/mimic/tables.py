"""Finding and reading the CSV tables of one MIMIC-III or MIMIC-IV copy.

:class:`MimicTables` knows both layouts (MIMIC-III: one folder, upper- or lower-case names;
MIMIC-IV: ``hosp/`` and ``icu/``), reads large tables chunk by chunk keeping only the item ids
asked for, lower-cases headers, numbers rows (``_row``, 1-based, for error messages) and counts
every unreadable id or timestamp in the ingest report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ehr.sources.report import IngestError, IngestReport

__all__ = ["MimicTables", "LAYOUT", "index_files", "detect_version"]

CHUNK_ROWS = 2_000_000

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
_REQUIRED = ("icustays", "admissions", "patients")


def index_files(root: Path) -> dict[str, Path]:
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


def detect_version(files: dict[str, Path], root: Path) -> str:
    """``"iv"`` for the hosp/icu layout, ``"iii"`` for a flat folder with ICUSTAYS."""
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


class MimicTables:
    """Finds and reads the tables of one MIMIC copy (lower-cased headers, strings, row numbers)."""

    def __init__(self, root: Path, version: str, report: IngestReport):
        self.root, self.version, self.report = root, version, report
        self.files = index_files(root)
        self.stay_col = "icustay_id" if version == "iii" else "stay_id"

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
                chunk = self._keep_items(chunk, path.name, id_col, itemids)
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

    def _keep_items(self, chunk: pd.DataFrame, file: str, id_col: str, itemids: set[int]) -> pd.DataFrame:
        ids = pd.to_numeric(chunk[id_col], errors="coerce")
        bad = ids.isna()
        if bad.any():
            self._bad(file, chunk.loc[bad], id_col, "unparseable item id", "rejected_row")
        keep = ids.isin(itemids)
        skipped = int((~keep & ~bad).sum())
        if skipped:
            ex = chunk.loc[~keep & ~bad].iloc[0]
            self.report.add(file, int(ex["_row"]), id_col, "item id not mapped", "skipped",
                            f"e.g. itemid {ex[id_col]}", n=skipped)
        return chunk.loc[keep].assign(**{id_col: ids[keep].astype("int64")})

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
