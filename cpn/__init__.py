"""Causal probabilistic network: structure, discretisation, time decay, learning, fast exact
inference and Bayes-factor explanations."""

from .explain import bayes_factors
from .inference import InferenceEngine
from .model import FORMAT_VERSION, ModelFormatError, SepsisCPN
from .structure import NetworkError, build_expert_network, load_network, save_network

__all__ = ["SepsisCPN", "ModelFormatError", "FORMAT_VERSION", "InferenceEngine", "bayes_factors",
           "NetworkError", "build_expert_network", "load_network", "save_network"]
