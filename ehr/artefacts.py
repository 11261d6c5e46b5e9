"""Artefacts on disk: one ``model.json`` reader and writer, atomic writes, confined file paths.

Every fitted model saves to a directory that holds ``model.json`` and the files it names.
``model.json`` always has

``kind``            what reads it back (``cpn``, ``gbdt``, ``imaging``, ...)
``format_version``  an integer per kind; a reader refuses any other (:class:`ModelFormatError`)
``config``          the estimator's hyperparameters (``get_params()``), JSON-safe
``features``        the screen columns (or evidence items) the model needs
``data_hashes``     hashes of the data it was fitted on
``files``           ``{name: sha256}`` of every other file in the directory
``state``           whatever else the kind needs to predict (fitted attributes)

Paths in ``files`` are plain names inside the directory: a ``model.json`` that names a file
elsewhere (``../x``, an absolute path, a symlink out) is refused, and every file's sha256 is
checked before its bytes reach a native reader (LightGBM, XGBoost, torch), so truncated or
swapped files fail with a message instead of a crash.

Writes go to a temporary sibling and are renamed into place, so a reader sees the old
directory or the new one, whole, never a mixture.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "m"
>>> def write(tmp):
...     (tmp / "weights.txt").write_text("42")
>>> _ = write_model_dir(d, kind="demo", format_version=1, config={"a": 1}, features=["hr"],
...                     write_files=write)
>>> meta = read_model_meta(d, kind="demo", format_version=1)
>>> meta["config"], model_file(d, meta, "weights.txt").read_text()
({'a': 1}, '42')
>>> read_model_meta(d, kind="cpn")
Traceback (most recent call last):
...
ehr.artefacts.ModelFormatError: ...model.json: kind is 'demo', expected 'cpn'
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

__all__ = ["ModelFormatError", "MODEL_JSON", "atomic_dir", "atomic_file", "file_sha256", "json_safe",
           "model_file", "read_json_object", "read_model_meta", "write_attachments", "write_model_dir"]

MODEL_JSON = "model.json"


class ModelFormatError(ValueError):
    """A model directory is missing, damaged, of another kind or of another format version.

    The message names the file and what is wrong with it.
    """


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of one file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def json_safe(obj):
    """``obj`` with numpy scalars/arrays, tuples and paths turned into JSON types (recursively).

    Non-finite floats become ``None`` so the file stays strict JSON.

    >>> json_safe({"a": np.float64(1.5), "b": (1, np.int64(2)), "c": float("nan")})
    {'a': 1.5, 'b': [1, 2], 'c': None}
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sibling_tmp(path: Path, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
    # mkdtemp makes the folder private (0700); once renamed into place it is an ordinary folder,
    # with the permissions mkdir would have given it
    tmp.chmod(0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back while the block runs, then deliver it.

    A rename pair (old aside, new in) must not be cut in half. Only the main thread can set
    signal handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    except ValueError:  # pragma: no cover - e.g. an embedded interpreter without signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _swap_in(staged: Path, path: Path) -> None:
    """Rename ``staged`` onto ``path``; an existing directory there is moved aside, then removed."""
    old = None
    try:
        with _uninterrupted():
            if path.exists() or path.is_symlink():
                if not path.is_dir() or path.is_symlink():
                    raise FileExistsError(f"{path}: exists and is not a directory; refusing to replace it")
                old = _sibling_tmp(path, ".old")
                os.rmdir(old)
                os.replace(path, old)
            os.replace(staged, path)
    finally:  # also when the held-back Ctrl-C is delivered
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path, *, keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole when the block succeeds.

    On an exception (Ctrl-C included) the temporary directory is removed and ``path`` is left as
    it was. An existing ``path`` is moved aside, the new one renamed in, then the old removed:
    at every moment ``path`` is either the old directory or the new one (Ctrl-C is held back
    during the two renames). With ``keep_name`` the yielded directory already has ``path``'s
    name (inside a temporary parent), for writers that record their directory's name.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with atomic_dir(d, keep_name=True) as tmp:
    ...     _ = (tmp / "a.txt").write_text("new")
    >>> tmp.name, sorted(p.name for p in d.iterdir()), sorted(p.name for p in d.parent.iterdir())
    ('run', ['a.txt'], ['run'])
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and (not path.is_dir() or path.is_symlink()):
        raise FileExistsError(f"{path}: exists and is not a directory; refusing to replace it")
    holder = _sibling_tmp(path, ".tmp")
    staged = holder / path.name if keep_name else holder
    try:
        if keep_name:
            staged.mkdir()
        yield staged
        _swap_in(staged, path)
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise
    if keep_name:
        shutil.rmtree(holder, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path) -> Iterator[Path]:
    """Yield a temporary file name in ``path``'s folder; renamed onto ``path`` when the block succeeds.

    The temporary name keeps ``path``'s extension (``.x.png.1a2b.tmp.png``), for writers that
    choose a format by it.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.txt"
    >>> with atomic_file(p) as tmp:
    ...     _ = tmp.write_text("done")
    >>> p.read_text(), tmp.suffix
    ('done', '.txt')
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory; expected a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp's file is private (0600); the output is an ordinary file
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_attachments(directory, attachments: dict | None) -> None:
    """Write ``{name: content}`` into ``directory``: ``str`` as UTF-8 text, ``bytes`` as they are, a path copied.

    Attachments are files that travel with a model but are not the model (``run.json``, a grid
    search's results, a training checkpoint). Names are plain file names; an attachment never
    replaces a file already written, nor ``model.json``.
    """
    for name, content in (attachments or {}).items():
        if not name or Path(name).name != name or name in (".", "..", MODEL_JSON):
            raise ValueError(f"attachment name {name!r}: expected a plain file name other than {MODEL_JSON}")
        target = Path(directory) / name
        if target.exists():
            raise ValueError(f"attachment {name!r} would replace a file the model wrote itself")
        if isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        elif isinstance(content, bytes):
            target.write_bytes(content)
        elif isinstance(content, os.PathLike):
            shutil.copyfile(content, target)
        else:
            raise TypeError(f"attachment {name!r}: expected str, bytes or a path, got {type(content).__name__}")


def write_model_dir(directory, *, kind: str, format_version: int, config: dict, features: list,
                    write_files: Callable[[Path], None] | None = None, data_hashes: dict | None = None,
                    state: dict | None = None, extra: dict | None = None,
                    attachments: dict | None = None) -> Path:
    """Write a model directory atomically and return its path.

    ``write_files(tmp)`` writes the model's own files (weights, network, booster) into the
    temporary directory; ``attachments`` (see :func:`write_attachments`) add files that travel
    with the model, such as ``run.json``, in the same atomic write. The sha256 of every file is
    recorded in ``model.json``, which is written last. ``extra`` adds top-level fields (e.g.
    ``metrics``).
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        if write_files is not None:
            write_files(tmp)
        write_attachments(tmp, attachments)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                files[f.relative_to(tmp).as_posix()] = file_sha256(f)
        if MODEL_JSON in files:
            raise ValueError(f"{kind}: write_files must not write {MODEL_JSON}")
        meta = {"kind": kind, "format_version": int(format_version), "config": json_safe(config),
                "features": json_safe(list(features)), "data_hashes": json_safe(data_hashes or {}),
                "files": files, "state": json_safe(state or {}), **json_safe(extra or {})}
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return directory


def read_json_object(path, error: type[Exception] = ModelFormatError, missing: str = "") -> dict:
    """The JSON object in file ``path``; ``error`` naming the file when it is missing, not JSON or not an object.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> _ = p.write_text("[1]")
    >>> read_json_object(p, ValueError)
    Traceback (most recent call last):
    ...
    ValueError: .../x.json: expected a JSON object, got list
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: not found" + (f"; {missing}" if missing else ""))
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_model_meta(directory, *, kind: str | tuple[str, ...] | None = None,
                    format_version: int | None = None) -> dict:
    """Read and check ``directory/model.json``.

    Raises :class:`ModelFormatError` when the directory or file is missing, the JSON is damaged,
    ``kind`` is another (when given), or ``format_version`` differs (when given).
    """
    d = Path(directory)
    path = d / MODEL_JSON
    if not d.is_dir():
        raise ModelFormatError(f"{d}: not a directory; a model is a directory holding {MODEL_JSON}")
    meta = read_json_object(path, ModelFormatError, f"{d} is not a SepsisScope model directory")
    for key in ("kind", "format_version"):
        if key not in meta:
            raise ModelFormatError(f"{path}: no '{key}' field")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and meta["kind"] not in kinds:
        want = " or ".join(repr(k) for k in kinds)
        raise ModelFormatError(f"{path}: kind is {meta['kind']!r}, expected {want}")
    if format_version is not None and meta["format_version"] != format_version:
        raise ModelFormatError(f"{path}: format_version {meta['format_version']!r}; this SepsisScope "
                               f"reads {meta['kind']} models of format_version {format_version} "
                               f"(retrain the model)")
    files = meta.get("files", {})
    if not isinstance(files, dict):
        raise ModelFormatError(f"{path}: 'files' must map file names to sha256")
    return meta


def model_file(directory, meta: dict, name: str, *, check: bool = True) -> Path:
    """The path of file ``name`` of a model directory, confined to it and checked against its sha256.

    ``name`` must be listed in ``meta["files"]``; the resolved path must lie inside ``directory``
    (no ``..``, absolute paths or symlinks out of it), and with ``check`` its sha256 must match.
    """
    d = Path(directory)
    where = d / MODEL_JSON
    files = meta.get("files", {})
    if name not in files:
        raise ModelFormatError(f"{where}: file {name!r} is not listed in 'files'")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ModelFormatError(f"{where}: file {name!r} lies outside the model directory")
    path = d / rel
    root = d.resolve()
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ModelFormatError(f"{path}: not found (named in {where})") from None
    if root not in resolved.parents:
        raise ModelFormatError(f"{path}: resolves outside the model directory ({resolved}); refused")
    if not resolved.is_file():
        raise ModelFormatError(f"{path}: not a regular file (named in {where})")
    if check and file_sha256(resolved) != files[name]:
        raise ModelFormatError(f"{path}: sha256 differs from the one recorded in {where}; the file is "
                               f"damaged, truncated or from another model")
    return resolved
