"""Causal probabilistic network: structure, discretisation, time decay, learning, fast exact
inference and Bayes-factor explanations."""

# pgmpy (and the torch it imports) is imported only where a network object is built, fitted or
# saved (cpn._pgmpy); scoring a saved model reads its network with cpn.xmlbif. SepsisCPN (and the
# scikit-learn it subclasses, about 1.2 s to import) is imported on first use, so that
# cpn.scoring.CPNScorer can score a saved model without it.
from .explain import bayes_factors
from .inference import InferenceEngine
from .structure import NetworkError, build_expert_network, load_network, save_network

__all__ = ["SepsisCPN", "InferenceEngine", "bayes_factors", "NetworkError", "build_expert_network",
           "load_network", "save_network"]


def __getattr__(name):
    if name == "SepsisCPN":
        from .model import SepsisCPN

        return SepsisCPN
    raise AttributeError(f"module 'cpn' has no attribute {name!r}")
