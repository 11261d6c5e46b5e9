"""What the CLI checks before it reads an input or writes an output.

Inputs: a path given on the command line must exist and be a file or a folder as expected
(:class:`~sepsiscope.errors.UsageError`, exit code 2); a table that exists but cannot be used is
a :class:`~sepsiscope.errors.DataError` (exit code 1) naming the file.

Outputs never replace an input: an output equal to an input, inside an input model folder, or a
folder that holds an input is refused. A folder is replaced as a whole only when it is of the
kind being written (it holds ``model.json``, ``run.json``, ``cohort.json``) or empty; a run
directory only with ``--overwrite``. Every output is written under a temporary name and renamed
into place (:func:`ehr.artefacts.atomic_file`, :func:`ehr.artefacts.atomic_dir`).

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> (d / "s.parquet").write_bytes(b"x") and None
>>> check_output(d / "s.parquet", inputs={"--screens": d / "s.parquet"})
Traceback (most recent call last):
...
sepsiscope.errors.UsageError: --out .../s.parquet is also the input --screens; write to another file
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ehr.artefacts import read_json_object
from sepsiscope.errors import DataError, UsageError

__all__ = ["existing_file", "existing_dir", "read_screens", "check_output", "check_output_dir",
           "require_complete_run", "RUN_MARKER", "MODEL_MARKER"]

RUN_MARKER, MODEL_MARKER = "run.json", "model.json"
#: the keys every screens table has
SCREEN_KEYS = ("stay_id", "screen_time")


def existing_file(path, option: str) -> Path:
    """``path`` as a Path; a usage error when it does not exist or is a folder."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{option} {p}: no such file")
    if p.is_dir():
        raise UsageError(f"{option} {p}: is a folder; expected a file")
    return p


def existing_dir(path, option: str, what: str = "folder") -> Path:
    """``path`` as a Path; a usage error when it does not exist or is not a folder."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{option} {p}: no such {what}")
    if not p.is_dir():
        raise UsageError(f"{option} {p}: is a file; expected a {what}")
    return p


def read_screens(path, option: str = "--screens", *, min_stays: int = 1) -> pd.DataFrame:
    """Read a screens parquet given as ``option``; errors name the file.

    A missing file is a usage error; an unreadable file, a table without ``stay_id`` /
    ``screen_time`` or with fewer than ``min_stays`` stays is a data error.
    """
    import pyarrow as pa

    p = existing_file(path, option)
    try:
        table = pd.read_parquet(p)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable parquet table ({exc})") from None
    missing = [c for c in SCREEN_KEYS if c not in table.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}; not a screens table (`sepsiscope screens COHORT` "
                        "writes one)")
    n = table["stay_id"].nunique()
    if n < min_stays:
        raise DataError(f"{p}: {len(table)} screen(s) of {n} stay(s); this needs at least {min_stays} stays")
    return table


def _resolved(p) -> Path:
    return Path(p).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _model_dir_of(path: Path) -> Path | None:
    """The model folder ``path`` lies in (a folder holding ``model.json``), if any."""
    for d in (path, *path.parents):
        if (d / MODEL_MARKER).is_file():
            return d
    return None


def check_output(out, *, option: str = "--out", inputs: dict | None = None, model_dirs=(),
                 input_dirs: dict | None = None) -> Path:
    """Refuse a file output that would replace an input or write into an input model folder.

    Parameters
    ----------
    out : the output file
    option : how the command line names it (for messages)
    inputs : ``{option: path}`` of input files (and folders) the output must not equal
    model_dirs : model folders read by the command: the output must not lie inside one
    input_dirs : ``{option: folder}`` of input folders whose existing files the output must not
        replace (a new file inside is fine)
    """
    o = _resolved(out)
    if o.is_dir():
        raise UsageError(f"{option} {out}: is a folder; expected a file name")
    for name, p in (inputs or {}).items():
        if p is not None and o == _resolved(p):
            raise UsageError(f"{option} {out} is also the input {name}; write to another file")
    for d in list(model_dirs) + [_model_dir_of(o.parent)]:
        if d is not None and _inside(o, _resolved(d)):
            raise UsageError(f"{option} {out} lies inside the model folder {d}; write it elsewhere")
    for name, d in (input_dirs or {}).items():
        if d is not None and _inside(o, _resolved(d)) and o.exists():
            raise UsageError(f"{option} {out} would replace a file of the input {name} {d}; write to a "
                             "new file")
    return Path(out)


def check_output_dir(out, *, marker: str | tuple[str, ...], option: str = "--out", inputs: dict | None = None,
                     overwrite: bool | None = None) -> Path:
    """Refuse an output folder that cannot be replaced as a whole.

    ``out`` may be new, empty, or a folder holding ``marker`` (a folder of the same kind; one of
    several names when a tuple); with
    ``overwrite`` False (a run directory) an existing non-empty folder needs ``--overwrite``. A
    folder that holds one of ``inputs`` (``{option: path}``) is refused: replacing it would
    delete the input.
    """
    o = _resolved(out)
    if o.exists() and not o.is_dir():
        raise UsageError(f"{option} {out}: exists and is a file; expected a folder")
    for name, p in (inputs or {}).items():
        if p is not None and _inside(_resolved(p), o):
            raise UsageError(f"{option} {out} holds the input {name} {p}; replacing it would delete the "
                             "input; write to another folder")
    markers = (marker,) if isinstance(marker, str) else tuple(marker)
    if o.is_dir() and any(o.iterdir()):
        if not any((o / m).is_file() for m in markers):
            raise UsageError(f"{option} {out}: exists, is not empty and holds no {' or '.join(markers)}; refusing "
                             "to replace it (choose another folder or empty this one)")
        if overwrite is False:
            raise UsageError(f"{option} {out}: exists; pass --overwrite to replace it as a whole")
    return Path(out)


def require_complete_run(run_dir, option: str = "RUN_DIR") -> dict:
    """``run.json`` of a run directory written to the end (``"complete": true``), else a data error.

    A missing folder is a usage error.
    """
    d = existing_dir(run_dir, option, "run directory")
    path = d / RUN_MARKER
    info = read_json_object(path, DataError, f"{d} is not a run directory (`sepsiscope run` writes one)")
    if info.get("complete") is not True:
        raise DataError(f"{path}: the run is incomplete (no \"complete\": true); run it again")
    return info
