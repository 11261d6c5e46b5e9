"""Run the docstring examples of the imaging model's interface modules."""

import doctest
import importlib

import pytest

MODULES = ["imaging.estimator", "imaging.models", "imaging.scoring"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
