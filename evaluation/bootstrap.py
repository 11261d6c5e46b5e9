"""Patient-level (cluster) bootstrap confidence intervals and paired differences against NEWS2.

A resample draws the population's stays with replacement (multinomial counts, one draw per stay);
every screen then carries its stay's count as a weight. All models are judged on the **same**
resampled stays, so differences against the reference (NEWS2) are paired.

Why it is fast (1,000 resamples over ~800k screens in seconds per model):

* Additive metrics (Brier and ECE from :func:`evaluation.calibration.calibration_sums`,
  sensitivity/specificity/precision at a threshold, and all the protocol metrics: alarms per
  admission, sensitivity per septic stay, ...) are sums over screens, hence sums over stays: they
  are computed once per stay, and the resamples are one matrix product ``counts @ per_stay``.
* Rank metrics (AUROC, AUPRC, FPR at 80 % TPR) sort the scores once; a resample is a gather of the
  stay counts into sorted order and one integer cumulative sum (:class:`evaluation.metrics.SortedScores`).
* The screening protocol itself runs once on the original data: a stay's alarms depend only on its
  own screens, so resampling stays resamples their alarm counts.

CIs are percentile intervals; ``p_value`` of a difference is the two-sided bootstrap p-value
``min(1, 2 min(P(d <= 0), P(d >= 0)))``. Metrics that are undefined in a resample (e.g. false alarms
per true alarm without a true alarm) are NaN there and ignored by the percentiles.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from evaluation.bootstrap import bootstrap_metrics
>>> rng = np.random.default_rng(0)
>>> t = pd.Timestamp("2020-01-01") + pd.to_timedelta(np.tile(np.arange(1, 11), 40), unit="h")
>>> stay = np.repeat(np.arange(40), 10)
>>> onset = pd.Series(pd.NaT, index=range(40)); onset[:8] = pd.Timestamp("2020-01-01 12:00")
>>> stays = pd.DataFrame({"stay_id": range(40), "onset_time": onset.values})
>>> y = (stay < 8).astype(float)
>>> pred = pd.DataFrame({"stay_id": stay, "screen_time": t, "model": "m",
...                      "risk": np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1), "fold": 0, "split": "test"})
>>> res = bootstrap_metrics(pred, None, stays, n_resamples=50, seed=1, reference=None)
>>> row = res.table.query("metric == 'auroc'").iloc[0]
>>> bool(row.ci_low <= row.estimate <= row.ci_high)
True
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehr.schema import require_columns

from .calibration import brier_from_sums, calibration_sums, ece_from_sums
from .metrics import SortedScores, screen_labels
from .protocol import ScreenSet, prepare_screens, run_protocol, validate_predictions

__all__ = ["BootstrapResult", "cluster_counts", "bootstrap_metrics", "percentile_ci", "difference_summary",
           "normalise_thresholds", "assemble_result"]

log = logging.getLogger(__name__)

_CHUNK = 100  # resamples per block of counts (memory: CHUNK x n_stays int32)

RANK_METRICS = ("auroc", "auprc", "fpr_at_80_tpr")
CALIBRATION_METRICS = ("brier", "ece")
SCREEN_THRESHOLD_METRICS = ("screen_sensitivity", "screen_specificity", "screen_precision")
PROTOCOL_METRICS = ("sensitivity", "alarms_per_admission", "false_alarms_per_true_alarm", "alarm_precision")
POPULATION_METRICS = ("screens_per_admission",)


@dataclass
class BootstrapResult:
    """What :func:`bootstrap_metrics` returns.

    Attributes
    ----------
    table : DataFrame
        ``model, operating_point, threshold, metric, estimate, ci_low, ci_high, n_resamples``;
        ``operating_point`` is '' for threshold-free metrics.
    differences : DataFrame
        ``model, reference, operating_point, metric, difference, ci_low, ci_high, p_value``:
        model minus reference on the same resamples (same operating point name).
    samples : DataFrame
        Long resample values: ``model, operating_point, metric, resample, value``.
    bands : DataFrame or None
        With ``curve_points``: ``model, curve, x, estimate, ci_low, ci_high``; ``curve`` is
        ``roc`` (x = FPR, the TPR there) or ``pr`` (x = recall, the precision there),
        pointwise percentile bands on the same resamples.
    """

    table: pd.DataFrame
    differences: pd.DataFrame
    samples: pd.DataFrame
    bands: pd.DataFrame | None = None


def cluster_counts(n_clusters: int, n_resamples: int, seed) -> np.ndarray:
    """Multinomial resampling counts, shape (n_resamples, n_clusters), from a local RNG.

    Each row sums to ``n_clusters``: how many times each cluster (stay) is drawn. The same
    ``seed`` gives the same counts as :func:`bootstrap_metrics` uses.

    Examples
    --------
    >>> c = cluster_counts(5, 3, seed=0)
    >>> c.shape, c.sum(axis=1).tolist()
    ((3, 5), [5, 5, 5])
    """
    return np.concatenate([blk for _, blk in _iter_counts(n_clusters, n_resamples, seed)]
                          or [np.empty((0, n_clusters), dtype=np.int32)])


def _iter_counts(n_clusters, n_resamples, seed):
    """Blocks of counts; drawing n stays uniformly with replacement = multinomial(n, 1/n)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        draws = rng.integers(0, n_clusters, (size, n_clusters))
        flat = (draws + np.arange(size)[:, None] * n_clusters).ravel()
        yield start, np.bincount(flat, minlength=size * n_clusters).reshape(size, n_clusters).astype(np.int32)


def percentile_ci(samples: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite samples (NaN when none)."""
    s = np.asarray(samples, dtype="float64")
    s = s[np.isfinite(s)]
    if not len(s):
        return float("nan"), float("nan")
    a = (1 - ci) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(lo), float(hi)


def difference_summary(a: np.ndarray, b: np.ndarray, ci: float = 0.95) -> tuple[float, float, float]:
    """``(ci_low, ci_high, p_value)`` of ``a - b`` over paired resamples.

    The p-value is two-sided, ``min(1, 2 min(P(d <= 0), P(d >= 0)))`` over the finite
    differences; 0 means no resample crossed zero (its resolution is ``2 / B``, see
    :func:`evaluation.paired.format_p_value`).

    Examples
    --------
    >>> difference_summary(np.array([0.1, 0.2, 0.3, -0.1]), np.zeros(4), ci=0.5)
    (0.05, 0.225, 0.5)
    """
    d = np.asarray(a, dtype="float64") - np.asarray(b, dtype="float64")
    lo, hi = percentile_ci(d, ci)
    fin = d[np.isfinite(d)]
    p = min(1.0, 2 * min(np.mean(fin <= 0), np.mean(fin >= 0))) if len(fin) else float("nan")
    return lo, hi, float(p)


def normalise_thresholds(thresholds) -> pd.DataFrame:
    """Thresholds as a frame ``model, operating_point, threshold``.

    Accepts that frame (e.g. from :func:`evaluation.operating_points.choose_thresholds`) or a
    mapping ``{model: {operating_point: threshold}}``.
    """
    if thresholds is None:
        return pd.DataFrame(columns=["model", "operating_point", "threshold"])
    if isinstance(thresholds, pd.DataFrame):
        require_columns(thresholds, ["model", "operating_point", "threshold"], table="thresholds")
        return thresholds[["model", "operating_point", "threshold"]].reset_index(drop=True)
    rows = [(m, op, float(t)) for m, ops in thresholds.items() for op, t in ops.items()]
    return pd.DataFrame(rows, columns=["model", "operating_point", "threshold"])


def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


class _ModelStats:
    """Per-stay sufficient statistics of one model (and its operating points)."""

    def __init__(self, ss: ScreenSet, ops: pd.DataFrame, *, window_h, silencing_h, n_bins, prob=None):
        f = ss.frame
        n_pop = len(ss.population)
        self.model = ss.model
        idx = ss.stay_index
        y = screen_labels(f["onset_in_h"].to_numpy(), window_h).astype("float64")
        s = f["risk"].to_numpy()
        self.sorted = SortedScores(y, s)
        self.idx_sorted = idx[self.sorted.order_]
        # calibration sums for probabilities; a partitioned run decides it once for every part
        self.prob = (bool(len(s)) and s.min() >= 0 and s.max() <= 1) if prob is None else bool(prob)
        cols, names = [], []  # per-stay additive statistics; metric = ratio of two columns

        def add(name, values):
            names.append(name)
            cols.append(np.bincount(idx, weights=values, minlength=n_pop))

        ones = np.ones(len(s))
        add("n_screens", ones)
        self.ratios = {("", "screens_per_admission"): ("n_screens", "n_stays")}
        if self.prob:
            cal = calibration_sums(y, s, n_bins=n_bins, groups=idx, n_groups=n_pop)
            self.cal_names = [f"cal{j}" for j in range(cal.shape[1])]
            names.extend(self.cal_names)
            cols.extend(cal.T)
            self.ratios[("", "brier")] = None  # from the calibration sums, in this place of the table
        add("pos", y)
        add("neg", 1 - y)
        self.ops = []
        extra = {}
        for op, t in zip(ops["operating_point"], ops["threshold"]):
            alarm = (s >= t).astype("float64")
            add(f"{op}|tp", alarm * y)
            add(f"{op}|fp", alarm * (1 - y))
            pr = run_protocol(None, None, threshold=float(t), silencing_h=silencing_h, window_h=window_h,
                              prepared=ss)
            so = pr.stay_outcomes
            extra[f"{op}|alarms"] = so["n_alarms"].to_numpy("float64")
            extra[f"{op}|true_alarms"] = so["n_true_alarms"].to_numpy("float64")
            extra[f"{op}|false_alarms"] = so["n_false_alarms"].to_numpy("float64")
            extra[f"{op}|detected"] = (so["detected"] & so["screenable"]).to_numpy("float64")
            self.ratios.update({
                (op, "screen_sensitivity"): (f"{op}|tp", "pos"),
                (op, "screen_specificity"): (f"{op}|tn", "neg"),
                (op, "screen_precision"): (f"{op}|tp", f"{op}|alarm_screens"),
                (op, "sensitivity"): (f"{op}|detected", "screenable"),
                (op, "alarms_per_admission"): (f"{op}|alarms", "n_stays"),
                (op, "false_alarms_per_true_alarm"): (f"{op}|false_alarms", f"{op}|true_alarms"),
                (op, "alarm_precision"): (f"{op}|true_alarms", f"{op}|alarms"),
            })
            self.ops.append((op, float(t)))
        mat = dict(zip(names, cols))
        mat.update(extra)
        mat["n_stays"] = np.ones(n_pop)
        mat["screenable"] = ss.screenable.astype("float64")
        for op, _ in self.ops:
            mat[f"{op}|tn"] = mat["neg"] - mat[f"{op}|fp"]
            mat[f"{op}|alarm_screens"] = mat[f"{op}|tp"] + mat[f"{op}|fp"]
        self.names = list(mat)
        self.pos = {n: i for i, n in enumerate(self.names)}
        self.per_stay = np.column_stack([mat[n] for n in self.names])  # (n_pop, k)

    def metrics(self, sums: np.ndarray) -> dict:
        """Ratio and calibration metrics from summed statistics ``sums`` of shape (B, k)."""
        cal = sums[:, [self.pos[n] for n in self.cal_names]] if self.prob else None
        out = {}
        for key, ratio in self.ratios.items():
            out[key] = brier_from_sums(cal) if ratio is None else _ratio(sums[:, self.pos[ratio[0]]],
                                                                         sums[:, self.pos[ratio[1]]])
        if self.prob:
            out[("", "ece")] = ece_from_sums(cal)
        return out

    def rank(self, counts: np.ndarray, grid: np.ndarray | None = None):
        """(B, 3) AUROC, AUPRC, FPR@80%TPR for count rows (B, n_pop); with ``grid`` also the
        (B, len(grid)) ROC (TPR at FPR = grid) and PR (precision at recall = grid) curves."""
        res = np.empty((len(counts), 3))
        if grid is None:
            for b, c in enumerate(counts):
                res[b] = self.sorted.all_rank_metrics(c[self.idx_sorted])
            return res
        roc, pr = np.empty((len(counts), len(grid))), np.empty((len(counts), len(grid)))
        for b, c in enumerate(counts):
            res[b], roc[b], pr[b] = self.sorted.rank_metrics_and_curves(c[self.idx_sorted], grid)
        return res, roc, pr


def bootstrap_metrics(predictions: pd.DataFrame, screens: pd.DataFrame | None, stays: pd.DataFrame, *,
                      thresholds=None, models=None, reference: str | None = "news2",
                      n_resamples: int = 1000, seed=0, window_h: float = 48.0, silencing_h: float = 48.0,
                      new_data_only: bool = True, n_bins: int = 10, ci: float = 0.95,
                      check_range: bool = True, progress: bool = False,
                      curve_points: int = 0, prepared: dict | None = None) -> BootstrapResult:
    """Point estimates, cluster-bootstrap CIs and paired differences for every model.

    Parameters
    ----------
    predictions : DataFrame
        Contract ``predictions`` table (any number of models).
    screens : DataFrame or None
        Contract ``screens`` table: the population (every stay of it is resampled, for every
        model) and the ``new_data`` hours. ``None``: the union of predicted (stay, screen_time)
        pairs, all screened.
    stays : DataFrame
        Contract ``stays`` table (``stay_id``, ``onset_time``).
    thresholds : DataFrame or dict, optional
        Operating points (``model, operating_point, threshold``); threshold metrics are computed
        for each. See :func:`evaluation.operating_points.choose_thresholds`.
    models : list of str, optional
        Models to evaluate (default: all in ``predictions``); each must be present.
    reference : str or None, default "news2"
        Paired differences are model minus this model (skipped when None or absent).
    n_resamples : int, default 1000
    seed : int or numpy SeedSequence
        Seed of the local ``np.random.default_rng``; same seed, same resamples.
    window_h, silencing_h : float
        Screen label / protocol window and protocol silencing (hours).
    new_data_only : bool, default True
        Screen only hours with new data.
    n_bins : int, default 10
        ECE bins.
    ci : float, default 0.95
    check_range : bool, default True
        Raise when a threshold lies outside a model's score range on the eligible screens (pass
        False for thresholds carried from another split to a small one).
    progress : bool, default False
        tqdm progress bar over resample blocks.
    curve_points : int, default 0
        When > 0, ROC and PR curves with pointwise CI bands on this many evenly spaced FPR /
        recall values (``BootstrapResult.bands``), from the same resamples.
    prepared : dict of str to ScreenSet, optional
        Each model's screens from :func:`evaluation.protocol.prepare_screens` (or a
        ``ScreenSet.subset`` of them): reused instead of validating and joining the tables again
        (``predictions``, ``screens``, ``stays`` and ``models`` are then ignored).

    Returns
    -------
    BootstrapResult
    """
    ops = normalise_thresholds(thresholds)
    if prepared is None:
        validate_predictions(predictions, stays, models=list(dict.fromkeys([*(models or []), *ops["model"]])))
        models = list(predictions["model"].unique()) if models is None else list(models)
        if screens is None:
            screens = predictions[["stay_id", "screen_time"]].drop_duplicates().assign(new_data=True)
        prepared = {m: prepare_screens(predictions, stays, screens, model=m, new_data_only=new_data_only)
                    for m in models}
    stats = {}
    population = next(iter(prepared.values())).population
    for m, ss in prepared.items():
        mops = ops.loc[ops["model"] == m]
        if check_range and len(ss.frame):
            lo, hi = ss.frame["risk"].min(), ss.frame["risk"].max()
            for op, t in zip(mops["operating_point"], mops["threshold"]):
                if not lo <= t <= hi:
                    raise ValueError(f"thresholds: {m} operating point '{op}' threshold {t} is outside "
                                     f"the score range [{lo}, {hi}]")
        stats[m] = _ModelStats(ss, mops, window_h=window_h, silencing_h=silencing_h, n_bins=n_bins)
    n_pop = len(population)

    # point estimates on the original data (every stay once)
    ones = np.ones((1, n_pop), dtype=np.int32)
    grid = np.linspace(0.0, 1.0, curve_points) if curve_points else None
    estimates, curves = {}, {}
    for m, st in stats.items():
        est = {k: float(v[0]) for k, v in st.metrics(ones @ st.per_stay).items()}
        r = st.rank(ones, grid)
        if grid is not None:
            r, roc, pr = r
            curves[m] = {"roc": [roc[0], np.empty((n_resamples, len(grid)))],
                         "pr": [pr[0], np.empty((n_resamples, len(grid)))]}
        r = r[0]
        est.update({("", "auroc"): r[0], ("", "auprc"): r[1], ("", "fpr_at_80_tpr"): r[2]})
        estimates[m] = est

    samples = {m: {k: np.empty(n_resamples) for k in estimates[m]} for m in stats}
    blocks = _iter_counts(n_pop, n_resamples, seed)
    if progress:
        from tqdm.auto import tqdm
        blocks = tqdm(blocks, total=-(-n_resamples // _CHUNK), desc="bootstrap", unit="block")
    for start, counts in blocks:
        sl = slice(start, start + len(counts))
        cf = counts.astype("float64")
        for m, st in stats.items():
            for k, v in st.metrics(cf @ st.per_stay).items():
                samples[m][k][sl] = v
            r = st.rank(counts, grid)
            if grid is not None:
                r, curves[m]["roc"][1][sl], curves[m]["pr"][1][sl] = r
            samples[m][("", "auroc")][sl] = r[:, 0]
            samples[m][("", "auprc")][sl] = r[:, 1]
            samples[m][("", "fpr_at_80_tpr")][sl] = r[:, 2]

    thr = {(m, op): t for m, st in stats.items() for op, t in st.ops}
    return assemble_result(estimates, samples, thr, n_resamples=n_resamples, ci=ci, reference=reference,
                           curves=curves if grid is not None else None, grid=grid)


def assemble_result(estimates: dict, samples: dict, thr: dict, *, n_resamples: int, ci: float,
                    reference: str | None, curves: dict | None = None, grid=None) -> BootstrapResult:
    """The :class:`BootstrapResult` of point estimates and resample values per model.

    ``estimates[model][(operating_point, metric)]`` is a float, ``samples`` the same keys with
    arrays of ``n_resamples`` values, ``thr[(model, operating_point)]`` the threshold; ``curves``
    ``{model: {"roc"|"pr": [estimate on grid, (n_resamples, len(grid)) samples]}}``. Shared by
    :func:`bootstrap_metrics` and the count-based evaluation (:mod:`evaluation.counts`).
    """
    rows, srows = [], []
    for m in estimates:
        for (op, metric), est in estimates[m].items():
            lo, hi = percentile_ci(samples[m][(op, metric)], ci)
            rows.append((m, op, thr.get((m, op), np.nan), metric, est, lo, hi, n_resamples))
            srows.append(pd.DataFrame({"model": m, "operating_point": op, "metric": metric,
                                       "resample": np.arange(n_resamples), "value": samples[m][(op, metric)]}))
    table = pd.DataFrame(rows, columns=["model", "operating_point", "threshold", "metric", "estimate",
                                        "ci_low", "ci_high", "n_resamples"])
    drows = []
    if reference is not None and reference in estimates:
        for m in estimates:
            if m == reference:
                continue
            for key, est in estimates[m].items():
                if key not in estimates[reference]:
                    continue
                lo, hi, p = difference_summary(samples[m][key], samples[reference][key], ci)
                drows.append((m, reference, key[0], key[1], est - estimates[reference][key], lo, hi, p))
    differences = pd.DataFrame(drows, columns=["model", "reference", "operating_point", "metric",
                                               "difference", "ci_low", "ci_high", "p_value"])
    samples_df = pd.concat(srows, ignore_index=True) if srows else pd.DataFrame(
        columns=["model", "operating_point", "metric", "resample", "value"])
    bands = _bands(curves, grid, ci) if curves is not None else None
    return BootstrapResult(table=table, differences=differences, samples=samples_df, bands=bands)


def _bands(curves: dict, grid: np.ndarray, ci: float) -> pd.DataFrame:
    a = (1 - ci) / 2
    parts = []
    for m, by_curve in curves.items():
        for name, (est, smp) in by_curve.items():
            with warnings.catch_warnings():  # a grid point undefined in every resample stays NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                lo, hi = np.nanquantile(smp, [a, 1 - a], axis=0)
            parts.append(pd.DataFrame({"model": m, "curve": name, "x": grid, "estimate": est,
                                       "ci_low": lo, "ci_high": hi}))
    return pd.concat(parts, ignore_index=True) if parts else None
