"""The notebooks in notebooks/: stored without outputs, parameterised by their first cell.

`make test` executes every notebook (nbmake, ``--nbmake`` in pyproject's addopts, ``notebooks`` in
testpaths) with the small synthetic defaults of that first cell; this module checks what must
hold for that and for papermill runs on real data (``papermill NB OUT -p source physionet ...``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:5] == ["01_quickstart", "02_stacking_experiments", "03_alarm_explanations", "04_fusion_ablations",
                         "05_ddl_cxr"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code), \
        f"{path.name}: clear the outputs before committing (jupyter nbconvert --clear-output --inplace)"
    assert book.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_holds_the_papermill_parameters(path):
    import papermill

    book = nbformat.read(path, as_version=4)
    first = book.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    # every line of the first cell is a literal assignment that papermill can read and override
    tree = ast.parse(first.source)
    names = [t.id for node in tree.body for t in node.targets]
    assert all(isinstance(node, ast.Assign) for node in tree.body)
    assert list(papermill.inspect_notebook(str(path))) == names
    for cell in book.cells[1:]:
        if cell.cell_type == "code":
            ast.parse(cell.source)


def test_the_stacking_notebook_switches_to_physionet_in_one_cell():
    import papermill

    path = next(p for p in NOTEBOOKS if p.stem == "02_stacking_experiments")
    params = papermill.inspect_notebook(str(path))
    assert params["source"]["default"] == '"synthetic"'
    assert {"physionet_zip", "cache", "fits_cache", "n_splits", "schemes", "metas"} <= set(params)
