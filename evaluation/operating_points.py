"""Operating points: thresholds chosen on the development split, applied unchanged to the test split.

Three operating points per model, as in the SepsisFinder study:

``news2>=5`` / ``news2>=7``
    the threshold whose protocol sensitivity (septic stays warned within the window, see
    :mod:`evaluation.protocol`) is closest to that of NEWS2 >= 5 / >= 7 on the development split;
    NEWS2 itself uses 5 and 7.
``sens85``
    the threshold whose protocol sensitivity is closest to 85 %.

Protocol sensitivity need not be monotone in the threshold (an earlier alarm can silence a later,
in-window one), so the search evaluates the protocol on a grid of score quantiles and refines
around the best grid point (``n_grid`` points per level, until one distinct score is left); ties go
to the higher threshold (fewer alarms). :func:`apply_thresholds` then runs the protocol on the test
split with the thresholds as chosen.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from evaluation.operating_points import choose_thresholds, apply_thresholds
>>> t0 = pd.Timestamp("2020-01-01")
>>> hours = np.tile(np.arange(1, 21), 10); stay = np.repeat(np.arange(10), 20)
>>> stays = pd.DataFrame({"stay_id": range(10),
...                       "onset_time": [t0 + pd.Timedelta(hours=15) if s < 4 else pd.NaT for s in range(10)]})
>>> near = (stay < 4) & (hours >= 8)
>>> times = t0 + pd.to_timedelta(hours, unit="h")
>>> risks = {"news2": 3 + 4 * near + (stay % 2), "cpn": 0.2 + 0.5 * near + 0.01 * hours}
>>> pred = pd.concat([pd.DataFrame({"stay_id": stay, "screen_time": times, "model": m, "risk": r,
...                                 "fold": 0, "split": "dev"}) for m, r in risks.items()])
>>> th = choose_thresholds(pred, None, stays)
>>> th.query("model == 'cpn'")["operating_point"].tolist()
['news2>=5', 'news2>=7', 'sens85']
>>> res = apply_thresholds(th, pred, None, stays)
>>> float(res.summary.query("model == 'cpn' and operating_point == 'sens85'")["sensitivity"].iloc[0])
1.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import normalise_thresholds
from .metrics import screen_labels, threshold_metrics
from .protocol import ScreenSet, prepare_screens, run_protocol, silence, validate_predictions

__all__ = ["choose_thresholds", "apply_thresholds", "threshold_for_sensitivity", "OperatingPointResult",
           "sensitivity_search", "drive_searches"]

_NS_PER_H = 3_600_000_000_000


class ThresholdSweep:
    """The protocol's outcome as a function of the threshold, with the joins done once.

    Calling it gives the protocol sensitivity; :meth:`outcome` also counts the fired and the true
    alarms (:mod:`evaluation.burden` draws alarm burden against sensitivity from it).
    """

    def __init__(self, ss: ScreenSet, silencing_h: float, window_h: float):
        f = ss.frame
        self.risk = f["risk"].to_numpy()
        self.code = ss.stay_index
        self.t_h = f["screen_time"].to_numpy().astype("datetime64[ns]").astype("int64") / _NS_PER_H
        o = f["onset_in_h"].to_numpy()
        with np.errstate(invalid="ignore"):
            self.in_window = (o > 0) & (o <= window_h)
        self.screenable = ss.screenable
        self.n_screenable = int(ss.screenable.sum())
        self.silencing_h = silencing_h

    def outcome(self, threshold: float) -> tuple[int, int, int]:
        """(screenable septic stays detected, fired alarms, true alarms) at ``threshold``."""
        cand = np.flatnonzero(self.risk >= threshold)
        fired = cand[silence(self.code[cand], self.t_h[cand], self.silencing_h)]
        true = fired[self.in_window[fired]]
        hit = np.zeros(len(self.screenable), dtype=bool)
        hit[self.code[true]] = True
        return int((hit & self.screenable).sum()), int(len(fired)), int(len(true))

    def __call__(self, threshold: float) -> float:
        if not self.n_screenable:
            return float("nan")
        return self.outcome(threshold)[0] / self.n_screenable


def threshold_for_sensitivity(ss: ScreenSet, target: float, *, silencing_h: float = 48.0,
                              window_h: float = 48.0, n_grid: int = 64) -> tuple[float, float]:
    """The threshold whose protocol sensitivity is closest to ``target``; returns (threshold, sensitivity).

    Candidates are the model's distinct scores on the eligible screens (searched coarse to fine).
    """
    if n_grid < 4:
        raise ValueError(f"n_grid must be at least 4, got {n_grid}")
    scores = np.unique(ss.frame["risk"].to_numpy())
    if not len(scores):
        raise ValueError(f"model {ss.model}: no eligible screens to choose a threshold on")
    sens = ThresholdSweep(ss, silencing_h, window_h)
    return drive_searches({0: sensitivity_search(len(scores), target, n_grid)}, {0: scores},
                          lambda asked: {0: np.array([sens(float(t)) for t in asked[0]])})[0]


def sensitivity_search(n: int, target: float, n_grid: int = 64):
    """The coarse-to-fine search over ``n`` sorted candidate thresholds, as a generator.

    It yields arrays of candidate indices and is sent back the protocol sensitivity at each; it
    returns ``(index, sensitivity)`` of the candidate closest to ``target`` (ties: the highest
    threshold). Several searches run in lockstep with :func:`drive_searches`, so that a
    partitioned run asks every part once per round for all of them.

    Examples
    --------
    >>> sens = np.linspace(1.0, 0.0, 1000)          # sensitivity falls as the threshold rises
    >>> drive_searches({"m": sensitivity_search(1000, 0.5, 16)}, {"m": np.arange(1000.0)},
    ...                lambda asked: {"m": sens[asked["m"].astype(int)]})
    {'m': (500.0, 0.49949949949949946)}
    """
    cache: dict[int, float] = {}
    lo, hi = 0, n - 1
    while True:
        if hi - lo + 1 <= n_grid:
            idx = np.arange(lo, hi + 1)
        else:
            idx = np.unique(np.round(np.linspace(lo, hi, n_grid)).astype(int))
        need = [int(i) for i in idx if int(i) not in cache]
        if need:
            got = yield np.asarray(need)
            cache.update(zip(need, (float(v) for v in got)))
        vals = np.array([cache[int(i)] for i in idx])
        gap = np.abs(vals - target)
        gap = np.where(np.isnan(gap), np.inf, gap)
        # ties -> the highest threshold (fewest alarms)
        k = len(idx) - 1 - int(np.argmin(gap[::-1]))
        best = (int(idx[k]), float(vals[k]))
        if len(idx) == hi - lo + 1:
            return best
        lo, hi = int(idx[max(k - 1, 0)]), int(idx[min(k + 1, len(idx) - 1)])


def drive_searches(searches: dict, candidates: dict, evaluate) -> dict:
    """Run :func:`sensitivity_search` generators in lockstep; returns ``{key: (threshold, sensitivity)}``.

    ``candidates[key]`` are the sorted thresholds of search ``key``; ``evaluate({key: thresholds})``
    returns ``{key: sensitivities}`` for every search still running (one call per round).
    """
    asked, done = {}, {}
    for key, gen in searches.items():
        try:
            asked[key] = next(gen)
        except StopIteration as stop:
            done[key] = stop.value
    while asked:
        got = evaluate({key: np.asarray(candidates[key])[idx] for key, idx in asked.items()})
        nxt = {}
        for key, idx in asked.items():
            try:
                nxt[key] = searches[key].send(got[key])
            except StopIteration as stop:
                done[key] = stop.value
        asked = nxt
    return {key: (float(np.asarray(candidates[key])[i]), s) for key, (i, s) in
            ((k, done[k]) for k in searches)}


def _check_range(ss: ScreenSet, op: str, t: float, where: str):
    r = ss.frame["risk"]
    if not len(r):
        return
    lo, hi = float(r.min()), float(r.max())
    if not lo <= t <= hi:
        raise ValueError(f"{where}: {ss.model} operating point '{op}' threshold {t} is outside the "
                         f"score range [{lo}, {hi}] of its eligible screens")


def choose_thresholds(predictions: pd.DataFrame, screens: pd.DataFrame | None, stays: pd.DataFrame, *,
                      models=None, reference: str = "news2", news2_cuts=(5, 7),
                      target_sensitivity: float = 0.85, silencing_h: float = 48.0, window_h: float = 48.0,
                      new_data_only: bool = True, n_grid: int = 64) -> pd.DataFrame:
    """Choose every model's operating points on development-split tables.

    Parameters
    ----------
    predictions, screens, stays : DataFrame
        Development split contract tables (``screens`` may be None: every prediction is a screen).
    models : list of str, optional
        Models to choose thresholds for (default: all in ``predictions``).
    reference : str, default "news2"
        The model whose cut-offs ``news2_cuts`` define the matched-sensitivity points; must be present.
    news2_cuts : tuple of float, default (5, 7)
    target_sensitivity : float, default 0.85
    silencing_h, window_h, new_data_only
        Protocol settings (see :func:`evaluation.protocol.run_protocol`).
    n_grid : int
        Thresholds evaluated per refinement level.

    Returns
    -------
    DataFrame
        ``model, operating_point, threshold, target_sensitivity, dev_sensitivity``.
    """
    validate_predictions(predictions, stays, models=[reference, *(models or [])])
    models = list(predictions["model"].unique()) if models is None else list(models)
    if screens is None:
        screens = predictions[["stay_id", "screen_time"]].drop_duplicates().assign(new_data=True)
    prep = {m: prepare_screens(predictions, stays, screens, model=m, new_data_only=new_data_only)
            for m in dict.fromkeys([reference, *models])}
    ref_sens = ThresholdSweep(prep[reference], silencing_h, window_h)
    targets = []
    for cut in news2_cuts:
        _check_range(prep[reference], f"{reference}>={cut:g}", float(cut), "choose_thresholds")
        targets.append((f"{reference}>={cut:g}", ref_sens(float(cut)), float(cut)))
    targets.append((f"sens{round(100 * target_sensitivity):d}", float(target_sensitivity), None))
    rows = []
    for m in models:
        for op, target, ref_cut in targets:
            if m == reference and ref_cut is not None:
                t, s = ref_cut, target
            else:
                t, s = threshold_for_sensitivity(prep[m], target, silencing_h=silencing_h,
                                                 window_h=window_h, n_grid=n_grid)
            rows.append((m, op, t, target, s))
    return pd.DataFrame(rows, columns=["model", "operating_point", "threshold", "target_sensitivity",
                                       "dev_sensitivity"])


@dataclass
class OperatingPointResult:
    """What :func:`apply_thresholds` returns.

    Attributes
    ----------
    summary : DataFrame
        One row per (model, operating point): the protocol summary (sensitivity, alarms per
        admission, false alarms per true alarm, ...) plus screen-level ``screen_sensitivity``,
        ``screen_specificity``, ``screen_precision``.
    alarms : DataFrame
        Contract ``alarms`` table of every (model, operating point), with ``operating_point``.
    alarm_outcomes, stay_outcomes : DataFrame
        As in :class:`evaluation.protocol.ProtocolResult`, with ``model`` and ``operating_point``.
    """

    summary: pd.DataFrame
    alarms: pd.DataFrame
    alarm_outcomes: pd.DataFrame
    stay_outcomes: pd.DataFrame


def apply_thresholds(thresholds, predictions: pd.DataFrame, screens: pd.DataFrame | None,
                     stays: pd.DataFrame, *, silencing_h: float = 48.0, window_h: float = 48.0,
                     new_data_only: bool = True, check_range: bool = True,
                     prepared: dict | None = None) -> OperatingPointResult:
    """Run the protocol on (test-split) tables with thresholds chosen elsewhere, unchanged.

    Parameters
    ----------
    thresholds : DataFrame or dict
        From :func:`choose_thresholds` (``model, operating_point, threshold``) or
        ``{model: {operating_point: threshold}}``.
    predictions, screens, stays : DataFrame
        Test-split contract tables.
    check_range : bool, default True
        Raise when a threshold lies outside the model's score range on these screens.
    prepared : dict of str to ScreenSet, optional
        Each model's :func:`evaluation.protocol.prepare_screens` result, reused (the tables are
        then not read again: windows and silencing periods vary, the screens do not).

    Returns
    -------
    OperatingPointResult
    """
    ops = normalise_thresholds(thresholds)
    if prepared is None:
        validate_predictions(predictions, stays, models=list(ops["model"].unique()))
        if screens is None:
            screens = predictions[["stay_id", "screen_time"]].drop_duplicates().assign(new_data=True)
    summaries, alarms, aos, sos = [], [], [], []
    for m, g in ops.groupby("model", sort=False):
        ss = prepared[m] if prepared is not None else prepare_screens(predictions, stays, screens, model=m,
                                                                      new_data_only=new_data_only)
        y = screen_labels(ss.frame["onset_in_h"].to_numpy(), window_h)
        for op, t in zip(g["operating_point"], g["threshold"]):
            if check_range:
                _check_range(ss, op, float(t), "apply_thresholds")
            res = run_protocol(None, stays, threshold=float(t), silencing_h=silencing_h, window_h=window_h,
                               prepared=ss)
            sm = dict(res.summary, operating_point=op)
            scr = threshold_metrics(y, ss.frame["risk"].to_numpy(), float(t))
            sm.update({f"screen_{k}": v for k, v in scr.items()})
            summaries.append(sm)
            alarms.append(res.alarms.assign(operating_point=op))
            aos.append(res.alarm_outcomes.assign(model=m, operating_point=op))
            sos.append(res.stay_outcomes.assign(model=m, operating_point=op))
    summary = pd.DataFrame(summaries)
    if len(summary):
        first = ["model", "operating_point", "threshold"]
        summary = summary[first + [c for c in summary.columns if c not in first]]
    cat = lambda xs: pd.concat(xs, ignore_index=True) if xs else pd.DataFrame()  # noqa: E731
    return OperatingPointResult(summary=summary, alarms=cat(alarms), alarm_outcomes=cat(aos),
                                stay_outcomes=cat(sos))
