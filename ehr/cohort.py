"""The one cohort type: what every source returns, saved and loaded in one format.

:func:`ehr.sources.read_physionet`, :func:`ehr.sources.read_mimic` and
:func:`ehr.synthetic.generate_cohort` all return a :class:`Cohort`. A cohort directory holds

``events.parquet``, ``stays.parquet``   always
``cxr.parquet``                         when the cohort has CXR studies
``truth.parquet``                       synthetic cohorts: the generator's latent timeline
``ingest_report.json``                  when a reader made one (counts of repaired/rejected input)
``cohort.json``                         ``format_version``, the tables saved, and ``meta``

or, in the partitioned layout (``save(d, partitions=N)``, :mod:`ehr.partitions`), one folder per
table (``events/``, ``stays/``, ``cxr/``, ``truth/``) of ``N`` parts by stay bucket, and
``"partitions": N`` in ``cohort.json``: part ``k`` of every table holds the same stays, so
:meth:`Cohort.load_partition` gives a worker a whole cohort of its own. :meth:`Cohort.load` reads
either layout (the partitioned one concatenated in part order); :class:`CohortWriter` writes the
partitioned layout a chunk at a time (the streaming synthetic generator).

Every table goes through :func:`ehr.tables.write_table` / :func:`ehr.tables.read_table`, so a
saved cohort is valid and a loaded one has been checked. :meth:`Cohort.save` replaces the
directory as a whole (``ehr.artefacts.atomic_dir``): a reader never sees a mixture of two
cohorts, and files of an older cohort there (screens, images) do not survive next to the new one.

Examples
--------
>>> import tempfile, pathlib
>>> from ehr.synthetic import generate_cohort
>>> d = pathlib.Path(tempfile.mkdtemp()) / "cohort"
>>> back = Cohort.load(generate_cohort(20, seed=2).save(d))
>>> back
Cohort(source='synthetic', stays=20, events=11277, cxr=25, truth=20)
>>> back.meta["seed"], sorted(p.name for p in d.iterdir())
(2, ['cohort.json', 'cxr.parquet', 'events.parquet', 'stays.parquet', 'truth.parquet'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ehr.artefacts import atomic_dir, json_safe
from ehr.partitions import PartitionedTable, PartitionWriter, write_partitioned
from ehr.tables import read_table, write_table

if TYPE_CHECKING:  # ehr.sources imports this module; the report is imported where it is read
    from ehr.sources.report import IngestReport

__all__ = ["Cohort", "CohortWriter", "COHORT_FORMAT_VERSION", "cohort_partitions"]

#: Bumped whenever a cohort directory changes in a way an older reader would misread.
COHORT_FORMAT_VERSION = 1
TABLES = ("events", "stays", "cxr", "truth")
_REQUIRED = ("events", "stays")
_META_FILE, _REPORT_FILE = "cohort.json", "ingest_report.json"


@dataclass(repr=False)
class Cohort:
    """A linked cohort: the ``events`` and ``stays`` tables of the data contract, and what came with them.

    Attributes
    ----------
    events, stays : contract tables (``ehr.schema``)
    cxr : one row per CXR study, or None when the source has none
    truth : the synthetic generator's latent per-stay timeline (no model may read it), else None
    meta : how the cohort was made (``source``; generator version and seed, or the path read and
        the onset definition), JSON-safe
    report : the reader's :class:`~ehr.sources.report.IngestReport`, where it made one
    """

    events: pd.DataFrame
    stays: pd.DataFrame
    cxr: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)
    report: IngestReport | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables this cohort has, by name (``events``, ``stays``, then ``cxr``/``truth`` if present)."""
        return {name: getattr(self, name) for name in TABLES if getattr(self, name) is not None}

    def __repr__(self) -> str:
        sizes = [f"stays={len(self.stays)}", f"events={len(self.events)}"]
        sizes += [f"{name}={len(t)}" for name, t in self.tables().items() if name in ("cxr", "truth")]
        return f"Cohort(source={self.meta.get('source')!r}, {', '.join(sizes)})"

    def save(self, directory, *, partitions: int | None = None) -> Path:
        """Write the cohort to ``directory`` (replaced as a whole); returns the directory.

        ``partitions``: write the partitioned layout with that many parts (default: one parquet
        file per table). Refuses to replace an existing non-empty directory that is not a cohort
        directory (one without ``cohort.json``), so a mistyped ``--out`` cannot wipe unrelated files.
        """
        d = _check_target(directory)
        tables = self.tables()
        with atomic_dir(d) as tmp:
            for name, df in tables.items():
                if partitions is None:
                    write_table(df, tmp / f"{name}.parquet", name)
                else:
                    write_partitioned(df, tmp / name, name, partitions)
            _write_meta(tmp, list(tables), self.meta, self.report, partitions)
        return d

    @classmethod
    def load_partition(cls, directory, k: int) -> Cohort:
        """Part ``k`` of a partitioned cohort: every table's rows of the stays in bucket ``k``."""
        d = Path(directory)
        doc = _read_meta(d)
        if doc.get("partitions") is None:
            raise ValueError(f"{d / _META_FILE}: this cohort is not partitioned; use Cohort.load")
        tables = {name: PartitionedTable(d / name, name).read(k) for name in doc["tables"]}
        return cls(**tables, meta=doc.get("meta", {}))

    @classmethod
    def load(cls, directory) -> Cohort:
        """Read a directory written by :meth:`save`; every table is validated against the contract.

        Raises ``FileNotFoundError`` naming a missing file, :class:`ehr.schema.SchemaError`
        naming the file, column and row of a table that breaks the contract, and ``ValueError``
        for a ``cohort.json`` of another format version.
        """
        from ehr.sources.report import IngestReport

        d = Path(directory)
        doc = _read_meta(d)
        if doc.get("partitions") is None:
            tables = {name: read_table(d / f"{name}.parquet", name) for name in doc["tables"]}
        else:
            tables = {name: PartitionedTable(d / name, name).read_all() for name in doc["tables"]}
        report = None
        if (d / _REPORT_FILE).is_file():
            report = IngestReport.from_dict(json.loads((d / _REPORT_FILE).read_text(encoding="utf-8")))
        return cls(**tables, meta=doc.get("meta", {}), report=report)


def cohort_partitions(directory) -> int | None:
    """Number of parts of a cohort directory, or None for the one-file-per-table layout."""
    return _read_meta(Path(directory)).get("partitions")


def _check_target(directory) -> Path:
    d = Path(directory)
    if d.is_dir() and any(d.iterdir()) and not (d / _META_FILE).is_file():
        raise FileExistsError(f"{d}: exists, is not empty and holds no {_META_FILE}; refusing to replace "
                              "it with a cohort (choose another directory or empty this one)")
    return d


def _write_meta(directory: Path, tables: list[str], meta: dict, report, partitions: int | None) -> None:
    if report is not None:
        report.write_json(directory / _REPORT_FILE)
    doc = {"format_version": COHORT_FORMAT_VERSION, "tables": tables, "meta": json_safe(meta)}
    if partitions is not None:
        doc["partitions"] = int(partitions)
    (directory / _META_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_meta(d: Path) -> dict:
    meta_file = d / _META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file}: no such file; {d} is not a cohort directory (write one with "
                                "`sepsiscope simulate` or `sepsiscope ingest`)")
    try:
        doc = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_file}: not valid JSON ({exc})") from exc
    if doc.get("format_version") != COHORT_FORMAT_VERSION:
        raise ValueError(f"{meta_file}: cohort format_version {doc.get('format_version')!r}, this reader "
                         f"reads {COHORT_FORMAT_VERSION}; write the cohort again with this version")
    names = doc.get("tables", [])
    unknown = [n for n in names if n not in TABLES]
    missing = [n for n in _REQUIRED if n not in names]
    if unknown or missing:
        raise ValueError(f"{meta_file}: 'tables' must list {list(_REQUIRED)} and only {list(TABLES)}, "
                         f"got {names}")
    return doc


class CohortWriter:
    """Write a partitioned cohort a chunk at a time: ``with CohortWriter(d, 8) as w: w.write(chunk)``.

    Each :meth:`write` appends a :class:`Cohort` chunk (whole stays) to the parts of its tables;
    the directory appears, whole, when the block ends without an error (``meta`` and ``report``
    may be set on the writer before then). Memory is bounded by one chunk.

    >>> import tempfile, pathlib
    >>> from ehr.synthetic import generate_cohort
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "c"
    >>> with CohortWriter(d, partitions=3) as w:
    ...     w.write(generate_cohort(10, seed=1))
    ...     w.meta = {"source": "synthetic"}
    >>> cohort_partitions(d), len(Cohort.load(d).stays), len(Cohort.load_partition(d, 0).stays)
    (3, 10, 3)
    """

    def __init__(self, directory, partitions: int):
        self.directory = _check_target(directory)
        self.partitions = int(partitions)
        self.meta: dict = {}
        self.report = None
        self._writers: dict[str, PartitionWriter] = {}

    def __enter__(self) -> CohortWriter:
        self._atomic = atomic_dir(self.directory)
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, chunk: Cohort) -> None:
        """Append the tables of ``chunk``; every chunk must have the same tables as the first."""
        tables = chunk.tables()
        if self._writers and set(tables) != set(self._writers):
            raise ValueError(f"chunk has tables {sorted(tables)}, earlier chunks {sorted(self._writers)}")
        for name, df in tables.items():
            if name not in self._writers:
                self._writers[name] = PartitionWriter(self._tmp / name, name, self.partitions)
            self._writers[name].write(df)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                for w in self._writers.values():
                    w.close()
                _write_meta(self._tmp, [n for n in TABLES if n in self._writers], self.meta, self.report,
                            self.partitions)
            except BaseException as error:
                self._atomic.__exit__(type(error), error, error.__traceback__)
                raise
        else:
            for w in self._writers.values():
                w.abort()
        return self._atomic.__exit__(exc_type, exc, tb)
