"""The report's further sections on mergeable counts: what a partitioned run adds to the main tables.

:mod:`evaluation.counts` gives the main tables of a run whose screens no process holds at once.
This module gives the rest of the report the same way, each section from counts that every part
computes on its own stays and that add up over parts (a part holds whole stays, so anything per
stay is exact per part). Each table keeps the home of its metric (the functions named below);
only the counting is here.

================================  ==========================================================================
section (file)                    counts per part, and what is exact
================================  ==========================================================================
calibration (``calibration.csv``) dev: per score bin (2^16 logit bins; NEWS2 per value) and label, the
                                  screens and their summed logit; the Platt scaler is fitted on these cells
                                  weighted by their counts (:class:`evaluation.calibration.PlattScaler`).
                                  test: :func:`evaluation.calibration.calibration_sums` before and after,
                                  exact given the scaler. The fit on cells differs from the fit on the
                                  screens by the spread of the logits within a bin (width 4.9e-4): the
                                  scaler's slope and intercept move by about 1e-6 (tested), as much as
                                  the optimiser's own tolerance.
decision (``decision_curve.csv``) the same scalers (fitted on the dev screens with new data); per part the
                                  true and false positives at each threshold probability
                                  (:func:`evaluation.decision.net_benefit_from_counts`).
alarm burden                      the sweep's thresholds are order statistics of the test scores: the
(``alarm_burden.csv``)            histogram says which bin holds each, one more pass fetches the distinct
                                  scores in those bins with their counts, so the thresholds are exact;
                                  then per part the protocol's counts at each
                                  (:func:`evaluation.burden.burden_row`): exact.
sensitivity (``sensitivity.csv``) :func:`evaluation.sensitivity.protocol_sensitivity` per part, its counts
                                  summed and the rates recomputed; the screen-level rates from summed
                                  true/false positives: exact.
AUROC by hours since admission    per band and label a score histogram (as the main table's AUROC:
(``tables/auroc_by_hours_band``)  binned, within :meth:`evaluation.counts.RankCounts.auroc_tie_bound`).
subgroups (``subgroups.csv``)     the stay-level subgroups' levels are fixed up front from the stays table;
                                  per level, :class:`evaluation.counts.ModelCounts` on its stays (Poisson
                                  bootstrap as the main table; protocol metrics exact, rank metrics binned).
DeLong (``paired_differences``)   exact DeLong/Obuchowski on the binned scores: a second pass turns the
                                  merged histograms of each pair's common screens into every screen's
                                  placement value, and sums per stay what the covariance needs
                                  (:func:`evaluation.delong.clustered_covariance`). Against the raw scores
                                  only the ties added by binning differ.
utility (``utility.json``)        :func:`evaluation.utility.utility_from_tables` per part; its observed,
                                  best and inaction sums add up (:func:`evaluation.utility.normalised_utility`).
alarm examples                    each part's top true and false alarms, merged
(``alarm_explanations.csv``,      (:func:`evaluation.explained_alarms.merge_alarm_explanations`); the share
``tables/context_top_share``)     of alarms led by a context factor from summed counts: exact.
================================  ==========================================================================

:func:`evaluate_counts` runs the passes, given ``over(split, fn, merge)`` that applies ``fn(k,
predictions, screens, stays)`` to every part ``k`` of a split and merges the results:
:func:`evaluation.counts.evaluate_run_counts` over tables in memory, the partitioned run
(:mod:`sepsiscope.scale.evaluate`) over groups of parts on Dask workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import expit

from .bootstrap import assemble_result, normalise_thresholds
from .burden import BURDEN_COLUMNS, burden_row, sweep_thresholds, threshold_ranks
from .calibration import PlattScaler, _logit, calibration_sums
from .counts import (_COUNT_COLUMNS, RankCounts, _model_counts, _ratio, choose_thresholds_from_counts,
                     detected_at, dev_candidates, estimates_of, grid_for, poisson_weights, split_counts)
from .decision import DEFAULT_THRESHOLDS, net_benefit_from_counts, treat_all
from .delong import clustered_covariance, delong_result, iid_covariance
from .explained_alarms import alarm_explanations, merge_alarm_explanations
from .metrics import screen_labels
from .operating_points import ThresholdSweep
from .paired import OPERATING_POINT_METRICS, RANK_METRICS, delong_columns, model_pairs
from .protocol import prepare_screens
from .recalibration import PLATT_SUFFIX, calibration_row, reliability_rows, with_new_data
from .sensitivity import protocol_sensitivity
from .stratified import band_index, band_labels, band_rows, band_table, context_top_share, merge_context_top_share
from .subgroup_metrics import _COLUMNS as SUBGROUP_COLUMNS
from .subgroup_metrics import REPORT_SUBGROUPS
from .subgroups import define_subgroups, subgroup_jobs
from .tables import join_labels
from .utility import normalised_utility, utility_from_tables

__all__ = ["SectionPlan", "section_counts", "merge_sections", "evaluate_counts", "fit_platt_cells", "platt_cells",
           "delong_counts", "EXACT_CANDIDATES_MAX", "TraceRows", "trace_rows", "merge_trace_rows", "primary_model"]

log = logging.getLogger(__name__)

_SENS_KEYS = ["window_h", "silencing_h", "model", "operating_point", "threshold"]
_SCREEN_COUNTS = ["_tp", "_fp", "_pos", "_neg"]


# --------------------------------------------------------------------------- risk traces

@dataclass
class TraceRows:
    """The report's risk traces of a partitioned run: a few septic stays' predictions and alarms.

    ``stays``: candidates ``stay_id, fired`` (fired at the model's first operating point);
    ``predictions`` and ``alarms``: their rows (one model, screens with new data). Merging keeps the
    first ``k`` stays in the order the single-process report draws them (fired first, then by
    ``stay_id``), so parts give the same rows in any grouping.
    """

    stays: pd.DataFrame
    predictions: pd.DataFrame
    alarms: pd.DataFrame
    k: int

    def pruned(self) -> TraceRows:
        keep = self.stays.sort_values(["fired", "stay_id"], ascending=[False, True], kind="mergesort")
        ids = keep["stay_id"].to_numpy()[:self.k]
        p = self.predictions[self.predictions["stay_id"].isin(ids)]
        return TraceRows(keep[keep["stay_id"].isin(ids)].reset_index(drop=True),
                         p.sort_values(["stay_id", "screen_time"], kind="mergesort").reset_index(drop=True),
                         self.alarms[self.alarms["stay_id"].isin(ids)].reset_index(drop=True), self.k)


def primary_model(models, reference: str | None = "news2") -> str | None:
    """The model of the report's risk traces, as :func:`evaluation.report.write_report` picks it by default."""
    models = list(models)
    return "cpn" if "cpn" in models else next((m for m in models if m != reference), models[0] if models else None)


def trace_rows(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, alarms: pd.DataFrame,
               thresholds, *, model: str, k: int = 3) -> TraceRows | None:
    """A part's candidates for the risk traces of ``model``: its septic stays scored by ``model`` (at most
    ``k`` fired at the model's first operating point and ``k`` not), with their predictions and alarms."""
    ops = normalise_thresholds(thresholds)
    ops = ops[ops["model"] == model]
    if not len(ops) or not len(predictions):
        return None
    threshold = float(ops["threshold"].iloc[0])
    p = with_new_data(predictions[predictions["model"] == model], screens)
    septic = stays.loc[stays["onset_time"].notna(), "stay_id"]
    ids = np.unique(p.loc[p["stay_id"].isin(septic), "stay_id"].to_numpy())
    a = alarms[alarms["model"] == model] if alarms is not None else alarms
    fired = a.loc[a["fired"].astype(bool).to_numpy() & np.isclose(a["threshold"].to_numpy("float64"), threshold),
                  "stay_id"] if a is not None else []
    cand = pd.DataFrame({"stay_id": ids, "fired": np.isin(ids, np.asarray(fired))})
    # k fired and k not: enough for the first k of any union of parts
    cand = pd.concat([cand[cand["fired"]].head(k), cand[~cand["fired"]].head(k)], ignore_index=True)
    a = a if a is not None else pd.DataFrame(columns=["stay_id"])
    return TraceRows(cand, p[p["stay_id"].isin(cand["stay_id"])], a[a["stay_id"].isin(cand["stay_id"])], k)


def merge_trace_rows(items) -> TraceRows | None:
    """The first ``k`` stays of the parts' :class:`TraceRows` (Nones skipped)."""
    items = [x for x in items if x is not None]
    if not items:
        return None
    return TraceRows(*(pd.concat([getattr(x, n) for x in items], ignore_index=True)
                       for n in ("stays", "predictions", "alarms")), items[0].k).pruned()


# --------------------------------------------------------------------------- merging

def _add(a, b):
    """Sum of two nested results (dicts, lists and tuples of arrays, numbers, counts or frames); None is 0."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict):
        return {k: _add(a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b])}
    if isinstance(a, (list, tuple)) and not isinstance(a, str):
        return type(a)(_add(x, y) for x, y in zip(a, b))
    if isinstance(a, pd.DataFrame):
        return pd.concat([a, b], ignore_index=True)
    return a + b


def merge_sections(items) -> dict | None:
    """Sum of the parts' :func:`section_counts` (Nones skipped)."""
    out = None
    for it in items:
        out = _add(out, it)
    if out is None:
        return None
    # frames are concatenated by _add; reduce them again so that a merge stays small
    if isinstance(out.get("sensitivity"), pd.DataFrame):
        out["sensitivity"] = _sum_rows(out["sensitivity"])
    # the alarm examples stay concatenated (at most 2 * per_kind alarms per model and part): the
    # plan's per_kind and model order are not known here; tables_from_sections picks the top
    if out.get("context") is not None:
        out["context"] = merge_context_top_share([out["context"]])
    return out


def _sum_rows(frame: pd.DataFrame) -> pd.DataFrame:
    counts = [*_COUNT_COLUMNS, *_SCREEN_COUNTS]
    g = frame.groupby(_SENS_KEYS, sort=False, dropna=False)[counts].sum().reset_index()
    return g


# --------------------------------------------------------------------------- dev: Platt cells

def platt_cells(predictions: pd.DataFrame, screens: pd.DataFrame, model: str, grid, *, new_data_only: bool):
    """A model's dev screens as (4, bins) cells: [negatives, positives, their summed x] per score bin.

    ``x`` is what :class:`evaluation.calibration.PlattScaler` fits on: the logit of a probability
    (clipped as it clips), the raw score otherwise. ``label`` is the screens' label, as
    :func:`evaluation.recalibration.calibrate_predictions` reads it.
    """
    p = predictions[predictions["model"] == model]
    d = join_labels(with_new_data(p, screens) if new_data_only else p, screens)
    risk, y = d["risk"].to_numpy("float64"), d["y"].to_numpy().astype(bool)
    x = _logit(risk) if grid.probability else risk
    b = grid.bins(risk, what=f"{model} risk")
    out = np.zeros((4, grid.n_bins))
    for j, sel in enumerate((~y, y)):
        out[j] = np.bincount(b[sel], minlength=grid.n_bins)
        out[2 + j] = np.bincount(b[sel], weights=x[sel], minlength=grid.n_bins)
    return out


def fit_platt_cells(cells: np.ndarray, probability: bool) -> PlattScaler:
    """A Platt scaler fitted on :func:`platt_cells` (each occupied cell one row at its mean x, weighted by its count)."""
    rows = []
    for j, label in ((0, 0), (1, 1)):
        n = cells[j]
        keep = n > 0
        rows.append((cells[2 + j][keep] / n[keep], np.full(int(keep.sum()), label), n[keep]))
    x, y, w = (np.concatenate(v) for v in zip(*rows))
    risk = expit(x) if probability else x
    return PlattScaler(input="probability" if probability else "score").fit(risk, y, sample_weight=w)


# --------------------------------------------------------------------------- the plan of the test pass

@dataclass
class SectionPlan:
    """What every part needs to count the sections on the evaluated split (chosen on the client)."""

    thresholds: pd.DataFrame
    models: list
    reference: str | None = "news2"
    window_h: float = 48.0
    silencing_h: float = 48.0
    calibration: dict = field(default_factory=dict)   # model -> Platt scaler (all dev screens)
    decision: dict = field(default_factory=dict)      # model -> (scaler, label) (dev screens with new data)
    burden: dict = field(default_factory=dict)        # model -> thresholds, high to low
    subgroups: list = field(default_factory=list)     # (subgroup, level, stay ids)
    subgroup_n_boot: int = 200
    seed: int = 0
    sensitivity: bool = True
    pt: np.ndarray = field(default_factory=lambda: DEFAULT_THRESHOLDS)
    explain_per_kind: int = 3


def _aligned(prepared: dict, a: str, b: str):
    keys = ["stay_id", "screen_time"]
    fa, fb = prepared[a].frame, prepared[b].frame
    return fa.merge(fb[keys + ["risk"]], on=keys, how="inner", suffixes=("_a", "_b"))


def section_counts(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, plan: SectionPlan, *,
                   prepared: dict | None = None, utility_tables=None, explanations=None, alarms=None) -> dict | None:
    """One part's counts of every section (module docstring); None without screens.

    ``predictions, screens, stays``: the part's rows of the evaluated split (protocol screens, with
    ``label``); ``utility_tables``: the part's ``(predictions, screens)`` of every hourly row (PhysioNet);
    ``explanations`` and ``alarms``: the part's explanations of its fired alarms and its alarms.
    """
    if not len(screens):
        return None
    ops = normalise_thresholds(plan.thresholds)
    models = plan.models
    prepared = prepared or {m: prepare_screens(predictions, stays, screens, model=m) for m in models}
    grids = {m: grid_for(m, plan.reference) for m in models}
    out: dict = {}
    # protocol over other windows and silencing periods; screen-level rates as counts
    if plan.sensitivity:
        sens = protocol_sensitivity(ops, predictions, screens, stays)
        extra = []
        for r in sens.itertuples():
            ss = prepared[r.model]
            y = screen_labels(ss.frame["onset_in_h"].to_numpy(), r.window_h).astype(bool)
            alarm = ss.frame["risk"].to_numpy() >= r.threshold
            extra.append((int((y & alarm).sum()), int((~y & alarm).sum()), int(y.sum()), int((~y).sum())))
        out["sensitivity"] = sens[_SENS_KEYS + list(_COUNT_COLUMNS)].assign(
            **dict(zip(_SCREEN_COUNTS, np.array(extra, dtype="int64").reshape(-1, 4).T)))
    # AUROC within bands of hours since admission
    if "hours_since_admit" in screens.columns:
        hours = screens[["stay_id", "screen_time", "hours_since_admit"]]
        labels = band_labels()
        hb = {}
        for m in models:
            f = prepared[m].frame.merge(hours, on=["stay_id", "screen_time"], how="left")
            y = (f["onset_in_h"] <= plan.window_h).to_numpy()
            band = band_index(f["hours_since_admit"].to_numpy())
            bins = grids[m].bins(f["risk"].to_numpy())
            cell = np.where(band >= 0, band * grids[m].n_bins + bins, -1)
            size = len(labels) * grids[m].n_bins
            pos = np.bincount(cell[(cell >= 0) & y], minlength=size).reshape(len(labels), -1).astype("float64")
            neg = np.bincount(cell[(cell >= 0) & ~y], minlength=size).reshape(len(labels), -1).astype("float64")
            hb[m] = RankCounts(pos, neg)
        out["hours"] = hb
    # calibration before/after (every screen) and decision curve counts (screens with new data)
    cal, dec, rel = {}, {}, {}
    for m in models:
        p = predictions[predictions["model"] == m]
        if m in plan.calibration:
            d = join_labels(p, screens)
            y, risk = d["y"].to_numpy(), d["risk"].to_numpy("float64")
            cal[m] = [calibration_sums(y, risk), calibration_sums(y, plan.calibration[m].transform(risk)),
                      len(y), float(y.sum())]
        if m in plan.decision:
            d = join_labels(with_new_data(p, screens), screens)
            y = d["y"].to_numpy().astype(bool)
            cp = plan.decision[m][0].transform(d["risk"].to_numpy("float64"))
            # the report's reliability diagram: probabilities as they are, scores after Platt (dev)
            rel[m] = calibration_sums(y.astype(int), d["risk"].to_numpy("float64") if grids[m].probability else cp)
            # as evaluation.decision.net_benefit counts them, summed over the parts
            order = np.argsort(cp, kind="mergesort")
            q, ys = cp[order], y[order].astype("float64")
            pos_after = np.concatenate([np.cumsum(ys[::-1])[::-1], [0.0]])
            first = np.searchsorted(q, plan.pt, side="left")
            tp = pos_after[first]
            dec[m] = [tp, (len(q) - first) - tp, len(q), float(y.sum())]
    out["calibration"], out["decision"], out["reliability"] = cal, dec, rel
    # alarm burden at the (exact) sweep thresholds
    bur = {}
    for m, ts in plan.burden.items():
        ss = prepared[m]
        sweep = ThresholdSweep(ss, plan.silencing_h, plan.window_h)
        risk = ss.frame["risk"].to_numpy()
        rows = np.array([(int(np.sum(risk >= t)), *sweep.outcome(float(t))) for t in ts], dtype="int64").reshape(-1, 4)
        bur[m] = [rows, np.array([len(risk), sweep.n_screenable, len(ss.population)], dtype="int64")]
    out["burden"] = bur
    # subgroups: each level's counts (stays of the level in this part)
    subs = []
    for _, _, ids in plan.subgroups:
        sets = {m: ss.subset(ids) for m, ss in prepared.items()}
        first = sets[models[0]]
        if not len(first.population):
            subs.append(None)
            continue
        w = np.vstack([np.ones((1, len(first.population))),
                       poisson_weights(first.population, plan.subgroup_n_boot, plan.seed)])
        mc = {m: _model_counts(sets[m], ops.loc[ops["model"] == m], grids[m], weights=w, window_h=plan.window_h,
                               silencing_h=plan.silencing_h) for m in models}
        subs.append([mc, np.array([len(first.population), int(first.septic.sum()), len(first.frame)],
                                  dtype="int64")])
    out["subgroups"] = subs
    # each pair's histograms on its common screens (DeLong's placements need the merged ones)
    pairs = {}
    for a, b in model_pairs(models):
        both = _aligned(prepared, a, b)
        y = screen_labels(both["onset_in_h"].to_numpy(), plan.window_h).astype(bool)
        pairs[(a, b)] = [RankCounts.from_scores(y, grids[a].bins(both["risk_a"].to_numpy()), grids[a].n_bins),
                         RankCounts.from_scores(y, grids[b].bins(both["risk_b"].to_numpy()), grids[b].n_bins)]
    out["pairs"] = pairs
    if utility_tables is not None:
        up, us = utility_tables
        util = {}
        for r in ops.itertuples():
            res = utility_from_tables(up, us, threshold=float(r.threshold), model=r.model, missing="negative")
            util[(r.model, r.operating_point)] = np.array([res["observed"], res["best"], res["inaction"]])
        out["utility"] = util
    if explanations is not None and alarms is not None and len(explanations) and len(alarms):
        # each model's first operating point of the plan (as the single-process report's alarms put it
        # first), not the first of this part's alarms, so that every part explains the same point
        first = ops.drop_duplicates("model").set_index("model")["operating_point"]
        out["explained"] = merge_alarm_explanations(
            [alarm_explanations(explanations, alarms, predictions, stays, models=[m], operating_point=first[m],
                                per_kind=plan.explain_per_kind, window_h=plan.window_h)
             for m in models if m in first.index], per_kind=plan.explain_per_kind, models=models)
        out["context"] = context_top_share(explanations, alarms)
    return out


# --------------------------------------------------------------------------- DeLong on counts

def delong_counts(predictions: pd.DataFrame, screens: pd.DataFrame, stays: pd.DataFrame, pairs: dict, *,
                  reference: str | None = "news2", window_h: float = 48.0) -> dict | None:
    """One part's sums of DeLong's and Obuchowski's covariance, per pair, from the merged histograms.

    ``pairs``: ``{(a, b): [RankCounts of a, RankCounts of b]}`` on the pair's common screens of the
    whole split. A screen's placement value is read off the other class's histogram (a bin is one
    tie group), so the sums are those of :func:`evaluation.delong.auc_covariance` on the binned scores.
    """
    if not len(screens):
        return None
    models = list(dict.fromkeys([m for ab in pairs for m in ab]))
    prepared = {m: prepare_screens(predictions, stays, screens, model=m) for m in models}
    out = {}
    for (a, b), hists in pairs.items():
        both = _aligned(prepared, a, b)
        y = screen_labels(both["onset_in_h"].to_numpy(), window_h).astype(bool)
        _, code = np.unique(both["stay_id"].to_numpy(), return_inverse=True)
        k = int(code.max()) + 1 if len(code) else 0
        v10, v01, theta = [], [], []
        for m, col, h in ((a, "risk_a", hists[0]), (b, "risk_b", hists[1])):
            g = grid_for(m, reference)
            bins = g.bins(both[col].to_numpy())
            P, N = h.pos, h.neg
            n_pos, n_neg = float(P.sum()), float(N.sum())
            below_n = np.cumsum(N) - N + 0.5 * N           # negatives below a bin, ties count 1/2
            above_p = (n_pos - np.cumsum(P)) + 0.5 * P     # positives above a bin, ties count 1/2
            v10.append(below_n[bins[y]] / n_neg)
            v01.append(above_p[bins[~y]] / n_pos)
            theta.append(float(P @ below_n) / (n_pos * n_neg))
        v10, v01, th = np.array(v10), np.array(v01), np.array(theta)[:, None]
        m_k = np.bincount(code[y], minlength=k)
        n_k = np.bincount(code[~y], minlength=k)
        d10 = np.stack([np.bincount(code[y], weights=v, minlength=k) for v in v10]) - th * m_k
        d01 = np.stack([np.bincount(code[~y], weights=v, minlength=k) for v in v01]) - th * n_k
        out[(a, b)] = [d10 @ d10.T, d01 @ d01.T, d10 @ d01.T, (v10 - th) @ (v10 - th).T, (v01 - th) @ (v01 - th).T,
                       np.array([int((m_k > 0).sum()), int((n_k > 0).sum()), k, len(both)], dtype="int64")]
    return out


def _delong_table(pairs: dict, sums: dict) -> pd.DataFrame:
    rows = []
    for (a, b), hists in pairs.items():
        m, n = int(hists[0].pos.sum()), int(hists[0].neg.sum())
        s = sums.get((a, b)) if sums else None
        row = {"model_a": a, "model_b": b}
        if s is not None and m and n:
            i10, i01, i_all, _ = (int(v) for v in s[5])
            theta = np.array([hists[0].metrics()[0], hists[1].metrics()[0]])
            kw = dict(n_positive=m, n_negative=n)
            clustered = delong_result(theta, clustered_covariance(s[0], s[1], s[2], m=m, n=n, i10=i10, i01=i01,
                                                                  i_all=i_all), clustered=True, n_clusters=i_all, **kw)
            iid = delong_result(theta, iid_covariance(s[3], s[4], m=m, n=n), clustered=False, n_clusters=m + n, **kw)
            row.update(delong_columns(clustered, iid))
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- tables


def _sensitivity_table(frame: pd.DataFrame) -> pd.DataFrame:
    s = frame.copy()
    s["sensitivity"] = [_ratio(a, b) for a, b in zip(s["n_detected"], s["n_septic_screenable"])]
    s["alarm_precision"] = [_ratio(a, b) for a, b in zip(s["n_true_alarms"], s["n_alarms"])]
    s["alarms_per_admission"] = [_ratio(a, b) for a, b in zip(s["n_alarms"], s["n_stays"])]
    s["screens_per_admission"] = [_ratio(a, b) for a, b in zip(s["n_screens"], s["n_stays"])]
    s["false_alarms_per_true_alarm"] = [_ratio(a, b) for a, b in zip(s["n_false_alarms"], s["n_true_alarms"])]
    s["screen_sensitivity"] = [_ratio(a, b) for a, b in zip(s["_tp"], s["_pos"])]
    s["screen_specificity"] = [_ratio(n - f, n) for f, n in zip(s["_fp"], s["_neg"])]
    s["screen_precision"] = [_ratio(t, t + f) for t, f in zip(s["_tp"], s["_fp"])]
    return s.drop(columns=_SCREEN_COUNTS)


def _subgroup_table(plan: SectionPlan, counts: list, ci: float) -> pd.DataFrame:
    ops = normalise_thresholds(plan.thresholds)
    wanted = set(RANK_METRICS) | set(OPERATING_POINT_METRICS)
    parts = []
    for (name, level, _), c in zip(plan.subgroups, counts):
        if c is None:
            parts.append(pd.DataFrame([{"note": "no stays"}]).assign(subgroup=name, level=level))
            continue
        mc, n = c
        try:
            estimates, samples = {}, {}
            for m in plan.models:
                estimates[m], samples[m] = estimates_of(mc[m])
            thr = {(r.model, r.operating_point): r.threshold for r in ops.itertuples()}
            t = assemble_result(estimates, samples, thr, n_resamples=plan.subgroup_n_boot, ci=ci, reference=None).table
            part = t[t["metric"].isin(wanted)].drop(columns="threshold").assign(
                n_stays=int(n[0]), n_septic=int(n[1]), n_screens=int(n[2]))
        except ValueError as exc:
            part = pd.DataFrame([{"note": str(exc)}])
        parts.append(part.assign(subgroup=name, level=level))
    return pd.concat(parts, ignore_index=True).reindex(columns=SUBGROUP_COLUMNS)


def tables_from_sections(plan: SectionPlan, s: dict, delong: dict | None, *, ci: float = 0.95) -> dict:
    """The section tables (names of :class:`evaluation.summary.RunEvaluation`) from the merged counts."""
    out: dict = {}
    if s.get("sensitivity") is not None:
        out["sensitivity"] = _sensitivity_table(s["sensitivity"])
    if s.get("hours"):
        labels = band_labels()
        rows = []
        for m, rc in s["hours"].items():
            pos, neg = rc.pos, rc.neg
            rows += band_rows(m, labels, (pos + neg).sum(axis=1), pos.sum(axis=1),
                              lambda b: RankCounts(pos[b], neg[b]).metrics()[0])
        out["hours_bands"] = band_table(rows)
    if s.get("calibration"):
        out["calibration"] = pd.DataFrame([calibration_row(m, "platt", plan.calibration[m], before, after, n=n,
                                                           n_positive=k)
                                           for m, (before, after, n, k) in s["calibration"].items()])
    if s.get("reliability"):
        out["reliability"] = pd.concat([reliability_rows(m if grid_for(m, plan.reference).probability
                                                         else m + PLATT_SUFFIX, sums)
                                        for m, sums in s["reliability"].items()], ignore_index=True)
    if s.get("decision"):
        rows = [pd.DataFrame({"model": m, "calibration": plan.decision[m][1], "threshold": plan.pt,
                              "net_benefit": net_benefit_from_counts(tp, fp, n, plan.pt)})
                for m, (tp, fp, n, _) in s["decision"].items() if n]
        first = next(iter(s["decision"].values()))
        prev = first[3] / first[2] if first[2] else np.nan
        rows.append(pd.DataFrame({"model": "treat all", "calibration": "", "threshold": plan.pt,
                                  "net_benefit": treat_all(prev, plan.pt)}))
        rows.append(pd.DataFrame({"model": "treat none", "calibration": "", "threshold": plan.pt, "net_benefit": 0.0}))
        out["decision"] = pd.concat(rows, ignore_index=True)
    if s.get("burden") is not None:
        rows = []
        for m, (counts, tot) in s["burden"].items():
            rows += [burden_row(m, t, int(c[0]), int(tot[0]), int(c[1]), int(c[2]), int(c[3]), int(tot[1]),
                                int(tot[2])) for t, c in zip(plan.burden[m], counts)]
        out["burden"] = pd.DataFrame(rows, columns=list(BURDEN_COLUMNS))
    if plan.subgroups:
        out["subgroups"] = _subgroup_table(plan, s.get("subgroups") or [None] * len(plan.subgroups), ci)
    if s.get("utility"):
        util: dict = {}
        for (m, op), (obs, best, inaction) in s["utility"].items():
            util.setdefault(m, {})[op] = round(float(normalised_utility(obs, best, inaction)), 4)
        out["utility"] = util
    if s.get("explained") is not None:
        out["explained"] = merge_alarm_explanations([s["explained"]], per_kind=plan.explain_per_kind,
                                                    models=plan.models)
    if s.get("context") is not None:
        out["context_share"] = merge_context_top_share([s["context"]])
    if s.get("pairs"):
        out["delong"] = _delong_table(s["pairs"], delong)
    return out


# --------------------------------------------------------------------------- the passes

def _test_scores(predictions, screens, stays, *, models, reference):
    """Per model the test scores' histogram (for the burden sweep), and the screened stays (for subgroups)."""
    if not len(screens):
        return None
    out = {}
    for m in models:
        ss = prepare_screens(predictions, stays, screens, model=m)
        g = grid_for(m, reference)
        out[m] = np.bincount(g.bins(ss.frame["risk"].to_numpy()), minlength=g.n_bins).astype("int64")
    out["_stays"] = pd.DataFrame({"stay_id": np.unique(screens["stay_id"].to_numpy()).astype("int64")})
    return out


def _values_in(predictions, screens, stays, *, wanted: dict, reference):
    """Per model the distinct scores that fall in the ``wanted`` bins (the bins of the burden sweep's
    ranks) and how many screens hold each: ``risk, n`` (tied scores, e.g. a discrete model's, come
    back once however many screens share a bin)."""
    if not len(screens):
        return None
    out = {}
    for m, bins in wanted.items():
        risk = prepare_screens(predictions, stays, screens, model=m).frame["risk"].to_numpy("float64")
        v, n = np.unique(risk[np.isin(grid_for(m, reference).bins(risk), bins)], return_counts=True)
        out[m] = pd.DataFrame({"risk": v, "n": n.astype("int64")})
    return out


def _merge_values(items):
    """Sum of the parts' :func:`_values_in`: the distinct scores of all parts, their counts added."""
    out = _merge_sum(items)
    if out is None:
        return None
    return {m: f.groupby("risk", sort=True, dropna=False, as_index=False)["n"].sum() for m, f in out.items()}


#: most distinct dev scores per model kept as the threshold search's exact candidates (16 MB);
#: beyond, the search runs over the score bins' maxima (:func:`evaluation.counts.dev_candidates`)
EXACT_CANDIDATES_MAX = 2 ** 21


def _dev_part(predictions, screens, stays, *, models, reference):
    if not len(screens):
        return None
    cand = dev_candidates(predictions, screens, stays, models=models, reference=reference)
    cells = {m: [platt_cells(predictions, screens, m, grid_for(m, reference), new_data_only=False),
                 platt_cells(predictions, screens, m, grid_for(m, reference), new_data_only=True)] for m in models}
    distinct = {m: np.unique(prepare_screens(predictions, stays, screens, model=m).frame["risk"].to_numpy())
                for m in models}
    return {"candidates": cand, "cells": cells, "distinct": {m: v if len(v) <= EXACT_CANDIDATES_MAX else None
                                                            for m, v in distinct.items()}}


def _union(a, b):
    if a is None or b is None:
        return None
    u = np.union1d(a, b)
    return u if len(u) <= EXACT_CANDIDATES_MAX else None


def _merge_dev(items):
    out = None
    for it in items:
        if it is None:
            continue
        if out is None:
            out = it
            continue
        out = {"candidates": {m: np.maximum(out["candidates"][m], it["candidates"][m]) for m in out["candidates"]},
               "cells": _add(out["cells"], it["cells"]),
               "distinct": {m: _union(out["distinct"][m], it["distinct"][m]) for m in out["distinct"]}}
    return out


def _merge_sum(items):
    out = None
    for it in items:
        out = _add(out, it)
    return out


def _burden_thresholds(hist: np.ndarray, grid, values, counts=None) -> np.ndarray:
    """The burden sweep's thresholds (:func:`evaluation.burden.alarm_burden`) from a histogram of the scores
    and the distinct scores in the bins that hold its ranks, with how many screens hold each (``counts``;
    default one each)."""
    n = int(hist.sum())
    if not n:
        return np.array([])
    ranks = threshold_ranks(n)
    cum = np.cumsum(hist)
    b = np.searchsorted(cum, ranks, side="right")
    off = ranks - np.where(b > 0, cum[np.maximum(b - 1, 0)], 0)
    if not grid.probability:
        return sweep_thresholds((grid.lo + b).astype("float64"))
    v = np.asarray(values, dtype="float64")
    c = np.ones(len(v), dtype="int64") if counts is None else np.asarray(counts, dtype="int64")
    order = np.argsort(v, kind="mergesort")
    v, at = v[order], np.cumsum(c[order])  # at[j]: screens with a score up to v[j] among these bins
    start = np.searchsorted(grid.bins(v), b, side="left")  # sorted scores have sorted bins
    rank = np.where(start > 0, at[np.maximum(start - 1, 0)], 0) + off  # rank among the fetched screens
    return sweep_thresholds(v[np.searchsorted(at, rank, side="right")])


def _safely(what: str, fn) -> dict:
    try:
        return fn()
    except ValueError as exc:
        log.warning("%s skipped: %s", what, exc)
        return {}


def evaluate_counts(over, *, models: list, stays: pd.DataFrame, reference: str = "news2", window_h: float = 48.0,
                    silencing_h: float = 48.0, n_boot: int = 200, subgroup_n_boot: int | None = None, seed: int = 0,
                    split: str = "test", subgroups: bool = True, sensitivity: bool = True, utility_part=None,
                    on_part=None, ci: float = 0.95, max_traces: int = 3, explain_per_kind: int = 3):
    """The count-based evaluation of ``split`` with thresholds chosen on ``dev``: every table of
    :func:`evaluation.summary.evaluate_run` (module docstring), as a :class:`evaluation.summary.RunEvaluation`.

    ``over(split, fn, merge)`` applies ``fn(k, predictions, screens, stays)`` to every part ``k`` of a
    split (its rows of that split; screens with ``label``) and returns ``merge`` of the results.
    ``stays``: the stays table (one row per stay; the subgroups' levels are defined on it).
    ``utility_part(k)``: part ``k``'s ``(predictions, screens)`` of every hourly row, or None.
    ``on_part(k, predictions, screens, stays, counts)``: called on each part of the test pass with its
    :class:`evaluation.counts.SplitCounts` (e.g. to write its alarms); returns the part's
    explanations of its fired alarms, or None.
    ``max_traces``: septic stays of the primary model (:func:`primary_model`) whose predictions and
    alarms come back for the report's risk traces (:class:`TraceRows`; ``ev.trace_rows``).
    ``explain_per_kind``: true and false alarms explained per model (as ``RunEvaluation.add_explanations``).
    """
    from .counts import evaluation_from_counts, merge_counts

    trace_model = primary_model(models, reference) if max_traces else None

    kw = dict(reference=reference)
    dev = over("dev", lambda k, p, s, st: _dev_part(p, s, st, models=models, **kw), _merge_dev)
    if dev is None:
        raise ValueError("the dev split has no screens; use more stays")

    def detect(asked):
        return over("dev", lambda k, p, s, st: detected_at(p, s, st, asked, window_h=window_h, silencing_h=silencing_h)
                    if len(s) else None, _merge_sum)

    # the exact search's candidates (every distinct dev score) while they are few enough, else bin maxima
    exact = {m: dev["distinct"][m] is not None for m in models}
    candidates = {m: dev["distinct"][m] if exact[m] else dev["candidates"][m] for m in models}
    thresholds = choose_thresholds_from_counts(candidates, detect, models=models, reference=reference)
    test = over(split, lambda k, p, s, st: _test_scores(p, s, st, models=models, **kw), _merge_sum)
    if test is None:
        raise ValueError(f"the {split} split has no screens; use more stays")
    grids = {m: grid_for(m, reference) for m in models}
    # the burden sweep's thresholds: the bins holding its ranks, then the scores in those bins
    wanted = {}
    for m in models:
        n = int(test[m].sum())
        if n and grids[m].probability:
            wanted[m] = np.unique(np.searchsorted(np.cumsum(test[m]), threshold_ranks(n), side="right"))
    values = over(split, lambda k, p, s, st: _values_in(p, s, st, wanted=wanted, **kw), _merge_values) \
        if wanted else {}
    values = values or {}
    burden = {m: _burden_thresholds(test[m], grids[m], values[m]["risk"].to_numpy() if m in values else [],
                                    values[m]["n"].to_numpy() if m in values else None) for m in models}
    cells = dev["cells"]
    # as evaluate_run's optional tables: a scaler that cannot be fitted (one class on dev) drops its table
    calibration = _safely("calibration", lambda: {m: fit_platt_cells(cells[m][0], True)
                                                  for m in models if grids[m].probability})
    decision = _safely("decision curve", lambda: {
        m: (fit_platt_cells(cells[m][1], grids[m].probability),
            "platt (dev)" if grids[m].probability else "platt-score (dev)") for m in models})
    jobs = []
    if subgroups:
        split_stays = stays[stays["stay_id"].isin(test["_stays"]["stay_id"])]
        defs = define_subgroups(split_stays)
        by_stay = {k: defs[k] for k in REPORT_SUBGROUPS if k in defs and defs[k].kind != "screen"}
        jobs = [(name, level, np.asarray(ids, dtype="int64"))
                for name, level, ids, _ in subgroup_jobs(by_stay, split_stays)]
    plan = SectionPlan(thresholds, models, reference, window_h, silencing_h, calibration, decision, burden, jobs,
                       subgroup_n_boot or n_boot, seed, sensitivity, explain_per_kind=explain_per_kind)

    def count(k, p, s, st):
        c = split_counts(p, s, st, thresholds, n_resamples=n_boot, seed=seed, reference=reference, window_h=window_h,
                         silencing_h=silencing_h)
        explanations = on_part(k, p, s, st, c) if on_part is not None else None
        if c is None:
            return None
        alarms = c.alarms.assign(split=split) if c.alarms is not None else None
        c.alarms = None  # only the sums go back
        c.sections = section_counts(p, s, st, plan, utility_tables=utility_part(k) if utility_part else None,
                                    explanations=explanations, alarms=alarms)
        if trace_model is not None:
            c.traces = trace_rows(p, s, st, alarms, thresholds, model=trace_model, k=max_traces)
        return c

    merged = over(split, count, merge_counts)
    if merged is None:
        raise ValueError(f"the {split} split has no screens; use more stays")
    pairs = merged.sections.get("pairs") or {}
    delong = over(split, lambda k, p, s, st: delong_counts(p, s, st, pairs, reference=reference, window_h=window_h),
                  _merge_sum) if pairs else None
    sections = {split: tables_from_sections(plan, merged.sections, delong, ci=ci)}
    ev = evaluation_from_counts(thresholds, {split: merged}, reference=reference, ci=ci, sections=sections)
    tr = merged.traces
    ev.trace_rows = (tr.predictions, tr.alarms) if tr is not None and len(tr.stays) else None
    ev.threshold_candidates = {m: ("every distinct dev score (the exact search)" if exact[m] else
                                   "the highest dev score of each score bin") for m in models}
    return ev
