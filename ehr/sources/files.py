"""Reading input files safely: folders without escaping them, zips streamed with size bounds.

- A folder is walked without following symlinked folders; a file (or symlink) whose target lies
  outside the folder is not read, and is counted as rejected (its content is never echoed).
- A zip member is read through a bounded stream: a member declaring more than
  ``max_member_bytes`` is rejected (counted), and members together may not expand beyond
  ``max_total_bytes`` (:class:`~ehr.sources.report.IngestError`), so a zip bomb cannot exhaust
  memory. A corrupt member (bad CRC, broken deflate stream) is an ``IngestError`` naming it.

Examples
--------
>>> import tempfile, pathlib, zipfile
>>> from ehr.sources.report import IngestReport
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with zipfile.ZipFile(d / "a.zip", "w", zipfile.ZIP_DEFLATED) as z:
...     z.writestr("x/p1.psv", "HR\\n80\\n")
...     z.writestr("x/p2.psv", "0" * 5000)
>>> r = IngestReport("demo")
>>> [name for name, _ in iter_files(d / "a.zip", ".psv", r, max_member_bytes=1000)]
['p1.psv']
>>> r.count("rejected_file")
1
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from ehr.sources.report import IngestError, IngestReport

__all__ = ["iter_files", "inside", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES"]

#: a PhysioNet .psv of a year-long stay is under 2 MB; set A's largest is 55 kB
MAX_MEMBER_BYTES = 16 * 2**20
#: set A expands to 131 MB
MAX_TOTAL_BYTES = 2 * 2**30


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside ``root``."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _folder_files(root: Path, suffix: str, report: IngestReport, max_member_bytes: int):
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(suffix):
                continue
            f = Path(dirpath) / name
            if not inside(f, root):
                report.add(name, None, None, "symlink to a file outside the input folder", "rejected_file",
                           "not followed")
                continue
            if not f.is_file():
                report.add(name, None, None, "not a regular file", "rejected_file")
                continue
            size = f.stat().st_size
            if size > max_member_bytes:
                report.add(name, None, None, f"file larger than {max_member_bytes:,} bytes", "rejected_file",
                           f"{size:,} bytes")
                continue
            yield name, f.read_bytes()


def _zip_members(path: Path, suffix: str, report: IngestReport, max_member_bytes: int, max_total_bytes: int):
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise IngestError(f"{path}: not a readable zip file ({exc})") from exc
    with zf:
        members = sorted((i for i in zf.infolist() if i.filename.endswith(suffix) and not i.is_dir()),
                         key=lambda i: i.filename)
        total = sum(i.file_size for i in members if i.file_size <= max_member_bytes)
        if total > max_total_bytes:
            raise IngestError(f"{path}: its {suffix} members expand to {total:,} bytes, more than the limit of "
                              f"{max_total_bytes:,} (max_total_bytes); unzip it and read the folder, or raise the "
                              "limit")
        for info in members:
            name = Path(info.filename).name
            if info.file_size > max_member_bytes:
                report.add(name, None, None, f"zip member larger than {max_member_bytes:,} bytes",
                           "rejected_file", f"{info.file_size:,} bytes when expanded")
                continue
            try:
                with zf.open(info) as fh:  # stops at the declared size, checks the CRC
                    raw = fh.read(max_member_bytes + 1)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
                raise IngestError(f"{path}: member {info.filename} is corrupt ({exc})") from exc
            yield name, raw


def iter_files(path, suffix: str, report: IngestReport, *, max_member_bytes: int = MAX_MEMBER_BYTES,
               max_total_bytes: int = MAX_TOTAL_BYTES) -> Iterator[tuple[str, bytes]]:
    """Yield ``(file name, bytes)`` of every ``suffix`` file in a folder or a zip, sorted by path."""
    path = Path(path)
    if path.is_dir():
        yield from _folder_files(path, suffix, report, max_member_bytes)
    elif path.is_file():
        yield from _zip_members(path, suffix, report, max_member_bytes, max_total_bytes)
    else:
        raise IngestError(f"{path}: no such file or directory")
