"""SepsisCPN: fit / predict / explain / save / load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pgmpy.factors.discrete import TabularCPD
from pgmpy.inference import VariableElimination
from sklearn.metrics import roc_auc_score

from cpn import SepsisCPN
from ehr.artefacts import ModelFormatError
from ehr.estimator import Labels
from cpn.structure import SEPSIS_STATES, TARGET
from ehr.schema import SchemaError


def test_fit_predict_learns_signal(fitted_cpn, sampled_screens):
    p = fitted_cpn.predict_proba(sampled_screens)
    assert p.shape == (len(sampled_screens), 2)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert roc_auc_score(sampled_screens["label"], p[:, 1]) > 0.75
    assert set(fitted_cpn.half_life_scale_) == {"vital", "lab", "blood_gas"}
    h = fitted_cpn.em_history_
    assert all(b >= a - 1e-6 for a, b in zip(h, h[1:]))  # EM (MAP) never gets worse here


def _with_every_column(screens, model):
    """``screens`` plus, as all-NaN, the columns the model was fitted on that they lack (never measured)."""
    return screens.reindex(columns=[*screens.columns, *(c for c in model.features_in_ if c not in screens)])


def test_explanations_match_brute_force_and_pgmpy(fitted_cpn, tiny_screens):
    tiny_screens = _with_every_column(tiny_screens, fitted_cpn)
    ex = fitted_cpn.explain(tiny_screens)
    assert set(ex.columns) >= {"stay_id", "screen_time", "model", "feature", "value", "state", "age_h",
                               "weight", "contribution", "baseline"}
    from ehr.schema import validate
    validate(ex, "explanations")
    ev, _ = fitted_cpn._evidence(tiny_screens)
    eng = fitted_cpn.engine_
    sep = np.array([s in SEPSIS_STATES for s in eng_states(fitted_cpn)])

    def log_odds(post):
        return np.log10(post[..., sep].sum(-1)) - np.log10(post[..., ~sep].sum(-1))

    prior = log_odds(eng.posterior({})[0])
    full = log_odds(eng.posterior(ev))
    for r in range(len(tiny_screens)):
        rows = ex[(ex.stay_id == tiny_screens.stay_id.iloc[r]) & (ex.screen_time == tiny_screens.screen_time.iloc[r])]
        total = rows.loc[rows.feature == "total", "contribution"].item()
        assert total == pytest.approx(full[r] - prior, abs=1e-9)
        for _, item in rows[rows.feature != "total"].iterrows():
            v = item.feature
            alone = log_odds(eng.posterior({v: ev[v][r:r + 1]})[0]) - prior
            without = {k: a[r:r + 1] for k, a in ev.items() if k != v}
            ctx = full[r] - log_odds(eng.posterior(without)[0])
            assert item.contribution == pytest.approx(alone, abs=1e-9)
            assert item.baseline == pytest.approx(ctx, abs=1e-9)
    # pgmpy reference for the whole evidence of one screen (fresh model per query)
    net = fitted_cpn.network_
    r = 2
    ve = [TabularCPD(v, a.shape[1], [[float(x)] for x in a[r]],
                     state_names={v: list(net.get_cpds(v).state_names[v])})
          for v, a in ev.items() if not np.isnan(a[r]).any()]
    q = VariableElimination(net.copy()).query([TARGET], virtual_evidence=ve, show_progress=False)
    assert log_odds(np.asarray(q.values)) - prior == pytest.approx(full[r] - prior, abs=1e-9)
    # the septic stay's screens carry more evidence for sepsis than the other's
    tot = ex[ex.feature == "total"].set_index("stay_id")["contribution"]
    assert tot.loc[10].mean() > tot.loc[20].mean()


def eng_states(model):
    return model.network_.get_cpds(TARGET).state_names[TARGET]


def test_save_load_roundtrip_and_version_check(fitted_cpn, tiny_screens, tmp_path):
    tiny_screens = _with_every_column(tiny_screens, fitted_cpn)
    d = fitted_cpn.save(tmp_path / "m")
    meta = json.loads((d / "model.json").read_text())
    assert meta["kind"] == "cpn" and meta["state"]["evidence_nodes"] == fitted_cpn.features_
    assert meta["features"] == fitted_cpn.features_in_ and set(meta["files"]) == {"network.xml"}
    back = SepsisCPN.load(d)
    np.testing.assert_allclose(back.predict_proba(tiny_screens), fitted_cpn.predict_proba(tiny_screens),
                               atol=1e-12)
    assert back.half_lives_ == pytest.approx(fitted_cpn.half_lives_)
    meta["format_version"] = 999
    (d / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="format_version 999"):
        SepsisCPN.load(d)
    with pytest.raises(ModelFormatError, match="model.json: not found"):
        SepsisCPN.load(tmp_path)


def test_network_file_is_confined_and_checked(fitted_cpn, tmp_path):
    """``/etc/passwd`` or another model's network cannot be read through a model directory."""
    d = fitted_cpn.save(tmp_path / "m")
    outside = tmp_path / "elsewhere.xml"
    outside.write_bytes((d / "network.xml").read_bytes())
    (d / "network.xml").unlink()
    (d / "network.xml").symlink_to(outside)
    with pytest.raises(ModelFormatError, match="outside the model directory"):
        SepsisCPN.load(d)


def test_scoring_refuses_screens_without_a_fitted_column(fitted_cpn, tiny_screens):
    """The CPN used to score screens without ``hr`` as if it had never been measured."""
    assert {"hr", "hr_age_h", "temp", "lact", "department"} <= set(fitted_cpn.features_in_)
    full = _with_every_column(tiny_screens, fitted_cpn)
    assert fitted_cpn.predict_proba(full).shape == (len(full), 2)
    for method in (fitted_cpn.predict_proba, fitted_cpn.explain, fitted_cpn.posterior,
                   fitted_cpn.bayes_factors):
        with pytest.raises(SchemaError, match=r"missing column\(s\) hr that this cpn model"):
            method(full.drop(columns="hr"))


def test_labels_give_the_onset_hours(sampled_screens):
    """``Labels.onset_in_h`` is the CPN's target: the same fit as from the screens' own column."""
    s = sampled_screens.iloc[:1200]
    kw = dict(half_lives="prior", max_iter=3)
    a = SepsisCPN("physionet", **kw).fit(s)
    b = SepsisCPN("physionet", **kw).fit(s.drop(columns="onset_in_h"), Labels(s["onset_in_h"].to_numpy()))
    np.testing.assert_array_equal(a.predict_proba(s), b.predict_proba(s))
    c = SepsisCPN("physionet", **kw).fit(s, Labels(np.full(len(s), np.nan)))
    assert not np.allclose(c.predict_proba(s), a.predict_proba(s))


def test_unfitted_and_params():
    m = SepsisCPN("full", pseudo_count=2.0)
    assert m.get_params()["pseudo_count"] == 2.0
    with pytest.raises(RuntimeError, match="not fitted"):
        m.predict_proba(None)
    with pytest.raises(ValueError, match="half_lives"):
        SepsisCPN(half_lives="bogus").fit(pd.DataFrame({"stay_id": [1], "onset_in_h": [np.nan]}))


def test_half_life_search_goes_past_the_grid_end():
    """A measurement that stays informative for the whole stay: the held-out likelihood keeps
    rising with the half-life, so the search must walk past the grid's upper end (x2 steps)."""
    from cpn import model as cpn_model

    rng = np.random.default_rng(4)
    rows = []
    for stay in range(300):
        septic = rng.random() < 0.4
        hr = 135.0 if septic else 72.0
        for h in range(24):  # heart rate charted once, at admission; its age grows every hour
            rows.append({"stay_id": stay, "hr": hr, "hr_age_h": float(h),
                         "onset_in_h": 30.0 - h if septic else np.nan})
    s = pd.DataFrame(rows)
    m = SepsisCPN("physionet", half_life_grid=(0.5, 1.0), max_iter=5, random_state=0).fit(s)
    assert m.half_life_scale_["vital"] == 1.0 * 2 ** cpn_model.HALF_LIFE_MAX_STEPS
    assert m.half_lives_["hr"] == pytest.approx(4.0 * 2 ** cpn_model.HALF_LIFE_MAX_STEPS)


def test_half_lives_are_chosen_with_a_shorter_provisional_em(monkeypatch, sampled_screens):
    from cpn import model as cpn_model

    calls = []
    real = cpn_model.fit_em

    def spy(*args, **kwargs):
        calls.append(kwargs["max_iter"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cpn_model, "fit_em", spy)
    m = SepsisCPN("physionet", half_life_grid=(1.0,), max_iter=6, half_life_em_iter=2).fit(
        sampled_screens.iloc[:1500])
    assert calls == [2, 6] and m.get_params()["half_life_em_iter"] == 2
    calls.clear()
    SepsisCPN("physionet", half_lives="prior", max_iter=6).fit(sampled_screens.iloc[:1500])
    assert calls == [6]


def test_fit_allocates_on_small_pages_and_restores_the_setting(tiny_screens, monkeypatch):
    # numpy's huge-page madvise makes the first touch of fresh memory slow on a VM (cpn.model.small_pages):
    # off while fitting, as it was afterwards
    import numpy as np

    from cpn import model as model_module

    seen = []
    real = model_module.EvidenceBuilder.__init__

    def spy(self, *args, **kwargs):
        seen.append(np._core.multiarray._get_madvise_hugepage())
        real(self, *args, **kwargs)

    monkeypatch.setattr(model_module.EvidenceBuilder, "__init__", spy)
    before = np._core.multiarray._get_madvise_hugepage()
    model_module.SepsisCPN(half_lives="prior", max_iter=2).fit(tiny_screens)
    assert seen == [False]
    assert np._core.multiarray._get_madvise_hugepage() == before
