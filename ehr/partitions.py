"""The partitioned layout: a contract table split by a hash bucket of ``stay_id`` (whole stays per part).

A partitioned table is a folder::

    events/_layout.json        {"kind": "events", "partitions": 64, "hash": "splitmix64", "key": "stay_id"}
    events/part-00000.parquet  every row whose stay_id falls in bucket 0 (written by ehr.tables)
    ...
    events/part-00063.parquet  one file per bucket, empty buckets included

The bucket of a stay is ``splitmix64(stay_id) mod partitions`` (:func:`bucket_of`): a fixed,
documented hash, so any tool (and any version of this package) puts a stay in the same part, and
every table of a cohort (events, stays, cxr, truth, screens) puts it in the *same* part: a worker
that reads part ``k`` of each has everything about its stays. The contract and the leakage rule
are those of the unpartitioned table (each part is validated by :func:`ehr.tables.read_table`);
within a part, rows keep the order they were written in.

Reading a part checks that every stay in it belongs there, so a part copied from a cohort with
another partition count (a stay split across buckets) is an error naming the file and the stay,
and a missing part is an error naming the file, never a silently smaller cohort.

Examples
--------
>>> import tempfile, pathlib, pandas as pd
>>> stays = pd.DataFrame({"stay_id": range(1, 9)})
>>> bucket_of(stays["stay_id"], 4).tolist()
[1, 2, 1, 2, 2, 0, 3, 2]
>>> d = pathlib.Path(tempfile.mkdtemp()) / "t"
>>> w = PartitionWriter(d, "demo", 4)
>>> w.write(stays)
>>> _ = w.close()
>>> t = PartitionedTable(d)
>>> t.partitions, t.read(1)["stay_id"].tolist()
(4, [1, 3])
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehr.schema import SCHEMAS, SchemaError, validate

__all__ = ["HASH", "LAYOUT_FILE", "bucket_of", "part_name", "PartitionWriter", "PartitionedTable",
           "is_partitioned", "write_partitioned", "PartitionError", "parts_directory", "write_part",
           "resolve_part", "splitmix64"]

HASH = "splitmix64"
LAYOUT_FILE = "_layout.json"
_KEY = "stay_id"


class PartitionError(SchemaError):
    """A partitioned table is incomplete or inconsistent (missing part, stay in the wrong part)."""


def bucket_of(stay_id, partitions: int) -> np.ndarray:
    """Bucket (0 .. partitions-1) of each ``stay_id``: the splitmix64 finaliser of the id, mod ``partitions``.

    splitmix64 mixes every bit of the id, so consecutive ids spread evenly over the buckets.
    """
    if int(partitions) < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    z = splitmix64(np.asarray(stay_id, dtype=np.int64).astype(np.uint64))
    return (z % np.uint64(partitions)).astype(np.int64)


def splitmix64(z) -> np.ndarray:
    """The splitmix64 step of each uint64 (state + golden gamma, then its finaliser), wrapping mod 2^64.

    Also the hash of :func:`evaluation.counts.poisson_weights`.

    Examples
    --------
    >>> int(splitmix64(np.array([0], dtype=np.uint64))[0])
    16294208416658607535
    """
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def part_name(k: int) -> str:
    """File name of part ``k``."""
    return f"part-{k:05d}.parquet"


def is_partitioned(path) -> bool:
    """Whether ``path`` is a partitioned table folder (it holds ``_layout.json``)."""
    return (Path(path) / LAYOUT_FILE).is_file()


class PartitionWriter:
    """Append frames of one table kind to ``partitions`` parquet parts, routing rows by stay bucket.

    Frames may arrive in any number of calls (a streaming source); each call appends one row
    group per non-empty bucket, so memory is bounded by the frame written. :meth:`close` writes
    the empty buckets and ``_layout.json`` and renames the folder into place: until then the
    table is under a temporary name and no reader can take it for complete. The first frame
    fixes the columns and types (``ehr.tables.arrow_schema``); later frames must match.
    """

    def __init__(self, directory, kind: str, partitions: int):
        self.directory = Path(directory)
        # contract tables are validated and written with their schema; any other kind as inferred
        self.kind, self.partitions, self.validate_kind = kind, int(partitions), kind in SCHEMAS
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.tmp = self.directory.with_name(f".{self.directory.name}.partial")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.schema: pa.Schema | None = None
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        """Validate ``df`` (when the kind is a contract table) and append its rows to their buckets."""
        from ehr.tables import arrow_schema

        if self.validate_kind:
            validate(df, self.kind)
        if self.schema is None:
            self.schema = arrow_schema(df, self.kind) if self.validate_kind else \
                pa.Schema.from_pandas(df, preserve_index=False)
        table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
        bucket = bucket_of(df[_KEY].to_numpy(), self.partitions)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(self.partitions + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[k]:bounds[k + 1]]
            if k not in self.writers:
                self.writers[k] = pq.ParquetWriter(self.tmp / part_name(k), self.schema)
            self.writers[k].write_table(table.take(pa.array(rows)))
        self.rows += len(df)

    def close(self) -> Path:
        """Finish every part, write ``_layout.json`` and move the folder into place; returns it."""
        from ehr.artefacts import atomic_dir

        if self.schema is None:
            raise ValueError(f"{self.directory}: nothing was written; a partitioned table needs one frame "
                             "(an empty one fixes its columns)")
        for w in self.writers.values():
            w.close()
        for k in range(self.partitions):
            if k not in self.writers:
                pq.write_table(self.schema.empty_table(), self.tmp / part_name(k))
        layout = {"kind": self.kind, "partitions": self.partitions, "hash": HASH, "key": _KEY, "rows": self.rows}
        (self.tmp / LAYOUT_FILE).write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")
        with atomic_dir(self.directory) as final:
            final.rmdir()
            self.tmp.rename(final)
        return self.directory

    def abort(self) -> None:
        """Drop what was written (the table never appears under its name)."""
        for w in self.writers.values():
            w.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_partitioned(df: pd.DataFrame, directory, kind: str, partitions: int) -> Path:
    """Write a whole frame as a partitioned table (see :class:`PartitionWriter`)."""
    with PartitionWriter(directory, kind, partitions) as w:
        w.write(df)
    return Path(directory)


@contextlib.contextmanager
def parts_directory(directory, kind: str, partitions: int) -> Iterator[Path]:
    """Yield a temporary folder where part files are written (by this process or by workers).

    When the block ends without an error, every ``part-k.parquet`` must be there (else
    :class:`PartitionError` naming the missing ones); ``_layout.json`` is written and the folder is
    renamed onto ``directory``. On an error the temporary folder is removed: a table under its
    final name is always complete.

    >>> import tempfile, pathlib, pandas as pd
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> with parts_directory(d, "demo", 2) as tmp:
    ...     for k in range(2):
    ...         _ = write_part(pd.DataFrame({"stay_id": [k]}), tmp, "demo", k)
    >>> sorted(p.name for p in d.iterdir())
    ['_layout.json', 'part-00000.parquet', 'part-00001.parquet']
    """
    from ehr.artefacts import atomic_dir

    with atomic_dir(directory) as tmp:
        yield tmp
        missing = [part_name(k) for k in range(int(partitions)) if not (tmp / part_name(k)).is_file()]
        if missing:
            raise PartitionError(f"{directory}: {len(missing)} part(s) were not written ({', '.join(missing[:3])})")
        rows = sum(pq.ParquetFile(tmp / part_name(k)).metadata.num_rows for k in range(int(partitions)))
        layout = {"kind": kind, "partitions": int(partitions), "hash": HASH, "key": _KEY, "rows": rows}
        (tmp / LAYOUT_FILE).write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")


def resolve_part(part):
    """A part given as a frame, or as a function that loads it (a loader travels to a worker cheaply)."""
    return part() if callable(part) else part


def write_part(df: pd.DataFrame, directory, kind: str, k: int) -> Path:
    """Write part ``k`` of a table into ``directory`` (validated for contract kinds; atomic)."""
    from ehr.artefacts import atomic_file
    from ehr.tables import write_table

    path = Path(directory) / part_name(k)
    if kind in SCHEMAS:
        return write_table(df, path, kind)
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


class PartitionedTable:
    """A partitioned table folder: its layout, and each part read back checked.

    Raises :class:`PartitionError` when ``_layout.json`` is missing or unreadable, or when a part
    file is missing.
    """

    def __init__(self, directory, kind: str | None = None):
        self.directory = Path(directory)
        layout_file = self.directory / LAYOUT_FILE
        if not layout_file.is_file():
            raise PartitionError(f"{layout_file}: no such file; {self.directory} is not a partitioned table")
        try:
            layout = json.loads(layout_file.read_text(encoding="utf-8"))
            self.kind, self.partitions = layout["kind"], int(layout["partitions"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise PartitionError(f"{layout_file}: not a valid layout ({exc})") from exc
        if layout.get("hash") != HASH or layout.get("key", _KEY) != _KEY:
            raise PartitionError(f"{layout_file}: hash {layout.get('hash')!r} of {layout.get('key')!r}; this "
                                 f"reader knows {HASH!r} of {_KEY!r}")
        if kind is not None and self.kind != kind:
            raise PartitionError(f"{layout_file}: holds a '{self.kind}' table, expected '{kind}'")
        self.rows = layout.get("rows")
        missing = [part_name(k) for k in range(self.partitions) if not self.path(k).is_file()]
        if missing:
            raise PartitionError(f"{self.directory}: {len(missing)} of {self.partitions} part(s) missing "
                                 f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); the table "
                                 "is incomplete: write it again")

    def path(self, k: int) -> Path:
        """Path of part ``k``."""
        return self.directory / part_name(k)

    def read(self, k: int, *, columns=None) -> pd.DataFrame:
        """Part ``k`` as a frame, validated, with every stay checked to belong to bucket ``k``."""
        from ehr.tables import read_table

        if not 0 <= k < self.partitions:
            raise IndexError(f"{self.directory}: part {k} of {self.partitions}")
        path = self.path(k)
        if self.kind in SCHEMAS and columns is None:
            df = read_table(path, self.kind)
        else:
            df = pq.read_table(path, columns=columns).to_pandas()
        if _KEY in df.columns and len(df):
            wrong = bucket_of(df[_KEY].to_numpy(), self.partitions) != k
            if wrong.any():
                row = int(np.flatnonzero(wrong)[0])
                raise PartitionError(
                    f"{path}: stay_id {int(df[_KEY].iloc[row])} at row {row} belongs to part "
                    f"{int(bucket_of(df[_KEY].iloc[[row]], self.partitions)[0])} of {self.partitions}, "
                    f"not {k} ({int(wrong.sum())} row(s) misplaced): a stay split across buckets, or a part "
                    "from a table with another partition count")
        return df

    def read_all(self, *, columns=None) -> pd.DataFrame:
        """Every part concatenated (for tables that fit in memory), in part order."""
        frames = [self.read(k, columns=columns) for k in range(self.partitions)]
        return pd.concat(frames, ignore_index=True)

    def __repr__(self) -> str:
        return f"PartitionedTable({str(self.directory)!r}, kind={self.kind!r}, partitions={self.partitions})"
