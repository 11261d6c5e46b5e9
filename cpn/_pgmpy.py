"""pgmpy, imported on first use: only building, fitting and saving a network need it.

pgmpy imports torch, which takes seconds; reading a saved network and scoring with it do not need
either (:mod:`cpn.xmlbif`). pgmpy also calls ``logging.basicConfig(level=INFO)`` when imported; a
library must not configure the host's logging, so the root logger is put back as it was.
"""

from __future__ import annotations

import logging

__all__ = ["pgmpy_classes"]


def pgmpy_classes():
    """``(DiscreteBayesianNetwork, TabularCPD, XMLBIFReader, XMLBIFWriter)``, importing pgmpy once."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork
        from pgmpy.readwrite import XMLBIFReader, XMLBIFWriter
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return DiscreteBayesianNetwork, TabularCPD, XMLBIFReader, XMLBIFWriter
