import doctest
import importlib

import pytest

MODULES = ["fusion.sequences", "fusion.embeddings", "fusion.networks", "fusion.training", "fusion.models",
           "fusion.explain", "fusion.robustness", "fusion._demo", "fusion.ablations", "fusion.latent", "fusion.ddl",
           "fusion.ddl_data", "fusion.ddl_model"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
