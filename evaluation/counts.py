"""Evaluation on mergeable counts: a partitioned run's report without gathering its screens.

A partitioned (Dask) run scores each part of the cohort where it lies. To evaluate it, every part
summarises its own stays into counts that add up (:func:`split_counts`), the client sums the
parts (:func:`merge_counts`) and turns the sums into the tables (:func:`evaluation_from_counts`).
No process holds more than one part's screens.

* **Rank metrics** (AUROC, AUPRC, FPR at 80 % TPR, ROC and PR curves) come from histograms of the
  scores per label on a fixed grid (:class:`ScoreGrid`): ``2**16`` bins of the logit in
  ``[-16, 16]`` (width 4.9e-4) for probabilities, one bin per value for integer scores (NEWS2,
  exact). A bin is one tie group, and the curve is walked as
  :class:`evaluation.metrics.SortedScores` walks it, so the metrics are those of the scores
  rounded to their bin (scikit-learn's on the binned scores). Against the raw scores AUROC moves by
  at most :meth:`RankCounts.auroc_tie_bound`: half the share of (positive, negative) pairs that
  share a bin.
* **The patient bootstrap** is a Poisson bootstrap: resample ``b`` gives stay ``s`` a weight drawn
  from Poisson(1) by a hash of (seed, b, stay_id) (:func:`poisson_weights`), so a part weighs its
  own stays, and the weights, hence the CIs, do not depend on how the stays are partitioned. The
  resample histograms use bins 16 times coarser (``2**12``) to keep a part's summary small.
  Single-process runs keep the multinomial bootstrap of :mod:`evaluation.bootstrap`; the two
  bootstraps' CIs differ by Monte Carlo noise.
* **Additive metrics** (sensitivity, alarms per admission, false alarms per true alarm, screen
  sensitivity/specificity/precision, Brier, ECE) are per-stay sums (the statistics of
  :mod:`evaluation.bootstrap`), weighted per resample and summed over a part's stays.
* **Timeliness** from the first true alarm of each detected stay (one row per stay and operating
  point, :func:`evaluation.timeliness.alarm_lead_times`); every true alarm's lead time is gathered
  too (a few rows per septic stay: the report's timing figure).
* **Operating points** on dev (:func:`choose_thresholds_from_counts`): the candidates are the
  highest score of each occupied bin (every distinct score for NEWS2); the coarse-to-fine search of
  :func:`evaluation.operating_points.threshold_for_sensitivity` asks every part, once per round,
  how many screenable septic stays each candidate detects.

Sums of integer-valued weights are exact in float64, so merging the parts equals computing on
their union: the histograms and protocol counts exactly, the calibration sums to rounding.

Examples
--------
>>> import numpy as np
>>> from sklearn.metrics import roc_auc_score
>>> rng = np.random.default_rng(0)
>>> y = rng.random(5000) < 0.2
>>> s = 1 / (1 + np.exp(-(rng.normal(size=5000) + 1.5 * y)))
>>> grid = ScoreGrid()
>>> a = RankCounts.from_scores(y[:3000], grid.bins(s[:3000]), grid.n_bins)
>>> b = RankCounts.from_scores(y[3000:], grid.bins(s[3000:]), grid.n_bins)
>>> auroc = (a + b).metrics()[0]
>>> bool(abs(auroc - roc_auc_score(y, s)) <= (a + b).auroc_tie_bound() + 1e-12)
True
>>> w = poisson_weights(np.array([7, 8, 9]), 4, seed=1)
>>> w.shape, bool((poisson_weights(np.array([9]), 4, seed=1)[:, 0] == w[:, 2]).all())
((4, 3), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ehr.partitions import splitmix64

from .bootstrap import (BootstrapResult, _ModelStats, assemble_result, normalise_thresholds)
from .metrics import SortedScores, screen_labels
from .operating_points import ThresholdSweep, apply_thresholds, drive_searches, sensitivity_search
from .protocol import ScreenSet, prepare_screens
from .timeliness import alarm_lead_times, timeliness_from_lead_times

__all__ = ["ScoreGrid", "RankCounts", "poisson_weights", "ModelCounts", "SplitCounts", "grid_for",
           "split_counts", "merge_counts", "evaluation_from_counts", "dev_candidates", "detected_at",
           "choose_thresholds_from_counts", "evaluate_run_counts"]

LOGIT_BOUND = 16.0
FINE_BINS = 2 ** 16
COARSE = 16

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Poisson(1) cumulative distribution; P(X > 19) < 1e-18, beyond a double's resolution of u
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])

#: protocol summary columns that add up over parts (the rest are rates of these, or settings)
_COUNT_COLUMNS = ("n_stays", "n_septic", "n_septic_screenable", "n_septic_unscreenable", "n_screens",
                  "n_candidates", "n_alarms", "n_true_alarms", "n_false_alarms", "n_detected")


@dataclass(frozen=True)
class ScoreGrid:
    """Fixed score bins, the same on every part: ``logit`` (probabilities) or ``integer`` scores.

    ``logit``: ``n_bins`` equal bins of ``log(s / (1 - s))`` clipped to ``[-16, 16]``;
    ``integer``: bin ``k`` holds the score ``lo + k`` (exact). ``coarse`` fine bins make one bin of
    the bootstrap resamples' histograms.

    Examples
    --------
    >>> ScoreGrid().bins([0.0, 0.5, 1.0]).tolist()
    [0, 32768, 65535]
    >>> ScoreGrid.integers(0, 20).bins([0, 5, 20]).tolist()
    [0, 5, 20]
    >>> ScoreGrid.integers(0, 20).bins([2.5])
    Traceback (most recent call last):
    ...
    ValueError: scores: an integer grid needs integers in [0, 20]; row 0 is 2.5
    """

    kind: str = "logit"
    n_bins: int = FINE_BINS
    lo: int = 0
    coarse: int = COARSE

    @classmethod
    def integers(cls, lo: int = 0, hi: int = 63) -> ScoreGrid:
        return cls("integer", int(hi) - int(lo) + 1, int(lo), 1)

    @property
    def n_coarse(self) -> int:
        return -(-self.n_bins // self.coarse)

    @property
    def probability(self) -> bool:
        """Scores are probabilities (calibration metrics apply)."""
        return self.kind == "logit"

    def bins(self, scores, *, what: str = "scores") -> np.ndarray:
        """Bin of each score (int64); a ``ValueError`` naming the first score off the grid."""
        s = np.asarray(scores, dtype="float64")
        if self.kind == "logit":
            bad = ~((s >= 0) & (s <= 1))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{what}: a probability grid needs scores in [0, 1]; row {i} is {float(s[i])!r}")
            with np.errstate(divide="ignore"):
                z = np.clip(np.log(s) - np.log1p(-s), -LOGIT_BOUND, LOGIT_BOUND)
            b = np.floor((z + LOGIT_BOUND) * (self.n_bins / (2 * LOGIT_BOUND))).astype("int64")
            return np.minimum(b, self.n_bins - 1)
        k = s - self.lo
        bad = ~((k == np.round(k)) & (k >= 0) & (k < self.n_bins))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what}: an integer grid needs integers in [{self.lo}, {self.lo + self.n_bins - 1}]; "
                             f"row {i} is {float(s[i])!r}")
        return k.astype("int64")


def grid_for(model: str, reference: str | None = "news2") -> ScoreGrid:
    """The grid of a model's scores: integers 0-63 for the reference (NEWS2), the logit grid otherwise."""
    return ScoreGrid.integers(0, 63) if model == reference else ScoreGrid()


@dataclass
class RankCounts:
    """Weighted positive and negative screens per score bin, shape ``(n_bins,)`` or ``(B, n_bins)``.

    Bins are in score order; each is one tie group of the ROC and PR curves.

    Examples
    --------
    >>> rc = RankCounts.from_scores(np.array([0, 1, 0, 1]), np.array([0, 3, 1, 1]), 4)
    >>> rc.metrics()
    (0.875, 0.8333333333333333, 0.5)
    """

    pos: np.ndarray
    neg: np.ndarray

    @classmethod
    def from_scores(cls, y, bins, n_bins: int, weights=None) -> RankCounts:
        y = np.asarray(y).astype(bool)
        w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype="float64")
        return cls(np.bincount(bins[y], weights=w[y], minlength=n_bins),
                   np.bincount(bins[~y], weights=w[~y], minlength=n_bins))

    def __add__(self, other: RankCounts) -> RankCounts:
        return RankCounts(self.pos + other.pos, self.neg + other.neg)

    def _curves(self):
        """Cumulative (tp, fp) from the highest bin down, per row; bins empty in every row dropped."""
        pos, neg = np.atleast_2d(self.pos), np.atleast_2d(self.neg)
        keep = (pos.sum(axis=0) + neg.sum(axis=0)) > 0
        return np.cumsum(pos[:, keep][:, ::-1], axis=1), np.cumsum(neg[:, keep][:, ::-1], axis=1)

    def metrics(self, tpr: float = 0.8):
        """(AUROC, AUPRC, FPR at ``tpr``): a tuple for one histogram, an array (B, 3) for B."""
        tp, fp = self._curves()
        out = np.array([(SortedScores._auc(t, f), SortedScores._ap(t, f), SortedScores._fpr_at(t, f, tpr))
                        for t, f in zip(tp, fp)]).reshape(len(tp), 3)
        return tuple(float(v) for v in out[0]) if np.ndim(self.pos) == 1 else out

    def curves(self, grid) -> tuple[np.ndarray, np.ndarray]:
        """ROC (TPR at FPR = ``grid``) and PR (precision at recall = ``grid``), as
        :meth:`evaluation.metrics.SortedScores.rank_metrics_and_curves`; rows as in :meth:`metrics`."""
        tp, fp = self._curves()
        roc = np.array([SortedScores._roc_at(t, f, grid) for t, f in zip(tp, fp)])
        pr = np.array([SortedScores._pr_at(t, f, grid) for t, f in zip(tp, fp)])
        return (roc[0], pr[0]) if np.ndim(self.pos) == 1 else (roc, pr)

    def auroc_tie_bound(self) -> float:
        """Largest possible |AUROC of the binned scores - AUROC of the raw scores| (one histogram).

        Binning only ties pairs that share a bin, and a tie counts 1/2 where the raw pair counted
        0 or 1: half the weighted share of (positive, negative) pairs in one bin.
        """
        p, n = float(self.pos.sum()), float(self.neg.sum())
        return float(0.5 * np.dot(self.pos, self.neg) / (p * n)) if p and n else float("nan")


def poisson_weights(stay_ids, n_resamples: int, seed: int) -> np.ndarray:
    """Poisson(1) bootstrap weights, shape ``(n_resamples, len(stay_ids))``, from a hash of (seed, resample, stay).

    A stay's weight in resample ``b`` depends on ``(seed, b, stay_id)`` only: every part of a
    cohort computes its stays' weights alone, and the same stay has the same weights however the
    stays are partitioned.

    Examples
    --------
    >>> poisson_weights([1, 2, 3, 4, 5], 3, seed=0).tolist() == poisson_weights([1, 2, 3, 4, 5], 3, seed=0).tolist()
    True
    >>> w = poisson_weights(np.arange(200_000), 1, seed=0)      # Poisson(1): mean 1, P(0) = 1/e
    >>> bool(abs(w.mean() - 1) < 0.01), bool(abs((w == 0).mean() - np.exp(-1)) < 0.01)
    (True, True)
    """
    ids = np.asarray(stay_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = splitmix64(ids ^ splitmix64(np.uint64(int(seed) % 2 ** 64)))
        x = splitmix64(key[None, :] + (np.arange(1, n_resamples + 1, dtype=np.uint64) * _GOLDEN)[:, None])
    u = (x >> np.uint64(11)).astype("float64") * 2.0 ** -53
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype("float64")


class _Layout:
    """What :meth:`evaluation.bootstrap._ModelStats.metrics` reads: the names of the summed columns."""

    def __init__(self, st: _ModelStats):
        self.pos, self.ratios, self.prob = st.pos, st.ratios, st.prob
        self.cal_names = getattr(st, "cal_names", [])

    def __eq__(self, other):
        return (self.pos, self.ratios, self.prob, self.cal_names) == (other.pos, other.ratios, other.prob,
                                                                      other.cal_names)

    def metrics(self, sums):
        return _ModelStats.metrics(self, sums)


@dataclass
class ModelCounts:
    """One model's counts on some stays of one split; ``+`` merges two disjoint sets of stays.

    ``sums`` (B + 1, k): the per-stay statistics summed with weight 1 (row 0) and with each
    resample's Poisson weights; ``fine``: the score histograms; ``reps``: the resamples' histograms
    on the coarse grid.
    """

    model: str
    ops: list
    layout: _Layout
    sums: np.ndarray
    fine: RankCounts
    reps: RankCounts

    def __add__(self, other: ModelCounts) -> ModelCounts:
        if (self.model, self.ops) != (other.model, other.ops) or not self.layout == other.layout:
            raise ValueError(f"counts of {self.model} {self.ops} and {other.model} {other.ops} do not add up")
        return ModelCounts(self.model, self.ops, self.layout, self.sums + other.sums, self.fine + other.fine,
                           self.reps + other.reps)


def _model_counts(ss: ScreenSet, ops: pd.DataFrame, grid: ScoreGrid, *, weights: np.ndarray, window_h: float,
                  silencing_h: float, n_bins: int = 10) -> ModelCounts:
    st = _ModelStats(ss, ops, window_h=window_h, silencing_h=silencing_h, n_bins=n_bins, prob=grid.probability)
    sums = weights @ st.per_stay
    y = screen_labels(ss.frame["onset_in_h"].to_numpy(), window_h).astype(bool)
    bins = grid.bins(ss.frame["risk"].to_numpy(), what=f"{ss.model} risk")
    fine = RankCounts.from_scores(y, bins, grid.n_bins)
    from scipy import sparse

    cb, nc, idx = bins // grid.coarse, grid.n_coarse, ss.stay_index
    w = weights[1:]

    def hist(label):
        # (stays x bins) screen counts of this label; resample b's histogram is w[b] @ counts
        m = sparse.csr_matrix((np.ones(int(label.sum())), (idx[label], cb[label])), shape=(w.shape[1], nc))
        return np.asarray((m.T @ w.T).T)

    reps = RankCounts(hist(y), hist(~y))
    return ModelCounts(ss.model, list(st.ops), _Layout(st), sums, fine, reps)


@dataclass
class SplitCounts:
    """Every model's counts on some stays of one split, the protocol's counts and the first true alarms.

    ``alarms`` (the contract alarms of these stays) is filled by :func:`split_counts` for the caller
    to write where the part lies; it is not merged.
    """

    models: dict
    summary: pd.DataFrame
    lead_times: pd.DataFrame
    n_resamples: int
    alarms: pd.DataFrame | None = field(default=None, repr=False)
    #: every true alarm's lead time (``alarm_lead_times(first_only=False)``: the report's timing figure)
    true_alarms: pd.DataFrame | None = field(default=None, repr=False)
    traces: object = field(default=None, repr=False)  # evaluation.count_sections.TraceRows (the risk traces)
    sections: dict | None = field(default=None, repr=False)  # evaluation.count_sections.section_counts


def split_counts(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, thresholds, *,
                 n_resamples: int, seed: int, reference: str | None = "news2", window_h: float = 48.0,
                 silencing_h: float = 48.0, grids: dict | None = None, models=None) -> SplitCounts | None:
    """The counts of one split's tables (a part of the cohort, or all of it); None without screens.

    ``predictions``, ``screens``, ``stays``: that split's rows only (``screens`` defines the stays
    counted, as in :func:`evaluation.bootstrap.bootstrap_metrics`). ``thresholds``: every model's
    operating points (:func:`choose_thresholds_from_counts`). ``grids``: model -> :class:`ScoreGrid`
    (default :func:`grid_for`); ``models``: those counted (default: those of ``thresholds``).
    """
    if not len(screens):
        return None
    ops = normalise_thresholds(thresholds)
    models = list(dict.fromkeys([*(models or []), *ops["model"]]))
    prepared = {m: prepare_screens(predictions, stays, screens, model=m) for m in models}
    population = next(iter(prepared.values())).population
    weights = np.vstack([np.ones((1, len(population))), poisson_weights(population, n_resamples, seed)])
    counts = {m: _model_counts(ss, ops.loc[ops["model"] == m], (grids or {}).get(m) or grid_for(m, reference),
                               weights=weights, window_h=window_h, silencing_h=silencing_h)
              for m, ss in prepared.items()}
    applied = apply_thresholds(ops, None, None, stays, window_h=window_h, silencing_h=silencing_h,
                               check_range=False, prepared=prepared)
    lead = alarm_lead_times(applied.alarms, stays, window_h=window_h) if len(applied.alarms) else None
    every = alarm_lead_times(applied.alarms, stays, window_h=window_h, first_only=False) \
        if len(applied.alarms) else None
    columns = ["model", "operating_point", "threshold", "silencing_h", "window_h", *_COUNT_COLUMNS]
    summary = applied.summary[columns] if len(applied.summary) else pd.DataFrame(columns=columns)
    return SplitCounts(counts, summary, lead, n_resamples, alarms=applied.alarms, true_alarms=every)


def _sorted_lead_times(frames) -> pd.DataFrame | None:
    """The parts' lead-time rows in :func:`evaluation.timeliness.alarm_lead_times`' order (as one process has them)."""
    frames = [f for f in frames if f is not None]
    if not frames:
        return None
    lead = pd.concat(frames, ignore_index=True)
    keys = [c for c in ("model", "threshold", "operating_point") if c in lead.columns] + ["stay_id", "alarm_time"]
    return lead.sort_values(keys, kind="mergesort").reset_index(drop=True)


def merge_counts(parts) -> SplitCounts | None:
    """The sum of the parts' :class:`SplitCounts` (Nones skipped); None when there is none."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    first = parts[0]
    models = dict(first.models)
    for p in parts[1:]:
        models = {m: models[m] + p.models[m] for m in models}
    keys = ["model", "operating_point"]
    summary = first.summary.copy()
    for p in parts[1:]:
        if not (p.summary[keys].to_numpy() == summary[keys].to_numpy()).all():
            raise ValueError("parts hold different models or operating points")
        for c in _COUNT_COLUMNS:
            summary[c] = summary[c].to_numpy() + p.summary[c].to_numpy()
    leads = [p.lead_times for p in parts if p.lead_times is not None]
    lead = pd.concat(leads, ignore_index=True) if leads else None
    sections = traces = None
    if any(p.sections is not None for p in parts):
        from .count_sections import merge_sections

        sections = merge_sections([p.sections for p in parts])
    if any(p.traces is not None for p in parts):
        from .count_sections import merge_trace_rows

        traces = merge_trace_rows([p.traces for p in parts])
    return SplitCounts(models, summary, lead, first.n_resamples, sections=sections, traces=traces,
                       true_alarms=_sorted_lead_times([p.true_alarms for p in parts]))


def _ratio(a, b):
    return float(a) / float(b) if b else float("nan")


def _summary(merged: SplitCounts, estimates: dict) -> pd.DataFrame:
    """The protocol summary (:func:`evaluation.operating_points.apply_thresholds`) from summed counts."""
    s = merged.summary.copy()
    s["sensitivity"] = [_ratio(a, b) for a, b in zip(s["n_detected"], s["n_septic_screenable"])]
    s["alarm_precision"] = [_ratio(a, b) for a, b in zip(s["n_true_alarms"], s["n_alarms"])]
    s["alarms_per_admission"] = [_ratio(a, b) for a, b in zip(s["n_alarms"], s["n_stays"])]
    s["screens_per_admission"] = [_ratio(a, b) for a, b in zip(s["n_screens"], s["n_stays"])]
    s["false_alarms_per_true_alarm"] = [_ratio(a, b) for a, b in zip(s["n_false_alarms"], s["n_true_alarms"])]
    for name in ("sensitivity", "specificity", "precision"):
        s[f"screen_{name}"] = [estimates[m].get((op, f"screen_{name}"), np.nan)
                               for m, op in zip(s["model"], s["operating_point"])]
    return s


def evaluation_from_counts(thresholds: pd.DataFrame, merged: dict, *, reference: str | None = "news2",
                           ci: float = 0.95, curve_points: int = 101, sections: dict | None = None):
    """The report's tables from merged counts: ``{split: SplitCounts}`` -> :class:`evaluation.summary.RunEvaluation`.

    Gives the protocol summary, the main table, the bootstrap table, paired differences of every
    pair of models (bootstrap CIs and p-values), ROC/PR bands and timeliness; ``sections``
    (``{split: tables}``, :func:`evaluation.count_sections.tables_from_sections`) adds the rest of the
    report (alarm burden, decision and calibration curves, subgroups, sensitivity analyses, AUROC by
    hours since admission, the utility, alarm examples) and DeLong's test to the paired table.
    """
    from .paired import join_delong, paired_differences
    from .summary import RunEvaluation, _main_table, _with_split

    grid = np.linspace(0.0, 1.0, curve_points) if curve_points else None
    per: dict = {}
    n_boot = 0
    for split, m in merged.items():
        if m is None:
            continue
        n_boot = m.n_resamples
        estimates, samples, curves, thr = {}, {}, {}, {}
        for name, mc in m.models.items():
            estimates[name], samples[name] = estimates_of(mc)
            if grid is not None:
                (roc, pr), (roc_s, pr_s) = mc.fine.curves(grid), mc.reps.curves(grid)
                curves[name] = {"roc": [roc, roc_s], "pr": [pr, pr_s]}
            thr.update({(name, op): t for op, t in mc.ops})
        boot: BootstrapResult = assemble_result(estimates, samples, thr, n_resamples=m.n_resamples, ci=ci,
                                                reference=reference, curves=curves or None, grid=grid)
        summary = _summary(m, estimates)
        lt = m.lead_times if m.lead_times is not None else pd.DataFrame(columns=[
            "model", "threshold", "operating_point", "stay_id", "alarm_time", "onset_time", "hours_before_onset",
            "antibiotic_time", "hours_before_antibiotic"])
        timeliness = timeliness_from_lead_times(lt, by=["model", "threshold", "operating_point"], reference=reference)
        paired = paired_differences(boot, reference=reference, ci=ci)
        extra = dict((sections or {}).get(split) or {})
        if extra.get("delong") is not None and len(paired):
            paired = join_delong(paired, extra.pop("delong"))
        per[split] = {"summary": summary, "bootstrap": boot.table, "bands": boot.bands, "timeliness": timeliness,
                      "true_alarm_lead_times": m.true_alarms,
                      "paired": paired, "main_table": _main_table(thresholds, boot.table, timeliness, summary),
                      **extra}

    def stacked(name):
        parts = [_with_split(d[name], split) for split, d in per.items() if d.get(name) is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    def as_is(name):  # tables that carry their split already
        parts = [d[name] for d in per.values() if d.get(name) is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    utility = {split: d["utility"] for split, d in per.items() if d.get("utility")} or None
    return RunEvaluation(thresholds=thresholds, alarms=pd.DataFrame(),
                         **{n: stacked(n) for n in ("summary", "bootstrap", "paired", "main_table", "timeliness",
                                                    "bands", "burden", "decision", "calibration", "subgroups",
                                                    "sensitivity", "hours_bands", "reliability",
                                                    "true_alarm_lead_times")},
                         explained=as_is("explained"), context_share=as_is("context_share"), utility=utility,
                         n_boot=n_boot, splits=tuple(per))


def estimates_of(mc: ModelCounts) -> tuple[dict, dict]:
    """A model's point estimates and resample values ``{(operating_point, metric): ...}`` from its counts."""
    est = {k: float(v[0]) for k, v in mc.layout.metrics(mc.sums[:1]).items()}
    smp = dict(mc.layout.metrics(mc.sums[1:]))
    a = mc.fine.metrics()
    r = mc.reps.metrics()
    for j, metric in enumerate(("auroc", "auprc", "fpr_at_80_tpr")):
        est[("", metric)], smp[("", metric)] = a[j], r[:, j]
    return est, smp


def dev_candidates(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *, models,
                   reference: str | None = "news2", grids: dict | None = None) -> dict:
    """Per model: the highest score in each bin of the dev screens (``-inf`` where empty); ``max`` merges parts."""
    out = {}
    for m in models:
        grid = (grids or {}).get(m) or grid_for(m, reference)
        risk = prepare_screens(predictions, stays, screens, model=m).frame["risk"].to_numpy()
        top = np.full(grid.n_bins, -np.inf)
        np.maximum.at(top, grid.bins(risk, what=f"{m} risk"), risk)
        out[m] = top
    return out


def detected_at(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, thresholds: dict, *,
                window_h: float = 48.0, silencing_h: float = 48.0) -> dict:
    """``{model: thresholds}`` -> ``{model: screenable septic stays detected at each}``, and
    ``"_screenable"``: their denominator; both add up over parts."""
    out = {}
    ss = None
    for m, ts in thresholds.items():
        ss = prepare_screens(predictions, stays, screens, model=m)
        sweep = ThresholdSweep(ss, silencing_h, window_h)
        out[m] = np.array([sweep.outcome(float(t))[0] for t in ts], dtype="int64")
    out["_screenable"] = int(ss.screenable.sum()) if ss is not None else 0
    return out


def choose_thresholds_from_counts(candidates: dict, detect, *, models, reference: str = "news2",
                                  news2_cuts=(5, 7), target_sensitivity: float = 0.85,
                                  n_grid: int = 64) -> pd.DataFrame:
    """:func:`evaluation.operating_points.choose_thresholds` where each part counts detected stays.

    ``candidates``: model -> bin maxima (:func:`dev_candidates`, merged with ``np.maximum``);
    ``detect({model: thresholds})`` returns :func:`detected_at`'s counts summed over the parts
    (one call per round, for every search at once). Same columns as ``choose_thresholds``.
    """
    def sens(asked: dict) -> dict:
        got = detect(asked)
        den = got["_screenable"]
        return {m: (got[m] / den if den else np.full(len(got[m]), np.nan)) for m in asked}

    ref_sens = sens({reference: np.asarray(news2_cuts, dtype="float64")})[reference]
    targets = [(f"{reference}>={c:g}", float(s), float(c)) for c, s in zip(news2_cuts, ref_sens)]
    targets.append((f"sens{round(100 * target_sensitivity):d}", float(target_sensitivity), None))
    cands = {m: np.sort(c[np.isfinite(c)]) for m, c in candidates.items()}
    searches, found = {}, {}
    for m in models:
        if not len(cands[m]):
            raise ValueError(f"model {m}: no eligible screens to choose a threshold on")
        for op, target, cut in targets:
            if m == reference and cut is not None:
                found[(m, op)] = (cut, target)
            else:
                searches[(m, op)] = sensitivity_search(len(cands[m]), target, n_grid)

    def evaluate(asked: dict) -> dict:
        by_model: dict = {}
        for (m, _), ts in asked.items():
            by_model[m] = np.unique(np.concatenate([by_model.get(m, np.array([])), ts]))
        s = sens(by_model)
        return {key: s[key[0]][np.searchsorted(by_model[key[0]], ts)] for key, ts in asked.items()}

    found.update(drive_searches(searches, {key: cands[key[0]] for key in searches}, evaluate))
    rows = [(m, op, *found[(m, op)][:1], target, found[(m, op)][1]) for m in models for op, target, _ in targets]
    return pd.DataFrame(rows, columns=["model", "operating_point", "threshold", "target_sensitivity",
                                       "dev_sensitivity"])


def evaluate_run_counts(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, *,
                        reference: str = "news2", window_h: float = 48.0, silencing_h: float = 48.0,
                        n_boot: int = 200, subgroup_n_boot: int | None = None, seed: int = 0, parts: int = 1,
                        splits=("test",), subgroups: bool = True, sensitivity: bool = True,
                        utility_tables: dict | tuple | None = None):
    """The count-based evaluation of whole tables in this process, its stays cut into ``parts``.

    What a partitioned run computes part by part (thresholds on ``dev``, then the evaluated split,
    every section of :mod:`evaluation.count_sections`), here on tables in memory: the same numbers
    for any ``parts`` (the check of :mod:`tests.evaluation.test_counts`), and the reference a
    partitioned run is compared with. ``utility_tables``: as :func:`evaluation.summary.evaluate_run`'s.
    """
    from ehr.partitions import bucket_of

    from .count_sections import evaluate_counts

    if len(splits) != 1:
        raise ValueError(f"evaluate_run_counts evaluates one split; got {list(splits)}")
    split = splits[0]
    models = list(dict.fromkeys(predictions["model"]))
    models = [m for m in models if m != reference] + [reference]

    def cut(table, k):
        return table[bucket_of(table["stay_id"].to_numpy(), parts) == k]

    def pieces(name):
        p, s = predictions[predictions["split"] == name], screens[screens["split"] == name]
        st = stays[stays["stay_id"].isin(s["stay_id"].unique())]
        return [(k, cut(p, k), cut(s, k), cut(st, k)) for k in range(parts)]

    cache: dict = {}

    def over(name, fn, merge):
        if name not in cache:
            cache[name] = pieces(name)
        return merge([fn(*x) for x in cache[name]])

    if isinstance(utility_tables, tuple):
        utility_tables = {"test": utility_tables}
    ut = (utility_tables or {}).get(split)
    utility_part = (lambda k: (cut(ut[0], k), cut(ut[1], k))) if ut is not None else None
    return evaluate_counts(over, models=models, stays=stays, reference=reference, window_h=window_h,
                           silencing_h=silencing_h, n_boot=n_boot, subgroup_n_boot=subgroup_n_boot, seed=seed,
                           split=split, subgroups=subgroups, sensitivity=sensitivity, utility_part=utility_part)
