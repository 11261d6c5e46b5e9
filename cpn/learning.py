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

__all__ = ["fit_em", "run_em", "refine_discriminative", "binary_target_evidence", "map_cpds", "conditional_loglik",
           "search_half_lives", "optimise_half_lives", "golden_section"]

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


_INV_PHI = float((np.sqrt(5.0) - 1.0) / 2.0)  # 0.618..., the golden-section ratio


def golden_section(f, lo: float, hi: float, *, tol: float = 0.05, known: dict | None = None) -> tuple[float, dict]:
    """Maximise a unimodal ``f`` on ``[lo, hi]`` by golden-section search (deterministic).

    Each step shrinks the bracket by 0.618 with one new evaluation, until it is narrower than
    ``tol``. ``known`` maps points already evaluated to their values (they are not re-evaluated,
    and the best of them is kept if it beats the points inside the bracket). Returns
    ``(argmax, {x: f(x)} for every point evaluated or known)``.

    >>> x, seen = golden_section(lambda x: -(x - 1.3) ** 2, 0.0, 4.0, tol=1e-3)
    >>> round(x, 2)
    1.3
    """
    seen = dict(known or {})

    def val(x):
        if x not in seen:
            seen[x] = float(f(x))
        return seen[x]

    a, b = float(lo), float(hi)
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    while b - a > tol:
        if val(c) >= val(d):
            b, d = d, c
            c = b - _INV_PHI * (b - a)
        else:
            a, c = c, d
            d = a + _INV_PHI * (b - a)
    mid = 0.5 * (a + b)
    val(mid)
    inside = {x: v for x, v in seen.items() if lo <= x <= hi}
    return max(inside, key=lambda x: (inside[x], -abs(x - mid))), seen


def optimise_half_lives(hl: dict, group_of, score_many, *, log2_bounds=(-6.0, 8.0), tol: float = 0.05,
                        sweeps: int = 2) -> tuple[dict, dict, dict]:
    """Choose a multiplier of the half-lives ``hl`` per group by a line search over its logarithm.

    Coordinate-wise (group after group, ``sweeps`` times): the held-out score is first profiled on
    whole powers of 2 of the multiplier across ``log2_bounds`` (one ``score_many`` call, the
    evidence for the profile curve), then refined by golden-section search
    (:func:`golden_section`) in the two grid intervals around the best grid point, down to ``tol``
    in log2 units (about 3.5 % of the half-life). Unlike a coarse grid, the multiplier is not
    confined to powers of 2, and a best multiplier at the upper bound (the held-out score still
    rising at the longest half-life tried) is reported as "no decay" rather than as a number.

    Parameters
    ----------
    hl : dict
        Starting half-lives (hours) per key.
    group_of : callable
        ``group_of(key)`` names a half-life's group; one multiplier per group.
    score_many : callable
        ``score_many(list of half-life dicts) -> list of float``: held-out score (higher is better).

    Returns
    -------
    half_lives : dict
    scale : dict group -> multiplier
    profile : dict group -> {"log2_multiplier": [...], "score": [...], "no_decay": bool}
        Every point evaluated in the last sweep, sorted; ``no_decay`` when the optimum is at the
        upper bound.

    Examples
    --------
    >>> best, scale, prof = optimise_half_lives({"hr": 2.0}, lambda k: "vital",
    ...     lambda cands: [-(np.log2(c["hr"]) - np.log2(6.0)) ** 2 for c in cands])
    >>> round(best["hr"], 1), round(scale["vital"], 2), prof["vital"]["no_decay"]
    (6.0, 3.0, False)
    """
    lo, hi = (float(b) for b in log2_bounds)
    if not hi > lo:
        raise ValueError(f"log2_bounds must be (low, high) with high > low, got {log2_bounds!r}")
    groups: dict = {}
    for k in hl:
        groups.setdefault(group_of(k), []).append(k)
    grid = np.arange(np.ceil(lo), np.floor(hi) + 1.0)
    grid = np.unique(np.concatenate([[lo], grid, [hi]]))
    log2_scale = {g: 0.0 for g in groups}
    profile: dict = {}
    for _ in range(max(1, int(sweeps))):
        for g, keys in groups.items():
            def candidate(x, keys=keys):
                return {**{k: hl[k] * 2.0 ** log2_scale[group_of(k)] for k in hl},
                        **{k: hl[k] * 2.0 ** x for k in keys}}

            known = dict(zip(grid.tolist(), map(float, score_many([candidate(x) for x in grid]))))
            i = int(np.argmax([known[x] for x in grid]))
            a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
            x, seen = golden_section(lambda x: score_many([candidate(x)])[0], a, b, tol=tol, known=known)
            log2_scale[g] = float(x)
            pts = sorted(seen)
            profile[g] = {"log2_multiplier": [float(p) for p in pts], "score": [float(seen[p]) for p in pts],
                          "no_decay": bool(x >= hi - tol)}
            logger.info("half-life group %s: multiplier %.3g%s (held-out score %.6f)", g, 2.0 ** x,
                        " (no decay: still improving at the bound)" if profile[g]["no_decay"] else "", seen[x])
    scale = {g: float(2.0 ** x) for g, x in log2_scale.items()}
    best = {k: hl[k] * scale[group_of(k)] for k in hl}
    return best, scale, profile


def _log_softmax_cols(eta: np.ndarray) -> np.ndarray:
    m = eta.max(axis=0, keepdims=True)
    return eta - m - np.log(np.exp(eta - m).sum(axis=0, keepdims=True))


def binary_target_evidence(groups: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Likelihood rows on the target for a binary outcome: ``groups[:, 0]`` (the target states that
    count as the event) for ``y == 1``, ``groups[:, 1]`` for ``y == 0``.

    >>> g = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> binary_target_evidence(g, np.array([1, 0])).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    y = np.asarray(y).astype(bool)
    return np.where(y[:, None], groups[None, :, 0], groups[None, :, 1]).astype(float)


#: gradients of the mean conditional log-likelihood below this are rounding noise (see below)
_GRADIENT_FLOOR = 1e-12


def refine_discriminative(engine, evidence: dict, target_ev: np.ndarray, *, target: str,
                          val_evidence: dict | None = None, val_score=None, max_iter: int = 20,
                          learning_rate: float = 0.1, l2: float = 1e-4, fixed=(), patience: int = 5,
                          optimizer: str = "gd", progress=None, counts=None) -> list[dict]:
    """Discriminative refinement of the engine's CPDs (in place): maximise the conditional
    log-likelihood ``sum_n log P(target evidence_n | E_n)`` of the target given the other evidence.

    Every CPD column is a softmax of free log-parameters ``eta``. The gradient of the conditional
    log-likelihood with respect to ``eta[x, pa]`` is ``D[x, pa] - theta[x, pa] * sum_x' D[x', pa]``
    with ``D = E[counts | E, target] - E[counts | E]``: the same exact expected-count machinery EM
    uses, both E-steps in one pass (:meth:`~cpn.inference.InferenceEngine.discriminative_counts`). An L2 pull
    ``l2 * |eta - eta_start|^2 / 2`` on the mean conditional log-likelihood keeps the solution near the generative one (with
    ``eta_start`` the starting CPDs, typically EM's); steps are Adam's. The result is a proper Bayesian
    network (every column a distribution), so explanations stay exact Bayes factors.

    Parameters
    ----------
    evidence : dict
        Evidence per node for the training rows, without the target.
    target_ev : ndarray (n, card[target])
        Likelihood rows on the target (hard or grouped, e.g. :func:`binary_target_evidence`).
    val_evidence, val_score : dict, callable
        Early stopping: ``val_score(engine)`` (higher is better) after every step; the best CPDs
        are kept and the search stops after ``patience`` steps without improvement.
    fixed : iterable of str
        Nodes whose CPDs stay as they are.
    counts : callable, optional
        ``counts() -> (D, cll)`` at the engine's current CPDs, in place of
        ``engine.discriminative_counts(evidence, target_ev)``: a sum over partitions
        (:mod:`cpn.partitioned`); ``evidence`` is then unused and ``target_ev`` only gives ``n``.

    Returns
    -------
    list of dict
        Per iteration: ``{"cll": mean training conditional log-likelihood (before the step),
        "val": validation score (after it)}``.
    """
    n = len(target_ev)
    ev_no_t = {k: v for k, v in evidence.items() if k != target}
    nodes = [v for v in engine.nodes if v not in set(fixed)]
    eta0 = {v: np.log(np.clip(engine.cpds[v], 1e-12, None)) for v in nodes}
    eta = {v: e.copy() for v, e in eta0.items()}
    m1 = {v: np.zeros_like(e) for v, e in eta.items()}
    m2 = {v: np.zeros_like(e) for v, e in eta.items()}
    b1, b2 = 0.9, 0.999
    best = (val_score(engine) if val_score is not None else -np.inf, {v: engine.cpds[v].copy() for v in nodes})
    history: list[dict] = []
    bad = 0
    if val_score is not None:
        logger.info("discriminative refinement: validation %.6f at the start", best[0])
    for it in range(max_iter):
        diff, cll = counts() if counts is not None else engine.discriminative_counts(ev_no_t, target_ev)
        rec = {"cll": cll / n}
        new = {}
        for v in nodes:
            d = diff[v] / n
            theta = engine.cpds[v]
            g = d - theta * d.sum(axis=0, keepdims=True) - l2 * (eta[v] - eta0[v])
            # a gradient at rounding level is zero: the CPD of a leaf without evidence, or of an always
            # observed root (the context nodes), does not change the conditional likelihood, and Adam,
            # which divides by the gradient's own scale, would turn that noise into steps (two sums of the
            # same counts in another order then end 2e-3 apart after 40 steps)
            g[np.abs(g) < _GRADIENT_FLOOR] = 0.0
            if optimizer == "adam":
                m1[v] = b1 * m1[v] + (1 - b1) * g
                m2[v] = b2 * m2[v] + (1 - b2) * g * g
                step = learning_rate * (m1[v] / (1 - b1 ** (it + 1))) / (np.sqrt(m2[v] / (1 - b2 ** (it + 1))) + 1e-8)
            else:  # plain gradient ascent with momentum: rarely used parameters move little
                m1[v] = b1 * m1[v] + g
                step = learning_rate * m1[v]
            eta[v] = eta[v] + step
            new[v] = np.exp(_log_softmax_cols(eta[v]))
        engine.set_cpds({**engine.cpds, **new})
        if val_score is not None:
            rec["val"] = float(val_score(engine))
            if rec["val"] > best[0]:
                best, bad = (rec["val"], {v: engine.cpds[v].copy() for v in nodes}), 0
            else:
                bad += 1
        history.append(rec)
        logger.info("discriminative step %d: train CLL %.6f%s", it, rec["cll"],
                    f", validation {rec['val']:.6f}" if "val" in rec else "")
        if progress is not None:
            progress(it, rec)
        if val_score is not None and bad >= patience:
            break
    if val_score is not None:
        engine.set_cpds({**engine.cpds, **best[1]})
    return history
