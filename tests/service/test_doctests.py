"""Run the docstring examples of the service modules and the FHIR reader."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["ehr.sources.fhir", "ehr.sources.readings", "sepsiscope.service.batching", "sepsiscope.service.engine",
           "sepsiscope.service.fhir_out", "sepsiscope.service.inputs", "sepsiscope.service.labels",
           "sepsiscope.service.scoring", "sepsiscope.service.security", "sepsiscope.service.stays",
           "sepsiscope.service.views", "sepsiscope.stay_screens"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
