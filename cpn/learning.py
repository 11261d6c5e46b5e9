"""Parameter learning on the batched engine: EM with a Dirichlet prior, and decay half-lives.

Every CPD is re-estimated as ``(expected counts + pseudo_count) / column sum`` (the MAP estimate
under a symmetric Dirichlet prior). For families whose variables are all observed the expected
counts are plain counts; for latent families they come from an adjoint sweep
(:meth:`cpn.inference.InferenceEngine.expected_counts`: the compiled counts program of
:mod:`cpn.counts` where numba is installed, the einsum adjoint otherwise), so one EM iteration
costs a few batched inference passes.

The seam for data that does not sit in one process: :func:`run_em` takes the E-step as a
function ``e_step() -> (summed expected counts, summed log-likelihood)`` of the engine's current
CPDs, so the counts may be the sum of ``engine.expected_counts`` over partitions computed
elsewhere (:mod:`cpn.partitioned`) before :func:`map_cpds`, the M-step, runs here. Expected
counts and log-likelihoods are sums over rows, hence over any split of the rows.

Examples
--------
>>> import numpy as np
>>> from cpn.inference import InferenceEngine
>>> eng = InferenceEngine(["A", "B"], {"A": 2, "B": 2}, {"A": [], "B": ["A"]},
...     {"A": np.array([.5, .5]), "B": np.array([[.5, .5], [.5, .5]])}, "A", ["A", "B"])
>>> ev = {"A": np.eye(2)[[0, 0, 1, 1]], "B": np.eye(2)[[0, 0, 1, 0]]}
>>> hist = fit_em(eng, ev, pseudo_count=0.0, max_iter=1)
>>> eng.cpds["B"].round(2).tolist()
[[1.0, 0.5], [0.0, 0.5]]
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["fit_em", "run_em", "map_cpds", "conditional_loglik", "search_half_lives"]

logger = logging.getLogger(__name__)


def map_cpds(counts: dict, pseudo_count: float) -> dict:
    """Normalise expected counts plus a symmetric Dirichlet pseudo-count into CPDs."""
    out = {}
    for v, c in counts.items():
        c = c + pseudo_count
        s = c.sum(axis=0, keepdims=True)
        k = c.shape[0]
        out[v] = np.where(s > 0, c / np.where(s > 0, s, 1.0), 1.0 / k)
    return out


def fit_em(engine, evidence: dict, *, pseudo_count: float = 1.0, max_iter: int = 30,
           tol: float = 1e-5, fixed=(), batch_size: int = 2048, progress=None,
           backend: str = "auto") -> list[float]:
    """Run EM on ``engine`` (its CPDs are the starting point and are updated in place).

    Parameters
    ----------
    evidence : dict
        Evidence per node for every training row (the target included, as hard evidence).
    pseudo_count : float
        Dirichlet pseudo-count added to every cell.
    max_iter, tol : int, float
        Stop after ``max_iter`` iterations or when the mean log-likelihood improves by < ``tol``.
    fixed : iterable of str
        Nodes whose CPDs are kept as they are.
    progress : callable or None
        Called as ``progress(iteration, mean_loglik)`` after each iteration.
    backend : {"auto", "numba", "numpy"}
        The E-step's (:meth:`~cpn.inference.InferenceEngine.expected_counts`).

    Returns
    -------
    list of float
        Mean log-likelihood per row at each iteration (non-decreasing up to the prior's effect).
    """
    n = len(next(iter(evidence.values()))) if evidence else 1
    return run_em(engine, lambda: engine.expected_counts(evidence, batch_size=batch_size, backend=backend), n,
                  pseudo_count=pseudo_count, max_iter=max_iter, tol=tol, fixed=fixed, progress=progress)


def run_em(engine, e_step, n_rows: int, *, pseudo_count: float = 1.0, max_iter: int = 30, tol: float = 1e-5,
           fixed=(), progress=None) -> list[float]:
    """EM with the E-step given as ``e_step() -> (counts, loglik)`` at the engine's current CPDs.

    ``counts`` (node -> array of the CPD's shape) and ``loglik`` are sums over all ``n_rows``
    training rows, wherever they were computed; the M-step (:func:`map_cpds`) and the stopping
    rule are :func:`fit_em`'s, which is ``run_em`` over one batch of evidence.
    """
    history: list[float] = []
    for it in range(max_iter):
        counts, ll = e_step()
        new = map_cpds(counts, pseudo_count)
        for v in fixed:
            new[v] = engine.cpds[v]
        engine.set_cpds(new)
        history.append(ll / n_rows)
        logger.debug("EM iteration %d: mean log-likelihood %.6f", it, ll / n_rows)
        if progress is not None:
            progress(it, ll / n_rows)
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
            break
    return history


def conditional_loglik(engine, evidence: dict, target_state: np.ndarray, *,
                       batch_size: int = 4096) -> float:
    """Mean ``log P(target = true state | evidence)`` (the half-life selection criterion)."""
    post = engine.posterior(evidence, batch_size=batch_size)
    p = post[np.arange(len(target_state)), target_state]
    return float(np.mean(np.log(np.clip(p, 1e-300, None))))


def search_half_lives(hl: dict, group_of, grid, score_many, *, max_steps: int = 4) -> tuple[dict, dict]:
    """Choose one multiplier of the half-lives ``hl`` per group, group after group.

    ``group_of(key)`` names a half-life's group; ``score_many(list of half-life dicts)`` returns
    the held-out mean log-likelihood of each (a group's whole grid in one call, one pass over
    partitioned data). A best multiplier at an end of ``grid`` is no optimum: the search goes on
    outwards (x2 per step, at most ``max_steps`` steps) while the likelihood improves.
    Returns ``(half-lives, {group: multiplier})``.

    >>> best, scale = search_half_lives({"hr": 2.0}, lambda k: "vital", (0.5, 1.0),
    ...                                 lambda cands: [-abs(c["hr"] - 4.0) for c in cands])
    >>> best, scale
    ({'hr': 4.0}, {'vital': 2.0})
    """
    groups: dict = {}
    for k in hl:
        groups.setdefault(group_of(k), []).append(k)
    best, scale = dict(hl), {}
    grid = sorted(float(m) for m in grid)
    for g, keys in groups.items():
        def candidate(mult, keys=keys):
            return {**best, **{k: hl[k] * mult for k in keys}}

        tried = dict(zip(grid, score_many([candidate(m) for m in grid])))
        for step, end in ((0.5, 0), (2.0, -1)):
            m = grid[end]
            for _ in range(max_steps):
                if max(tried, key=tried.get) != m:
                    break
                m *= step
                tried[m] = score_many([candidate(m)])[0]
        m = max(tried, key=tried.get)
        scale[g] = float(m)
        best.update({k: hl[k] * m for k in keys})
        logger.info("half-life group %s: multiplier %g (held-out loglik %s)", g, m,
                    {k: round(v, 5) for k, v in sorted(tried.items())})
    return best, scale
