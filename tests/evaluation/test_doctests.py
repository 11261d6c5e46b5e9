"""Every docstring example in ``evaluation`` runs and passes (the same as ``--doctest-modules evaluation``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import evaluation

MODULES = sorted(m.name for m in pkgutil.walk_packages(evaluation.__path__, "evaluation."))


def test_every_module_is_found():
    assert {"evaluation.calibration", "evaluation.metrics", "evaluation.report",
            "evaluation.displays.curves"} <= set(MODULES)


@pytest.mark.parametrize("name", ["evaluation", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0
