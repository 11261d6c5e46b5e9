"""Causal probabilistic network: structure, discretisation, time decay, learning, fast exact
inference and Bayes-factor explanations."""

# pgmpy (and the torch it imports) is imported only where a network object is built, fitted or
# saved (cpn._pgmpy); scoring a saved model reads its network with cpn.xmlbif.
from .explain import bayes_factors
from .inference import InferenceEngine
from .model import SepsisCPN
from .structure import NetworkError, build_expert_network, load_network, save_network

__all__ = ["SepsisCPN", "InferenceEngine", "bayes_factors", "NetworkError", "build_expert_network",
           "load_network", "save_network"]
