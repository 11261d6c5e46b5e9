"""Read a saved network (XMLBIF, as pgmpy's ``XMLBIFWriter`` writes it) without importing pgmpy.

Scoring a saved CPN needs the network's states, node roles, parents and CPD tables, nothing of
pgmpy's model classes; importing pgmpy (which imports torch) costs seconds, which
``sepsiscope explain`` and the scoring service should not pay. :func:`read_xmlbif` reads the file
with ``xml.etree`` into an :class:`XmlbifNetwork`: a read-only object with the part of pgmpy's
``DiscreteBayesianNetwork`` interface that :func:`cpn.structure.validate_network`,
:func:`cpn.evidence.network_info` and :meth:`cpn.inference.InferenceEngine.from_pgmpy` use
(``nodes()``, ``nodes[v]``, ``edges()``, ``get_cpds(v)``, ``get_parents(v)``). It reads the
file the way pgmpy's ``XMLBIFReader.get_model`` does -- nodes in ``VARIABLE`` order, parents in
``GIVEN`` order, each ``TABLE`` read as floats in Fortran order over (state, parent
configuration), ``PROPERTY`` lines ``name = value`` as node attributes -- so an engine built from
either is the same, number for number (``tests/cpn/test_xmlbif.py``).

Examples
--------
>>> from cpn.structure import network_path
>>> net = read_xmlbif(network_path("physionet"))
>>> net.nodes["hr"]["role"], net.get_parents("hr"), net.get_cpds("sepsis").values.shape
('concept', ['circulation', 'inflammation'], (5, 3, 4, 4))
>>> net.get_cpds("hr").state_names["inflammation"]
['none', 'moderate', 'severe']
"""

from __future__ import annotations

import xml.etree.ElementTree as etree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["read_xmlbif", "XmlbifNetwork", "CPDTable"]


@dataclass(frozen=True)
class CPDTable:
    """One node's CPD: ``values[state, *parent states]``, as pgmpy's ``TabularCPD`` holds it."""

    variables: list        # [node, *parents]
    values: np.ndarray     # (card, *parent cards)
    state_names: dict      # node and each parent -> list of state names

    @property
    def variable(self) -> str:
        return self.variables[0]

    @property
    def variable_card(self) -> int:
        return int(self.values.shape[0])

    @property
    def cardinality(self) -> np.ndarray:
        return np.array(self.values.shape, dtype=int)


class _NodeView(dict):
    """Node name -> attributes; calling it gives itself, as ``net.nodes()`` does in networkx."""

    def __call__(self):
        return self


class XmlbifNetwork:
    """A network read from XMLBIF (see the module docstring); read-only."""

    def __init__(self, name: str, attributes: dict, cpds: dict):
        self.name = name
        self.nodes = _NodeView(attributes)
        self._cpds = cpds

    def edges(self) -> list[tuple[str, str]]:
        return [(p, v) for v in self.nodes for p in self.get_parents(v)]

    def get_cpds(self, node: str):
        return self._cpds.get(node)

    def get_parents(self, node: str) -> list[str]:
        cpd = self._cpds.get(node)
        return list(cpd.variables[1:]) if cpd is not None else []

    def get_cardinality(self, node: str) -> int:
        return self._cpds[node].variable_card


def _text(element, tag: str, where: str) -> str:
    found = element.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{where} has no {tag}")
    return found.text.strip()


def read_xmlbif(path, *, text: str | None = None) -> XmlbifNetwork:
    """Read an XMLBIF file (or its ``text``, read before) into an :class:`XmlbifNetwork`.

    Errors are :class:`~cpn.structure.NetworkError` naming the file. The network is not validated
    here: :func:`cpn.structure.validate_network` takes it as it takes a pgmpy network.
    """
    from .structure import NetworkError

    path = Path(path)
    try:
        root = etree.fromstring(text.encode("utf-8")) if text is not None else etree.parse(path).getroot()
        network = root.find("NETWORK")
        if network is None:
            raise ValueError("no NETWORK element")
        states, attributes = {}, {}
        for i, var in enumerate(network.findall("VARIABLE")):
            name = _text(var, "NAME", f"VARIABLE {i}")
            states[name] = [o.text for o in var.findall("OUTCOME")]
            attributes[name] = {}
            for prop in var.findall("PROPERTY"):
                key, sep, value = (prop.text or "").partition("=")
                if not sep:
                    raise ValueError(f"node '{name}': PROPERTY '{prop.text}' is not 'name = value'")
                attributes[name][key.strip()] = value.strip()
        cpds = {}
        for definition in network.findall("DEFINITION"):
            node = _text(definition, "FOR", "a DEFINITION")
            parents = [g.text for g in definition.findall("GIVEN")]
            unknown = [v for v in [node, *parents] if v not in states]
            if unknown:
                raise ValueError(f"DEFINITION of '{node}' names undeclared variable(s) {unknown}")
            table = np.array([float(x) for x in _text(definition, "TABLE", f"DEFINITION of '{node}'").split()])
            shape = [len(states[node])] + [len(states[p]) for p in parents]
            if table.size != int(np.prod(shape)):
                raise ValueError(f"the TABLE of '{node}' has {table.size} entries; its states and parents "
                                 f"need {int(np.prod(shape))}")
            # pgmpy reads (state, parent configuration) in Fortran order, then lays it out in C order
            values = table.reshape((shape[0], -1), order="F").reshape(shape)
            cpds[node] = CPDTable([node, *parents], values, {v: list(states[v]) for v in [node, *parents]})
        name = network.find("NAME")
        return XmlbifNetwork(name.text if name is not None else "", attributes, cpds)
    except (etree.ParseError, ValueError, OSError) as exc:
        raise NetworkError(f"{path}: cannot read the network: {exc}") from exc
