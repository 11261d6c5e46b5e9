"""cpn._evidence_kernel: the compiled loops equal numpy's code. Likelihood rows (soft_evidence, and
the decayed rows of a concept leaf) on random states, ages and half-lives with every awkward case:
no evidence (state -1), missing, zero and infinite ages, infinite half-lives, one-state leaves.
State indices (concept_states, band_states) on values at, between and beyond the cuts, NaN, and
repeated cuts; the out-of-range error as numpy's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpn import decay, discretise, kernel
from cpn.decay import decayed_evidence, soft_evidence
from cpn.discretise import band_states, concept_states

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def _numpy(monkeypatch):
    monkeypatch.setattr(decay, "evidence_loops", lambda n_rows: None)
    monkeypatch.setattr(discretise, "_loops", lambda v, cuts: None)


def _cases(seed, n, k):
    rng = np.random.default_rng(seed)
    state = rng.integers(-2, k, n)
    age = rng.choice([np.nan, 0.0, np.inf, 1e4, 0.5], n)
    age = np.where(rng.random(n) < 0.5, rng.exponential(8.0, n), age)
    return state, age, rng.random(n)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.sampled_from([0, 1, 7, 3000]), k=st.integers(1, 6),
       half_life=st.sampled_from([0.25, 1.0, 4.0, 37.5, np.inf]))
def test_compiled_rows_equal_numpy(seed, n, k, half_life):
    state, age, weight = _cases(seed, n, k)
    assert decay.evidence_loops(n) is not None  # (the kernel is loaded: any batch takes it)
    fast_soft, fast_decayed = soft_evidence(state, weight, k), decayed_evidence(state, age, half_life, k)
    # int8 indices (the evidence builder's): the same rows, read without a copy
    np.testing.assert_array_equal(soft_evidence(state.astype(np.int8), weight, k), fast_soft)
    np.testing.assert_array_equal(decayed_evidence(state.astype(np.int8), age, half_life, k), fast_decayed)
    with pytest.MonkeyPatch.context() as mp:
        _numpy(mp)
        np.testing.assert_array_equal(fast_soft, soft_evidence(state, weight, k))
        ref = soft_evidence(state, np.nan_to_num(np.where(state < 0, np.nan, decay.decay_weight(
            np.where(np.isnan(age), 0.0, age), half_life))), k)
        np.testing.assert_array_equal(decayed_evidence(state, age, half_life, k), ref)
    np.testing.assert_array_equal(fast_decayed, ref)


def test_errors_as_numpy():
    state = np.array([0, 3])
    with pytest.raises(IndexError):  # a state out of range: numpy's error, no write out of bounds
        soft_evidence(state, np.ones(2), 3)
    with pytest.raises(ValueError, match="negative age"):
        decayed_evidence(np.array([0, 1]), np.array([1.0, -1.0]), 4.0, 2)
    with pytest.raises(ValueError, match="half_life_h"):
        decayed_evidence(np.array([0, 1]), np.array([1.0, 1.0]), 0.0, 2)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.sampled_from([0, 1, 9, 2500]),
       cuts=st.sampled_from([(), (37.0,), (35.1, 36.1, 38.1, 39.1), (1.0, 1.0, 2.0), (-np.inf, 0.0)]))
def test_compiled_states_equal_numpy(seed, n, cuts):
    rng = np.random.default_rng(seed)
    grid = np.array([*cuts, np.nan, np.inf, -np.inf, 36.0, 0.0, -0.0]) if cuts else np.array([np.nan, 1.0])
    v = np.where(rng.random(n) < 0.5, rng.choice(grid, n), rng.normal(36.5, 2.0, n))
    t = np.clip(np.where(np.isinf(v), 37.0, v), 25.0, 45.0)  # temp: plausible 25-45 degC
    assert discretise._loops(v, np.asarray(cuts, dtype=float)) is not None
    for dtype in (np.int64, np.int8):
        fast = band_states(v, cuts, dtype=dtype), concept_states("temp", t, cuts=cuts or None, dtype=dtype)
        with pytest.MonkeyPatch.context() as mp:
            _numpy(mp)
            ref = band_states(v, cuts), concept_states("temp", t, cuts=cuts or None)
        for a, b in zip(fast, ref):
            assert a.dtype == dtype and b.dtype == np.int64
            np.testing.assert_array_equal(a, b)
    # many cuts: indices beyond int8 come back as int64
    many = np.arange(300.0)
    np.testing.assert_array_equal(band_states(np.array([299.5, 5.0]), many, dtype=np.int8), [300, 6])


def test_out_of_range_value_names_the_first_row():
    v = np.full(3000, 37.0)
    v[[17, 2000]] = [60.0, 10.0]
    with pytest.raises(ValueError, match="value 60 at row 17 .* \\(2 row\\(s\\)\\)"):
        concept_states("temp", v, column="temp")
    assert discretise._loops(v, np.array([2.0, 1.0])) is None  # unsorted cuts: numpy decides


def test_rows_split_over_threads_equal_numpy(monkeypatch):
    state, age, weight = _cases(5, 3001, 4)
    v = np.where(state < 0, np.nan, age)
    monkeypatch.setattr(kernel, "SPLIT_ROWS", 100)  # 3001 rows -> 3 threads of about 1000
    monkeypatch.setenv("SEPSISCOPE_THREADS", "3")
    assert kernel.split_rows(lambda a, b: (a, b), 3001) == [(0, 1000), (1000, 2000), (2000, 3001)]
    fast = (soft_evidence(state, weight, 4), decayed_evidence(state, age, 7.5, 4),
            band_states(v, (1.0, 5.0), dtype=np.int8))
    _numpy(monkeypatch)
    ref = (soft_evidence(state, weight, 4), decayed_evidence(state, age, 7.5, 4), band_states(v, (1.0, 5.0)))
    for a, b in zip(fast, ref):
        np.testing.assert_array_equal(a, b)


def test_rows_written_into_a_given_buffer():
    state, age, weight = _cases(9, 50, 3)
    buf = np.empty((60, 3))
    got = decayed_evidence(state, age, 2.0, 3, out=buf[:50])
    assert np.shares_memory(got, buf)
    np.testing.assert_array_equal(got, decayed_evidence(state, age, 2.0, 3))
    np.testing.assert_array_equal(soft_evidence(state, weight, 3, out=buf[10:]), soft_evidence(state, weight, 3))
    with pytest.raises(ValueError, match="C-ordered float64 array of shape \\(50, 3\\)"):
        soft_evidence(state, weight, 3, out=np.empty((50, 3), dtype=np.float32))
