"""Fixtures of the bad-input corpus: tiny inputs built once per session, and the checks run after each case.

``fx`` is a read-only folder of good inputs (a 40-stay cohort, its screens, a CPN and a GBDT
model, a complete and an incomplete run directory, PhysioNet files, an image); cases build
their bad inputs from these in their own ``tmp_path``. :func:`signature` records every file
under a folder (size, mtime, inode) so a case can show that no input changed and nothing was
left behind.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
MIMIC4 = REPO / "tests" / "ehr" / "fixtures" / "mimic4"


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (``{fx}``/``{tmp}`` filled in), what to prepare, what must happen."""

    id: str
    argv: str
    code: int
    fragment: str
    setup: object = None  # callable(fx, tmp) run before the command
    tags: tuple = field(default=())

    def args(self, fx, tmp) -> list[str]:
        return shlex.split(self.argv.format(fx=fx.root, tmp=tmp, mimic4=MIMIC4))


def psv_row(**values) -> str:
    """One PhysioNet row: ``HR=80, ICULOS=1`` ...; everything else NaN."""
    from ehr.sources.physionet import HEADER

    return "|".join(str(values.get(h, "NaN")) for h in HEADER)


def write_psv(path: Path, rows: list[str], header: str | None = None) -> Path:
    from ehr.sources.physionet import HEADER

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((header or "|".join(HEADER)) + "\n" + "\n".join(rows) + "\n")
    return path


def good_psv_rows(n: int = 6, septic_from: int | None = None, **extra) -> list[str]:
    base = dict(HR=80, O2Sat=97, Temp=37.0, SBP=120, MAP=85, Resp=16, Age=60, Gender=1, Unit1=1, Unit2=0,
                HospAdmTime=-5)
    rows = []
    for i in range(1, n + 1):
        label = int(septic_from is not None and i >= septic_from)
        rows.append(psv_row(**(base | extra), ICULOS=i, SepsisLabel=label))
    return rows


def signature(*roots: Path) -> dict:
    """Every file and folder under ``roots``: (size, mtime_ns, inode) of files, None for folders."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = None
            for f in filenames:
                p = os.path.join(dirpath, f)
                st = os.lstat(p)
                out[p] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def invoke(args: list[str]):
    """Run the CLI in-process; (exit code, stdout, stderr, exception)."""
    from sepsiscope.cli import app

    res = CliRunner().invoke(app, args)
    return res.exit_code, res.stdout, res.stderr, res.exception


@pytest.fixture(scope="session")
def fx(tmp_path_factory):
    """The good inputs (see the module docstring). Built once: about a minute on a loaded machine."""
    from PIL import Image

    from cpn import SepsisCPN
    from ehr.screens import build_screens
    from ehr.synthetic import generate_cohort
    from ehr.tables import write_table
    from gbdt.model import GBDTClassifier

    root = tmp_path_factory.mktemp("fx")
    cohort = generate_cohort(40, seed=1)
    cohort.save(root / "cohort")
    screens = build_screens(cohort.events, cohort.stays, cohort.cxr)
    write_table(screens, root / "screens.parquet", "screens")
    SepsisCPN("physionet", half_lives="prior", max_iter=1).fit(screens).save(root / "cpn")
    GBDTClassifier(n_estimators=5, early_stopping_rounds=None).fit(screens).save(root / "gbdt")
    run = root / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {}, "complete": True}))
    (run / "predictions.parquet").write_bytes(b"kept")
    (run / "models" / "cpn").mkdir(parents=True)
    (run / "models" / "cpn" / "model.json").write_text("{}")
    partial = root / "partial_run"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"config": {}}))
    for i in (1, 2, 3):
        write_psv(root / "psv" / f"p00000{i}.psv", good_psv_rows(septic_from=4 if i == 1 else None))
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype("uint8")).save(root / "image.png")
    (root / "notes").mkdir()
    (root / "notes" / "mine.txt").write_text("not a model")
    return SimpleNamespace(root=root, screens=screens)
