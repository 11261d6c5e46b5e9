"""The CPN fitted as map-reduce over parts (cpn/partitioned.py) is the single-process fit."""

from __future__ import annotations

import numpy as np
import pytest

from cpn import SepsisCPN
from cpn.learning import fit_em, run_em
from cpn.partitioned import fit_partitioned
from ehr.partitions import bucket_of
from ehr.screens import build_screens
from ehr.synthetic import generate_cohort
from sepsiscope.scale.cluster import SerialMapper


@pytest.fixture(scope="module")
def screens():
    c = generate_cohort(160, seed=11)
    return build_screens(c.events, c.stays, c.cxr)


def _parts(screens, n):
    b = bucket_of(screens["stay_id"], n)
    return [screens.loc[b == k] for k in range(n)]


def test_learned_half_lives_subsample_and_em_match_the_single_fit(screens):
    # max_rows below the table size: the same stays must be drawn; half-lives learned on the same holdout
    kw = dict(network="full", max_iter=4, half_life_em_iter=2, half_life_grid=(0.5, 2.0),
              max_rows=int(0.6 * len(screens)), random_state=3, discriminative_iter=0)
    one = SepsisCPN(**kw).fit(screens)
    parts = fit_partitioned(SepsisCPN(**kw), _parts(screens, 3), SerialMapper())
    assert parts.n_train_rows_ == one.n_train_rows_ < len(screens)
    assert parts.half_life_scale_ == one.half_life_scale_ and parts.half_lives_ == pytest.approx(one.half_lives_)
    assert parts.features_in_ == one.features_in_
    for v, cpd in one.engine_.cpds.items():
        np.testing.assert_allclose(parts.engine_.cpds[v], cpd, rtol=0, atol=1e-9, err_msg=v)
    np.testing.assert_allclose(parts.em_history_, one.em_history_, rtol=1e-12)
    np.testing.assert_allclose(parts.predict_proba(screens), one.predict_proba(screens), rtol=0, atol=1e-12)
    assert parts.data_hashes_.keys() == {"screens_parts"}


def test_a_partitioned_fit_saves_and_loads(screens, tmp_path):
    parts = fit_partitioned(SepsisCPN("full", half_lives="prior", max_iter=1, discriminative_iter=3),
                            _parts(screens, 2), SerialMapper())
    back = SepsisCPN.load(parts.save(tmp_path / "cpn"))
    assert len(back.discriminative_history_) == 3
    np.testing.assert_array_equal(back.predict_proba(screens), parts.predict_proba(screens))


def test_derived_leaves_fit_by_parts_as_in_one_process(screens):
    # the trends read a stay's earlier screens; parts hold whole stays, so the evidence is the same
    from cpn.structure import build_expert_network

    kw = dict(half_lives="prior", max_iter=2, discriminative_iter=0)
    one = SepsisCPN(build_expert_network("full", derived=True), **kw).fit(screens)
    parts = fit_partitioned(SepsisCPN(build_expert_network("full", derived=True), **kw), _parts(screens, 3),
                            SerialMapper())
    for v, cpd in one.engine_.cpds.items():
        np.testing.assert_allclose(parts.engine_.cpds[v], cpd, rtol=0, atol=1e-9, err_msg=v)


def test_the_discriminative_refinement_by_parts_is_the_single_fit(screens):
    # each step's gradient counts are a sum over the parts (3e-15 apart here; Adam divides by the root
    # of the squared gradients, so on a 5-screen table rounding in near-zero gradients grows to 3e-4)
    kw = dict(network="full", half_lives="prior", max_iter=3, discriminative_iter=8)
    one = SepsisCPN(**kw).fit(screens)
    parts = fit_partitioned(SepsisCPN(**kw), _parts(screens, 3), SerialMapper())
    assert len(parts.discriminative_history_) == len(one.discriminative_history_) == 8
    np.testing.assert_allclose([h["cll"] for h in parts.discriminative_history_],
                               [h["cll"] for h in one.discriminative_history_], rtol=1e-9)
    assert parts.discriminative_history_[-1]["cll"] > parts.discriminative_history_[0]["cll"]
    np.testing.assert_allclose(parts.predict_proba(screens), one.predict_proba(screens), rtol=0, atol=1e-9)
    # every CPD, those of leaves without evidence (potassium, PTT, ... in the synthetic cohort) and of
    # the always-observed context roots too: their gradient is zero, not rounding noise for Adam to follow
    for v, cpd in one.engine_.cpds.items():
        np.testing.assert_allclose(parts.engine_.cpds[v], cpd, rtol=0, atol=1e-12, err_msg=v)
    em_only = SepsisCPN(**{**kw, "discriminative_iter": 0}).fit(screens)
    assert np.abs(em_only.predict_proba(screens) - one.predict_proba(screens)).max() > 1e-3  # (not a no-op)


def test_early_stopped_refinement_has_no_partitioned_fit(screens):
    with pytest.raises(ValueError, match="no partitioned fit"):
        fit_partitioned(SepsisCPN("full", discriminative_iter=5, discriminative_early_stopping=True),
                        _parts(screens, 2), SerialMapper())


def test_parts_must_hold_whole_stays_and_the_same_columns(screens):
    a, b = _parts(screens, 2)
    stray = a.iloc[:1]
    with pytest.raises(ValueError, match="a stay appears in more than one part"):
        fit_partitioned(SepsisCPN("full", half_lives="prior", max_iter=1), [a, b, stray], SerialMapper())
    with pytest.raises(ValueError, match="part 1 has columns"):
        fit_partitioned(SepsisCPN("full", half_lives="prior", max_iter=1), [a, b.drop(columns="hr")], SerialMapper())


def test_run_em_over_split_counts_is_fit_em(screens):
    """The seam: E-step counts summed over any split of the rows give fit_em's parameters."""
    m = SepsisCPN("physionet", half_lives="prior", max_iter=1).fit(screens)
    ev, _ = m._evidence(screens)
    from cpn.evidence import target_states
    from cpn.structure import TARGET, TARGET_STATES

    ev[TARGET] = np.eye(len(TARGET_STATES))[target_states(screens["onset_in_h"])]
    start = dict(m.engine_.cpds)
    fit_em(m.engine_, ev, max_iter=3)
    whole = dict(m.engine_.cpds)
    m.engine_.set_cpds(start)
    halves = [{v: e[:500] for v, e in ev.items()}, {v: e[500:] for v, e in ev.items()}]

    def e_step():
        (c1, l1), (c2, l2) = (m.engine_.expected_counts(h) for h in halves)
        return {v: c1[v] + c2[v] for v in c1}, l1 + l2

    run_em(m.engine_, e_step, len(screens), max_iter=3)
    for v in whole:
        np.testing.assert_allclose(m.engine_.cpds[v], whole[v], rtol=0, atol=1e-12, err_msg=v)
