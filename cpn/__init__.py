"""Causal probabilistic network: structure, discretisation, time decay, learning, fast exact
inference and Bayes-factor explanations."""

import logging as _logging

# pgmpy calls logging.basicConfig(level=INFO) when imported; a library must not configure the
# host's logging, so import it once here and put the root logger back as it was.
_root = _logging.getLogger()
_saved = (list(_root.handlers), _root.level)
import pgmpy.global_vars  # noqa: E402,F401

_root.handlers[:] = _saved[0]
_root.setLevel(_saved[1])
del _root, _saved

from .explain import bayes_factors
from .inference import InferenceEngine
from .model import SepsisCPN
from .structure import NetworkError, build_expert_network, load_network, save_network

__all__ = ["SepsisCPN", "InferenceEngine", "bayes_factors", "NetworkError", "build_expert_network",
           "load_network", "save_network"]
