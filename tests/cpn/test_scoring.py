"""CPNScorer: a saved CPN read for scoring without scikit-learn gives SepsisCPN's numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cpn import SepsisCPN
from cpn.scoring import CPNScorer
from sepsiscope.models import load_scorer, model_name_of


@pytest.fixture(scope="module")
def saved(fitted_cpn, tmp_path_factory):
    return fitted_cpn.save(tmp_path_factory.mktemp("cpn") / "cpn")


def test_the_light_scorer_scores_and_explains_as_the_estimator(saved, sampled_screens):
    full, light = SepsisCPN.load(saved), CPNScorer.load(saved)
    s = sampled_screens.iloc[:300]
    np.testing.assert_array_equal(light.predict_proba(s), full.predict_proba(s))
    pd.testing.assert_frame_equal(light.explain(s.iloc[:20]), full.explain(s.iloc[:20]))
    p_light, e_light = light.predict_explain(s, [3, 7])
    p_full, e_full = full.predict_explain(s, [3, 7])
    np.testing.assert_array_equal(p_light, p_full)
    pd.testing.assert_frame_equal(e_light, e_full)
    assert light.half_lives_ == full.half_lives_ and light.half_life_scale_ == full.half_life_scale_
    assert light.required_columns == full.required_columns and light.model_name == full.model_name == "cpn"
    with pytest.raises(Exception, match="missing column"):
        light.predict_proba(s.drop(columns=[light.required_columns[0]]))


def test_the_registry_reads_a_cpn_with_its_scorer(saved):
    assert type(load_scorer(saved)) is CPNScorer
    assert model_name_of(saved) == "cpn"


def test_scoring_a_saved_cpn_imports_neither_sklearn_nor_pgmpy_nor_numba(saved, sampled_screens, tmp_path):
    """What keeps ``sepsiscope explain`` under 2 s: about 1.2 s of scikit-learn (scipy.stats), 1.5 s
    of numba and the compiled kernel, and pgmpy with torch are never imported for one stay."""
    screens = tmp_path / "s.parquet"
    sampled_screens.iloc[:50].to_parquet(screens)
    code = (
        "import sys\n"
        "import pandas as pd\n"
        "from sepsiscope.models import load_scorer\n"
        f"m = load_scorer({str(saved)!r})\n"
        f"s = pd.read_parquet({str(screens)!r})\n"
        "p, e = m.predict_explain(s, [0])\n"
        "assert len(e) and p.shape == (50, 2)\n"
        "print(sorted(k for k in ('sklearn', 'pgmpy', 'numba', 'torch', 'scipy.stats') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_large_table_scored_slice_by_slice_gives_the_same_numbers(saved, sampled_screens, monkeypatch):
    """CPNScoring.posterior scores a table of more than SCORE_ROWS screens in slices (each slice's
    evidence built just before the engine reads it): the numbers of one pass, bit for bit, with the
    derived trend leaves (which read the stay's earlier screens, in other slices) and the leaves a
    model was not trained on left out as before."""
    from cpn import scoring

    m = SepsisCPN.load(saved)
    s = sampled_screens.iloc[:1000].copy()
    s["stay_id"] = np.arange(len(s)) // 40  # stays of 40 hourly screens, cut across slices
    s["screen_time"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(len(s)) % 40, unit="h")
    whole = m.posterior(s)
    monkeypatch.setattr(scoring, "SCORE_ROWS", 128)
    np.testing.assert_array_equal(m.posterior(s), whole)
    np.testing.assert_array_equal(m.predict_proba(s)[:, 1], whole @ scoring._GROUPS[:, 0])
    monkeypatch.setattr(m, "features_in_", [c for c in m.features_in_ if c != "hr"], raising=False)
    monkeypatch.setattr(scoring, "SCORE_ROWS", 10 ** 6)
    without_hr = m.posterior(s)
    assert not np.array_equal(without_hr, whole)
    monkeypatch.setattr(scoring, "SCORE_ROWS", 300)
    np.testing.assert_array_equal(m.posterior(s), without_hr)
