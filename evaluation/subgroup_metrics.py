"""Subgroup table of a run: every model in every subgroup, on the main table's screens, with bootstrap CIs.

For each level of the report's subgroups (:data:`REPORT_SUBGROUPS`, those the stays allow; see
:func:`evaluation.subgroups.define_subgroups`) of the **evaluated split only**, the screens are
those of the main table (new data, before onset; :func:`evaluation.protocol.prepare_screens`),
the counts are that population's (stays, septic stays, eligible screens), and the metrics come
from :func:`evaluation.bootstrap.bootstrap_metrics` on the level's stays: AUROC and AUPRC, and
at each dev-chosen operating point the protocol sensitivity, alarms per admission and false
alarms per true alarm, each with a patient-level percentile CI. A level of a ``positive``
subgroup (onset setting) holds its septic stays and every non-septic stay. Screen-level
subgroups (``admission_day``) get the rank metrics only: the protocol runs over whole stays.

Examples
--------
>>> import numpy as np, pandas as pd
>>> hours = pd.MultiIndex.from_product([range(30), range(1, 9)], names=["stay_id", "h"]).to_frame(index=False)
>>> start = pd.Timestamp("2020-01-01")
>>> pred = hours.assign(screen_time=start + pd.to_timedelta(hours["h"], unit="h"), model="m", fold=0, split="test",
...                     risk=(hours["stay_id"] % 3 == 0) * 0.4 + np.random.default_rng(1).random(240))
>>> stays = pd.DataFrame({"stay_id": range(30), "sex": ["F", "M"] * 15,
...                       "onset_time": [start + pd.Timedelta(hours=10) if s % 3 == 0 else pd.NaT for s in range(30)]})
>>> t = subgroup_table(pred.drop(columns="h"), None, stays, n_resamples=20)
>>> t.query("metric == 'auroc'")[["subgroup", "level", "n_stays", "n_septic"]].values.tolist()
[['overall', 'all', 30, 10], ['sex', 'F', 15, 5], ['sex', 'M', 15, 5]]
"""

from __future__ import annotations

import pandas as pd

from .bootstrap import bootstrap_metrics, normalise_thresholds
from .paired import OPERATING_POINT_METRICS, RANK_METRICS
from .protocol import prepare_screens
from .subgroups import define_subgroups, run_by_subgroup, subgroup_jobs

__all__ = ["REPORT_SUBGROUPS", "subgroup_table"]

#: subgroups of the report, in its order (each only when the stays carry its fields)
REPORT_SUBGROUPS = ("age_band", "sex", "department", "onset_setting", "surgical", "source")

_COLUMNS = ["subgroup", "level", "n_stays", "n_septic", "n_screens", "model", "operating_point", "metric",
            "estimate", "ci_low", "ci_high", "n_resamples", "note"]


def subgroup_table(predictions: pd.DataFrame, screens: pd.DataFrame | None, stays: pd.DataFrame, *,
                   thresholds=None, subgroups=REPORT_SUBGROUPS, n_resamples: int = 200, seed=0,
                   window_h: float = 48.0, silencing_h: float = 48.0, ci: float = 0.95) -> pd.DataFrame:
    """Metrics with CIs per subgroup level of one evaluated split (long format).

    Parameters
    ----------
    predictions, screens : DataFrame
        The evaluated split's contract tables (``screens`` may be None: every prediction is a screen).
    stays : DataFrame
        Contract ``stays``; only those of the split's screens (or predictions) are used.
    thresholds : DataFrame or dict, optional
        Dev-chosen operating points (``model, operating_point, threshold``).
    subgroups : sequence of str
        Names of :func:`evaluation.subgroups.define_subgroups` definitions to include.
    n_resamples, seed, window_h, silencing_h, ci
        As :func:`evaluation.bootstrap.bootstrap_metrics`.

    Returns
    -------
    DataFrame
        ``subgroup, level, n_stays, n_septic, n_screens, model, operating_point, metric, estimate,
        ci_low, ci_high, n_resamples, note``; the first rows are ``overall`` / ``all``.
    """
    population = (screens if screens is not None else predictions)["stay_id"].unique()
    split_stays = stays[stays["stay_id"].isin(population)]
    ops = normalise_thresholds(thresholds)
    ops = ops[ops["model"].isin(predictions["model"].unique())]
    models = list(dict.fromkeys(predictions["model"]))
    wanted = set(RANK_METRICS) | set(OPERATING_POINT_METRICS)
    boot_kw = dict(reference=None, n_resamples=n_resamples, seed=seed, window_h=window_h, silencing_h=silencing_h,
                   ci=ci, check_range=False)

    def rows(sets: dict, with_ops: bool) -> pd.DataFrame:
        first = next(iter(sets.values()))
        t = bootstrap_metrics(None, None, None, thresholds=ops if with_ops else None, prepared=sets, **boot_kw).table
        return t[t["metric"].isin(wanted)].drop(columns="threshold").assign(
            n_stays=len(first.population), n_septic=int(first.septic.sum()), n_screens=len(first.frame))

    # stay-level subgroups: each model's screens joined once, then cut by the level's stays
    prepared = {m: prepare_screens(predictions, split_stays, screens, model=m) for m in models}
    defs = define_subgroups(split_stays, screens)
    by_stay = {k: defs[k] for k in subgroups if k in defs and defs[k].kind != "screen"}
    parts = []
    for name, level, ids, _ in subgroup_jobs(by_stay, split_stays):
        sets = {m: ss.subset(ids) for m, ss in prepared.items()}
        try:
            part = rows(sets, True) if len(sets[models[0]].population) else pd.DataFrame([{"note": "no stays"}])
        except ValueError as exc:  # e.g. a level too small for a metric: say so in its row
            part = pd.DataFrame([{"note": str(exc)}])
        parts.append(part.assign(subgroup=name, level=level))
    by_screen = {k: defs[k] for k in subgroups if k in defs and defs[k].kind == "screen"}
    if by_screen and screens is not None:  # screen-level subsets: rank metrics only (the protocol needs whole stays)
        def metric(pred, scr, sts):
            return rows({m: prepare_screens(pred, sts, scr, model=m) for m in models}, False)

        parts.append(run_by_subgroup(metric, predictions, screens, split_stays, subgroups=by_screen,
                                     include_overall=False))
    return pd.concat(parts, ignore_index=True).reindex(columns=_COLUMNS)
