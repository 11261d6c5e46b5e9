"""``run.json``: what a run needs to be reproduced (config, seeds, versions, commit, input hashes).

Examples
--------
>>> info = run_info({"seed": 0})
>>> sorted(info)[:3]
['command', 'config', 'created']
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ehr.artefacts import atomic_file

__all__ = ["run_info", "run_json_text", "write_run_json", "file_sha256"]

_PACKAGES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "pgmpy", "lightgbm", "xgboost",
             "torch", "torchvision", "pomegranate", "matplotlib", "sepsiscope")


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (or of every file under a directory, in sorted order).

    In a directory, symlinks to files outside it are left out (they are not read either).
    """
    h = hashlib.sha256()
    p = Path(path)
    root = p.resolve()
    files = sorted(q for q in p.rglob("*") if q.is_file() and q.resolve().is_relative_to(root)) \
        if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_info(config: dict, inputs: dict | None = None, seeds: dict | None = None) -> dict:
    """Assemble the run record; ``inputs`` maps a name to a path whose sha256 is recorded."""
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "config": config,
        "seeds": seeds or {},
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "inputs": {k: {"path": str(v), "sha256": file_sha256(v)} for k, v in (inputs or {}).items()},
    }


def run_json_text(config: dict, inputs: dict | None = None, seeds: dict | None = None,
                  extra: dict | None = None) -> str:
    """The text of ``run.json`` (:func:`run_info` with ``extra`` fields added), e.g. to travel inside
    a model directory's atomic write (``model.save(out, attachments={"run.json": ...})``)."""
    return json.dumps(run_info(config, inputs, seeds) | (extra or {}), indent=1, default=str)


def write_run_json(run_dir, config: dict, inputs: dict | None = None, seeds: dict | None = None,
                   extra: dict | None = None) -> Path:
    """Write ``run_dir/run.json`` (through a temporary name and a rename) and return its path."""
    path = Path(run_dir) / "run.json"
    with atomic_file(path) as tmp:
        tmp.write_text(run_json_text(config, inputs, seeds, extra), encoding="utf-8")
    return path
