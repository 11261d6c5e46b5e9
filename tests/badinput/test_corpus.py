"""The bad-input corpus: every case ends in one ``error:`` line naming the file, row or field, the
expected exit code (2 usage, 1 data), no traceback, no input changed and nothing left behind.

Cases live in ``cases_usage.py``, ``cases_data.py`` and ``cases_ingest.py``; they run in-process
on tiny inputs built once per session (``conftest.fx``). Interruptions and native crashes are in
``test_interrupts.py`` (subprocesses), inputs that must be read with a flag in ``test_flagged.py``.
"""

from __future__ import annotations

import pytest

from tests.badinput import cases_data, cases_ingest, cases_usage
from tests.badinput.conftest import invoke, signature

CASES = cases_usage.CASES + cases_data.CASES + cases_ingest.CASES


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 150


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clean_error(case, fx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray default output would land here and be seen
    if case.setup is not None:
        case.setup(fx, tmp_path)
    before = signature(fx.root, tmp_path)
    code, out, err, exc = invoke(case.args(fx, tmp_path))
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in out + err, err
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    assert code == case.code, (code, err)
    assert len(errors) == 1, err
    assert case.fragment in errors[0], errors[0]
    assert signature(fx.root, tmp_path) == before, "an input changed or an artefact was left behind"
