"""Run the docstring examples of the sepsiscope library modules."""

import doctest
import importlib

import pytest

MODULES = ["sepsiscope.models", "sepsiscope.runinfo"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
