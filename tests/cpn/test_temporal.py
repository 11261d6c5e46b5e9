"""TemporalFilter: forward filter of the time-to-onset state over each stay's CPN posteriors."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpn.temporal import TemporalFilter

K = 5


def _random_filter(rng, power=1.0):
    f = TemporalFilter(emission_power=power)
    a = rng.dirichlet(np.ones(K), size=K) + np.eye(K)  # diagonal-heavy like real hourly chains
    f.transition_ = a / a.sum(axis=1, keepdims=True)
    f.initial_ = rng.dirichlet(np.ones(K))
    f.prior_ = rng.dirichlet(np.ones(K) * 3)
    return f


def _brute_force(f, screens, post):
    """Per stay, in time order: alpha_t ∝ L_t^w * (alpha_{t-1} @ A^gap), alpha_0 ∝ L_0^w * initial."""
    out = np.empty_like(post)
    for _, g in screens.groupby("stay_id"):
        idx = g.sort_values("screen_time").index.to_numpy()
        alpha, prev = None, None
        for i in idx:
            t = float(screens.at[i, "screen_time"])
            if alpha is None:
                pred = f.initial_
            else:
                pred = alpha @ np.linalg.matrix_power(f.transition_, int(round(t - prev)))
            a = (post[i] / f.prior_) ** f.emission_power * pred
            alpha, prev = a / a.sum(), t
            out[i] = alpha
    return out


def _screens(rng, lengths, gaps=False):
    rows = []
    for sid, n in enumerate(lengths):
        steps = rng.integers(1, 4, size=n) if gaps else np.ones(n, dtype=int)
        for t in np.cumsum(steps):
            rows.append((100 + sid, float(t)))
    s = pd.DataFrame(rows, columns=["stay_id", "screen_time"])
    return s.sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)  # any row order


def test_matches_pomegranate_dense_hmm_forward():
    torch = pytest.importorskip("torch")
    from pomegranate.distributions import Categorical
    from pomegranate.hmm import DenseHMM

    rng = np.random.default_rng(0)
    f = _random_filter(rng)
    n_stays, length = 3, 7
    s = pd.DataFrame({"stay_id": np.repeat(np.arange(n_stays), length),
                      "screen_time": np.tile(np.arange(length, dtype=float), n_stays)})
    post = rng.dirichlet(np.ones(K), size=len(s))
    got = f.filter(s, post).reshape(n_stays, length, K)

    hmm = DenseHMM([Categorical([[0.5, 0.5]]) for _ in range(K)], edges=f.transition_,
                   starts=f.initial_, ends=np.full(K, 0.1))
    emis = torch.tensor(np.log(post / f.prior_).reshape(n_stays, length, K), dtype=torch.float64)
    hmm = hmm.double()
    logf = hmm.forward(emissions=emis).numpy()
    ref = np.exp(logf - logf.max(axis=2, keepdims=True))
    ref /= ref.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(got, ref, atol=1e-9)


@pytest.mark.parametrize("power", [1.0, 0.3])
def test_matches_brute_force_with_gaps_and_shuffled_rows(power):
    rng = np.random.default_rng(1)
    f = _random_filter(rng, power)
    s = _screens(rng, [1, 5, 9, 3], gaps=True)
    post = rng.dirichlet(np.ones(K), size=len(s))
    np.testing.assert_allclose(f.filter(s, post), _brute_force(f, s, post), atol=1e-12)


def test_datetime_screen_times_equal_hours():
    rng = np.random.default_rng(2)
    f = _random_filter(rng)
    s = _screens(rng, [4, 6], gaps=True)
    post = rng.dirichlet(np.ones(K), size=len(s))
    s_dt = s.assign(screen_time=pd.Timestamp("2019-01-01") + pd.to_timedelta(s["screen_time"], unit="h"))
    np.testing.assert_allclose(f.filter(s_dt, post), f.filter(s, post), atol=1e-15)


def test_uninformative_posteriors_give_the_markov_chain():
    # posterior == prior means likelihood 1 for every state: the filter is the chain's prediction
    rng = np.random.default_rng(3)
    f = _random_filter(rng)
    s = pd.DataFrame({"stay_id": 1, "screen_time": np.arange(6.0)})
    out = f.filter(s, np.tile(f.prior_, (6, 1)))
    want = [f.initial_ @ np.linalg.matrix_power(f.transition_, t) for t in range(6)]
    np.testing.assert_allclose(out, want, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), cut=st.integers(1, 8))
def test_no_leakage_from_later_screens(seed, cut):
    """Output at hour t depends only on screens at or before t of the same stay."""
    rng = np.random.default_rng(seed)
    f = _random_filter(rng)
    s = _screens(rng, [9, 4, 7], gaps=True)
    post = rng.dirichlet(np.ones(K), size=len(s))
    base = f.filter(s, post)
    t_cut = np.sort(s.loc[s["stay_id"] == 100, "screen_time"].to_numpy())[min(cut, 8)]
    later = (s["stay_id"] == 100).to_numpy() & (s["screen_time"].to_numpy() > t_cut)
    post2 = post.copy()
    post2[later] = rng.dirichlet(np.ones(K), size=int(later.sum()))
    changed = f.filter(s, post2)
    np.testing.assert_array_equal(changed[~later], base[~later])
    # dropping the later rows altogether leaves the rest unchanged too
    kept = f.filter(s[~later], post[~later])
    np.testing.assert_allclose(kept, base[~later], atol=1e-15)
    if later.any():
        assert not np.allclose(changed[later], base[later])  # the test can see a change


def test_fit_counts_transitions_from_labels():
    s = pd.DataFrame({
        "stay_id": [1, 1, 1, 1, 2, 2, 3, 3],
        "screen_time": [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 2.0],
        #               gt48  24-48 24-48 12-24  none none  le6h  le6h (gap 2: not a one-step pair)
        "onset_in_h": [49.0, 48.0, 25.0, 24.0, np.nan, np.nan, 5.0, 3.0]})
    f = TemporalFilter(transition_pseudo_count=0.5).fit(s, prior=np.full(K, 0.2))
    want = np.zeros((K, K))
    want[4, 3] = want[3, 3] = want[3, 2] = want[4, 4] = 1
    np.testing.assert_array_equal(f.transition_counts_, want)
    np.testing.assert_allclose(f.transition_[4], (want[4] + 0.5) / 4.5)
    np.testing.assert_allclose(f.initial_, (np.array([1, 0, 0, 0, 2]) + 0.5) / 5.5)
    np.testing.assert_allclose(f.transition_.sum(axis=1), 1.0)
    # default prior = mean posterior
    post = np.random.default_rng(4).dirichlet(np.ones(K), size=len(s))
    np.testing.assert_allclose(TemporalFilter().fit(s, post).prior_, post.mean(axis=0))


def test_bad_input():
    s = pd.DataFrame({"stay_id": [1, 1], "screen_time": [0.0, 1.0], "onset_in_h": [np.nan, np.nan]})
    post = np.full((2, K), 0.2)
    with pytest.raises(RuntimeError, match="not fitted"):
        TemporalFilter().filter(s, post)
    with pytest.raises(ValueError, match="shape"):
        TemporalFilter().fit(s, post[:, :4])
    with pytest.raises(ValueError, match="screen_time"):
        TemporalFilter().fit(s.drop(columns="screen_time"), post)
    with pytest.raises(ValueError, match="posteriors row 1"):
        TemporalFilter().fit(s, np.vstack([post[0], [np.nan] * K]))
    with pytest.raises(ValueError, match="prior"):
        TemporalFilter().fit(s, prior=[0.0, 0.25, 0.25, 0.25, 0.25])
    f = TemporalFilter().fit(s, post)
    assert f.filter(s.iloc[:0], post[:0]).shape == (0, K)


def test_params_round_trip():
    f = TemporalFilter(emission_power=0.5)
    assert f.get_params() == {"transition_pseudo_count": 1.0, "emission_power": 0.5, "step_h": 1.0}
    assert f.set_params(step_h=2.0) is f and f.step_h == 2.0
    with pytest.raises(ValueError, match="bogus"):
        f.set_params(bogus=1)


def test_risk_sums_sepsis_states():
    filtered = np.array([[0.1, 0.2, 0.3, 0.1, 0.3]])
    np.testing.assert_allclose(TemporalFilter.risk(filtered), [0.7])


def test_docstring_examples():
    result = doctest.testmod(importlib.import_module("cpn.temporal"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
