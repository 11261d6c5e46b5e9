"""Run the docstring examples of every cpn module."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["cpn.decay", "cpn.discretise", "cpn.evidence", "cpn.explain", "cpn.inference", "cpn.plot",
           "cpn.learning", "cpn.model", "cpn.sampling", "cpn.structure"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
