"""Fitting the CPN on screens spread over partitions: :meth:`SepsisCPN.fit` as map-reduce.

The fit is the single-process one step for step, with every pass over the data replaced by a
map over parts (each a screens frame of whole stays, or a Dask future of one) and a sum:

1. per part: its stays and row count -> the same stays as ``fit`` draws for ``max_rows``
   (``default_rng(random_state)`` permutes the sorted stay ids) and the same half-life
   validation stays (:func:`ehr.splits.held_out_groups` from per-stay summaries);
2. per part: the selected rows, kept where they are (in the worker's memory on Dask);
3. CXR calibration prevalence: per-part (sum, count), added;
4. EM (:func:`cpn.learning.run_em`): each iteration sends the CPDs to every part, which returns
   ``engine.expected_counts`` of its evidence (built once per part); the counts are summed in part
   order and the M-step runs here. The traffic per iteration is two CPD-sized messages per part;
5. half-life selection: each candidate's held-out log-likelihood is a sum over parts;
6. the discriminative refinement: each step's gradient counts are a sum over parts, as in 4.

Sums over parts add the same terms as the single-process sums in another order, so parameters
agree to rounding (see ``tests/cpn/test_partitioned.py``; ``docs/scale.md`` for PhysioNet set A).
``data_hashes_`` differ: they hash the parts (``screens_parts``), not one table.

A mapper runs the part functions (:class:`sepsiscope.scale.cluster.SerialMapper` here, in
order; a Dask one on a cluster): ``map(fn, parts, **broadcast)``, ``gather(items)`` and
``share(obj)`` (send once, use in many tasks).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from cpn import SepsisCPN
>>> class InOrder:
...     def map(self, fn, parts, **kw): return [fn(p, **kw) for p in parts]
...     def gather(self, items): return list(items)
...     def share(self, obj): return obj
>>> s = pd.DataFrame({"stay_id": [1, 1, 2, 2, 3], "hr": [80.0, 130.0, 75.0, np.nan, 90.0],
...     "hr_age_h": [0.0, 1.0, 0.0, np.nan, 2.0], "onset_in_h": [3.0, 2.0, np.nan, np.nan, np.nan]})
>>> m = fit_partitioned(SepsisCPN("physionet", half_lives="prior", max_iter=3, discriminative_iter=0), [s[:4], s[4:]], InOrder())
>>> one = SepsisCPN("physionet", half_lives="prior", max_iter=3, discriminative_iter=0).fit(s)
>>> bool(np.allclose(m.predict_proba(s), one.predict_proba(s), rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import copy
import hashlib
import threading

import numpy as np
import pandas as pd

from ehr.partitions import resolve_part
from ehr.splits import held_out_groups

from .evidence import build_evidence, target_states
from .learning import binary_target_evidence, refine_discriminative, run_em
from .evidence import input_columns
from .model import _GROUPS, _frame_hash
from .structure import TARGET, TARGET_STATES

__all__ = ["fit_partitioned"]

_LABEL = "onset_in_h"
_local = threading.local()


def _summary(part) -> dict:
    part = resolve_part(part)
    return {"stays": np.unique(part["stay_id"].to_numpy()), "rows": len(part),
            "columns": list(part.columns), "hash": _frame_hash(part)}


def _select(part, chosen: np.ndarray, columns: list) -> pd.DataFrame:
    part = resolve_part(part)
    keep = np.isin(part["stay_id"].to_numpy(), chosen) if chosen is not None else np.ones(len(part), bool)
    return part.loc[keep, columns].reset_index(drop=True)


def _stay_positives(sel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Sorted stay ids of a part and whether each has a screen within 48 h of onset."""
    y = _GROUPS[target_states(sel[_LABEL].to_numpy()), 0]
    stays, inv = np.unique(sel["stay_id"].to_numpy(), return_inverse=True)
    return stays, np.bincount(inv, weights=y, minlength=len(stays)) > 0


def _cxr_sums(sel: pd.DataFrame, model) -> dict:
    return model._cxr_sums(sel)


def _rows(sel: pd.DataFrame, stays) -> pd.DataFrame:
    return sel if stays is None else sel.loc[np.isin(sel["stay_id"].to_numpy(), stays)]


def _evidence(sel: pd.DataFrame, info, half_lives, cxr_prior, stays=None) -> dict:
    rows = _rows(sel, stays)
    ev, _ = build_evidence(rows, info, half_lives, cxr_prior=cxr_prior)
    ev[TARGET] = np.eye(len(TARGET_STATES))[target_states(rows[_LABEL].to_numpy())]
    return ev


def _engine(shared, cpds):
    """This thread's copy of the shared engine, set to ``cpds`` (threads of one worker never share one)."""
    cache = getattr(_local, "engines", None)
    if cache is None:
        cache = _local.engines = {}
    key = id(shared)
    if key not in cache:
        cache.clear()
        cache[key] = (shared, copy.deepcopy(shared))
    eng = cache[key][1]
    eng.set_cpds(cpds)
    return eng


def _counts(ev: dict, engine, cpds, rows_per_batch) -> tuple[dict, float]:
    return _engine(engine, cpds).expected_counts(ev, batch_size=rows_per_batch)


def _discriminative_counts(ev: dict, engine, cpds, rows_per_batch) -> tuple[dict, float]:
    """A part's gradient counts of the refinement: "onset within 48 h" (the target's two groups) as
    target evidence, as :meth:`SepsisCPN._refine` builds it."""
    target_ev = binary_target_evidence(_GROUPS, _GROUPS[ev[TARGET].argmax(axis=1), 0])
    rest = {k: v for k, v in ev.items() if k != TARGET}
    return _engine(engine, cpds).discriminative_counts(rest, target_ev, batch_size=rows_per_batch)


def _loglik(sel: pd.DataFrame, info, candidates, cxr_prior, stays, engine, cpds, rows_per_batch) -> list:
    """Per candidate half-lives: (sum of ``log P(true time-to-onset state | evidence)``, rows) over
    the part's rows of ``stays``."""
    rows = _rows(sel, stays)
    if not len(rows):
        return [(0.0, 0)] * len(candidates)
    t = target_states(rows[_LABEL].to_numpy())
    eng = _engine(engine, cpds)
    out = []
    for half_lives in candidates:
        ev, _ = build_evidence(rows, info, half_lives, cxr_prior=cxr_prior)
        post = eng.posterior(ev, batch_size=rows_per_batch)
        out.append((float(np.sum(np.log(np.clip(post[np.arange(len(t)), t], 1e-300, None)))), len(t)))
    return out


def _add(results: list[tuple[dict, float]]) -> tuple[dict, float]:
    """Counts and log-likelihoods summed in part order."""
    counts = {v: np.array(c, copy=True) for v, c in results[0][0].items()}
    for c, _ in results[1:]:
        for v in counts:
            counts[v] += c[v]
    return counts, float(sum(ll for _, ll in results))


class _Fit:
    """One partitioned fit: the model, the selected parts and the mapper."""

    def __init__(self, model, sel, mapper, n_rows):
        self.model, self.sel, self.mapper, self.n_rows = model, sel, mapper, n_rows
        self.info = mapper.share(model.info_)
        self.engine = mapper.share(model.engine_)  # the structure; tasks set the CPDs they are sent

    def em(self, half_lives, stays, n_rows, max_iter) -> list[float]:
        m, mapper = self.model, self.mapper
        ev = mapper.map(_evidence, self.sel, info=self.info, half_lives=half_lives, cxr_prior=m.cxr_prior_,
                        stays=stays)
        def e_step():
            return _add(mapper.gather(mapper.map(_counts, ev, engine=self.engine, cpds=dict(m.engine_.cpds),
                                                 rows_per_batch=m.batch_size)))

        history = run_em(m.engine_, e_step, n_rows, pseudo_count=m.pseudo_count, max_iter=max_iter, tol=m.tol)
        if hasattr(mapper, "release"):
            mapper.release(ev)
        return history

    def refine(self, half_lives, n_rows) -> list[dict]:
        """The discriminative refinement (``discriminative_early_stopping=False``): every step's
        gradient counts are a sum over the parts, as EM's E-step."""
        m, mapper = self.model, self.mapper
        ev = mapper.map(_evidence, self.sel, info=self.info, half_lives=half_lives, cxr_prior=m.cxr_prior_,
                        stays=None)

        def counts():
            return _add(mapper.gather(mapper.map(_discriminative_counts, ev, engine=self.engine,
                                                 cpds=dict(m.engine_.cpds), rows_per_batch=m.batch_size)))

        history = refine_discriminative(m.engine_, {}, np.empty((n_rows, 0)), target=TARGET,
                                        max_iter=int(m.discriminative_iter), learning_rate=m.discriminative_lr,
                                        l2=m._l2_per_row(n_rows), optimizer="adam", counts=counts)
        if hasattr(mapper, "release"):
            mapper.release(ev)
        return history

    def learn_half_lives(self, hl: dict) -> dict:
        m, mapper = self.model, self.mapper
        summaries = mapper.gather(mapper.map(_stay_positives, self.sel))
        stays = np.concatenate([s for s, _ in summaries])
        has_pos = np.concatenate([p for _, p in summaries])
        order = np.argsort(stays)
        stays, has_pos = stays[order], has_pos[order]
        if len(stays) < 2:
            import logging

            logging.getLogger("cpn.model").warning("too few stays to learn half-lives; using the prior half-lives")
            return hl
        held = np.zeros(len(stays), bool)
        held[held_out_groups(len(stays), m.validation_fraction, has_pos=has_pos, random_state=m.random_state)] = True
        train_stays, val_stays = stays[~held], stays[held]
        n_train = int(sum(mapper.gather(mapper.map(_count_rows, self.sel, stays=train_stays))))
        self.em(hl, train_stays, n_train, min(m.max_iter, m.half_life_em_iter))
        val_shared = mapper.share(val_stays)

        def score_many(candidates):
            parts = mapper.gather(mapper.map(_loglik, self.sel, info=self.info, candidates=candidates,
                                             cxr_prior=m.cxr_prior_, stays=val_shared, engine=self.engine,
                                             cpds=dict(m.engine_.cpds), rows_per_batch=4096))
            return [sum(p[i][0] for p in parts) / sum(p[i][1] for p in parts) for i in range(len(candidates))]

        return m._search_half_lives(hl, score_many)


def _count_rows(sel: pd.DataFrame, stays) -> int:
    return int(len(_rows(sel, stays)))


def fit_partitioned(model, parts: list, mapper):
    """Fit ``model`` (a :class:`~cpn.SepsisCPN`) on screens split into ``parts`` of whole stays.

    Parameters
    ----------
    model : SepsisCPN
        Unfitted; its hyperparameters are used as :meth:`~cpn.SepsisCPN.fit` uses them.
    parts : list
        Screens frames, functions that load one, or futures of either, with ``stay_id`` and ``onset_in_h``; every part has
        the same columns; no stay is in two parts.
    mapper : object
        Runs part functions (see the module docstring).

    Returns
    -------
    model, fitted
    """
    if model.evidence_states:
        raise ValueError(f"evidence_states={model.evidence_states}: learned cut-points have no partitioned fit yet; "
                         "fit in one process, or set evidence_states=None")
    if model.discriminative_iter and model.discriminative_early_stopping:
        raise ValueError("discriminative_early_stopping=True has no partitioned fit yet; fit in one process, or "
                         "set discriminative_early_stopping=False (or discriminative_iter=0)")
    model._prepare_network()
    summaries = mapper.gather(mapper.map(_summary, parts))
    columns = summaries[0]["columns"]
    for k, s in enumerate(summaries):
        if s["columns"] != columns:
            raise ValueError(f"screens part {k} has columns {s['columns'][:5]}...; part 0 has {columns[:5]}...: "
                             "every part must have the same columns")
    if _LABEL not in columns:
        raise ValueError(f"screens parts have no '{_LABEL}' column (the CPN's target)")
    all_stays = np.concatenate([s["stays"] for s in summaries])
    if len(np.unique(all_stays)) != len(all_stays):
        raise ValueError("a stay appears in more than one part; parts must hold whole stays")
    all_stays = np.sort(all_stays)
    n_total = int(sum(s["rows"] for s in summaries))
    chosen = None
    if model.max_rows is not None and n_total > model.max_rows:
        uniq = np.random.default_rng(model.random_state).permutation(all_stays)
        chosen = np.sort(uniq[: max(1, int(len(uniq) * (model.max_rows / n_total)))])
    model.features_in_ = [c for c in input_columns(model.info_) if c in columns]
    keep = list(dict.fromkeys(["stay_id", *model.features_in_, _LABEL]))
    sel = mapper.map(_select, parts, chosen=mapper.share(chosen), columns=keep)
    n_rows = int(sum(mapper.gather(mapper.map(_count_rows, sel, stays=None))))
    digest = hashlib.sha256("".join(s["hash"] for s in summaries).encode()).hexdigest()[:16]
    model.data_hashes_ = {"screens_parts": digest}
    model.n_train_rows_ = n_rows
    hl = model._initial_half_lives()
    sums = mapper.gather(mapper.map(_cxr_sums, sel, model=mapper.share(model)))
    model.cxr_prior_ = model._cxr_prior_from_sums(
        {v: (sum(s[v][0] for s in sums), sum(s[v][1] for s in sums)) for v in sums[0]} if sums else {})
    model.half_life_scale_, model.half_life_profile_ = {}, {}
    fit = _Fit(model, sel, mapper, n_rows)
    if model.half_lives == "learn":
        hl = fit.learn_half_lives(hl)
    model.half_lives_ = hl
    model.em_history_ = fit.em(hl, None, n_rows, model.max_iter)
    model.discriminative_history_ = fit.refine(hl, n_rows) if model.discriminative_iter else []
    model._sync_network()
    return model
