"""cpn._evidence_kernel: the compiled likelihood rows equal numpy's (soft_evidence, and the decayed
rows of a concept leaf) on random states, ages and half-lives with every awkward case: no evidence
(state -1), missing, zero and infinite ages, infinite half-lives, one-state leaves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpn import decay, kernel
from cpn.decay import decayed_evidence, soft_evidence

pytestmark = pytest.mark.skipif(not kernel.available(), reason="numba is not installed")


def _numpy(monkeypatch):
    monkeypatch.setattr(decay, "_rows_kernel", lambda state, n_states: None)


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
    assert decay._rows_kernel(state, k) is not None  # (the kernel is loaded: any batch takes it)
    fast_soft, fast_decayed = soft_evidence(state, weight, k), decayed_evidence(state, age, half_life, k)
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
