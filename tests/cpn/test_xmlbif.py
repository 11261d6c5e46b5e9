"""The pgmpy-free XMLBIF reader against pgmpy's on the same files, and a loaded model that scores
without importing pgmpy (or torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cpn import SepsisCPN
from cpn.evidence import network_info
from cpn.inference import InferenceEngine
from cpn.structure import TARGET, NetworkError, load_network, network_path, validate_network
from cpn.xmlbif import read_xmlbif


def _files(tmp_path_factory, fitted_cpn):
    d = fitted_cpn.save(tmp_path_factory.mktemp("m") / "cpn")
    return [network_path("physionet"), network_path("full"), d / "network.xml"]


@pytest.fixture(scope="module")
def network_files(tmp_path_factory, fitted_cpn):
    return _files(tmp_path_factory, fitted_cpn)


def test_reader_gives_pgmpys_network_exactly(network_files):
    for path in network_files:
        ref, got = load_network(path), validate_network(read_xmlbif(path), origin=str(path))
        assert list(got.nodes()) == list(ref.nodes())
        # the file's properties (pgmpy adds a node attribute 'weight', None, of its own)
        assert {v: got.nodes[v] for v in got.nodes()} == \
            {v: {k: a for k, a in ref.nodes[v].items() if k != "weight"} for v in ref.nodes()}
        assert sorted(got.edges()) == sorted(ref.edges())
        assert network_info(got) == network_info(ref)
        for v in ref.nodes():
            a, b = got.get_cpds(v), ref.get_cpds(v)
            assert a.variables == list(b.variables) and a.variable_card == b.variable_card
            assert a.state_names == {u: list(s) for u, s in b.state_names.items()}
            assert a.values.dtype == b.values.dtype and np.array_equal(a.values, b.values), v
        info = network_info(ref)
        nodes = info.evidence_nodes + [TARGET]
        e1, e2 = InferenceEngine.from_pgmpy(got, TARGET, nodes), InferenceEngine.from_pgmpy(ref, TARGET, nodes)
        assert (e1.nodes, e1.cards, e1.parents, e1.order) == (e2.nodes, e2.cards, e2.parents, e2.order)
        assert all(np.array_equal(e1.cpds[v], e2.cpds[v]) for v in e1.nodes)


def test_a_loaded_model_scores_as_one_read_with_pgmpy(network_files, fitted_cpn, sampled_screens):
    d = network_files[2].parent
    loaded = SepsisCPN.load(d)
    assert loaded.__dict__["_network"] is None  # pgmpy's network is read only when asked for
    slow = SepsisCPN.load(d)
    slow._setup(load_network(d / "network.xml"))
    s = sampled_screens.head(300)
    np.testing.assert_array_equal(loaded.predict_proba(s), slow.predict_proba(s))
    np.testing.assert_array_equal(loaded.predict_proba(s), fitted_cpn.predict_proba(s))
    # the network, once asked for, is pgmpy's; saving it again writes the same file
    assert loaded.network_.get_cpds("hr") == fitted_cpn.network_.get_cpds("hr")
    again = loaded.save(d.parent / "again")
    assert (again / "network.xml").read_bytes() == (d / "network.xml").read_bytes()


def test_loading_and_scoring_import_neither_pgmpy_nor_torch(network_files):
    code = ("import sys, numpy as np, pandas as pd; from sepsiscope.models import load_model; "
            f"m = load_model({str(network_files[2].parent)!r}); "
            "s = pd.DataFrame({c: [np.nan] for c in m.required_columns}); m.predict_proba(s); m.explain(s); "
            "print(sorted(k for k in ('pgmpy', 'torch', 'matplotlib') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]"]


@pytest.mark.parametrize("text, match", [
    ("<BIF><NETWORK><NAME>x</NAME>", "cannot read the network"),
    ("<BIF/>", "no NETWORK element"),
    ("<BIF><NETWORK><VARIABLE><NAME>a</NAME><OUTCOME>0</OUTCOME><OUTCOME>1</OUTCOME></VARIABLE>"
     "<DEFINITION><FOR>a</FOR><TABLE>0.5 0.3 0.2</TABLE></DEFINITION></NETWORK></BIF>", "has 3 entries"),
    ("<BIF><NETWORK><VARIABLE><NAME>a</NAME><OUTCOME>0</OUTCOME></VARIABLE>"
     "<DEFINITION><FOR>a</FOR><GIVEN>b</GIVEN><TABLE>1</TABLE></DEFINITION></NETWORK></BIF>", "undeclared"),
    ("<BIF><NETWORK><VARIABLE><NAME>a</NAME><PROPERTY>role</PROPERTY></VARIABLE></NETWORK></BIF>",
     "is not 'name = value'"),
])
def test_bad_files_are_network_errors_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(NetworkError, match=match) as err:
        read_xmlbif(path)
    assert str(path) in str(err.value)


def test_a_cycle_is_found_without_pgmpy(tmp_path):
    var = "<VARIABLE><NAME>{0}</NAME><OUTCOME>0</OUTCOME><OUTCOME>1</OUTCOME></VARIABLE>"
    cpd = "<DEFINITION><FOR>{0}</FOR><GIVEN>{1}</GIVEN><TABLE>0.5 0.5 0.5 0.5</TABLE></DEFINITION>"
    path = tmp_path / "loop.xml"
    path.write_text("<BIF><NETWORK>" + var.format("a") + var.format("b") + cpd.format("a", "b")
                    + cpd.format("b", "a") + "</NETWORK></BIF>")
    with pytest.raises(NetworkError, match=r"loop.xml: the graph has a cycle \[\('b', 'a'\), \('a', 'b'\)\]"):
        validate_network(read_xmlbif(path), origin=str(path))
