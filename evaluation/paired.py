"""Paired comparisons of every pair of models: bootstrap differences and DeLong's test.

Every model of a run is judged on the **same** resampled stays (:mod:`evaluation.bootstrap`),
so for each pair (a, b) the difference ``metric(a) - metric(b)`` has a patient-level paired
percentile CI and a two-sided bootstrap p-value. Compared are AUROC and AUPRC (screen level)
and, at each matched operating point both models have (NEWS2 >= 5 / >= 7 / 85 % sensitivity,
chosen on dev), the protocol's sensitivity, alarms per admission and false alarms per true
alarm. AUROCs are also compared by DeLong's test (:mod:`evaluation.delong`) on the aligned
eligible screens, with the stay as cluster (Obuchowski) and, for reference, without.

A bootstrap p-value from B resamples is resolved to ``2 / B`` (two tails): when no resample
crosses zero it is reported as ``< 2/B`` (``p_value`` holds that bound, ``p_text`` says ``<``),
never as 0.

Examples
--------
>>> format_p_value(0.0, 1000), format_p_value(0.0312, 1000), format_p_value(3.2e-9)
('< 0.002', '0.031', '3.2e-09')
>>> model_pairs(["cpn", "lightgbm", "news2"])
[('cpn', 'lightgbm'), ('cpn', 'news2'), ('lightgbm', 'news2')]
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .bootstrap import BootstrapResult, difference_summary
from .delong import delong_test
from .metrics import screen_labels
from .protocol import prepare_screens

__all__ = ["RANK_METRICS", "OPERATING_POINT_METRICS", "model_pairs", "format_p_value", "paired_differences",
           "delong_pairs", "paired_comparisons", "delong_columns", "join_delong"]

#: threshold-free metrics compared for every pair
RANK_METRICS = ("auroc", "auprc")
#: protocol metrics compared at every operating point both models have
OPERATING_POINT_METRICS = ("sensitivity", "alarms_per_admission", "false_alarms_per_true_alarm")


def model_pairs(models) -> list[tuple[str, str]]:
    """Every unordered pair, in the order given (``a`` before ``b``)."""
    return list(itertools.combinations(list(dict.fromkeys(models)), 2))


def format_p_value(p: float, n_resamples: int | None = None) -> str:
    """A p-value as text: ``< 2/B`` for a bootstrap p of 0, 3 decimals, or 2 significant digits below 0.001."""
    if p is None or not np.isfinite(p):
        return "n/a"
    if n_resamples and p <= 0:
        return f"< {2 / n_resamples:.2g}"
    if p <= 0:  # a normal tail beyond double precision
        return "< 1e-300"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _p_bound(p: float, n_resamples: int) -> float:
    return 2.0 / n_resamples if (np.isfinite(p) and p <= 0 and n_resamples) else p


def _ordered(models, reference):
    """Models in the order given, the reference (NEWS2, current practice) last: differences read
    as ``model - news2``."""
    models = list(dict.fromkeys(models))
    return [m for m in models if m != reference] + ([reference] if reference in models else [])


def paired_differences(boot: BootstrapResult, *, models=None, reference: str | None = "news2",
                       ci: float = 0.95) -> pd.DataFrame:
    """Differences ``a - b`` for every pair of models, from the resamples of :func:`bootstrap_metrics`.

    Parameters
    ----------
    boot : BootstrapResult
        Its ``samples`` hold every model on the same resamples.
    models : list of str, optional
        Models and their order (default: as in ``boot.table``).
    reference : str, optional
        Moved to the end of the order, so that every difference against it reads ``model - reference``.
    ci : float, default 0.95

    Returns
    -------
    DataFrame
        ``model_a, model_b, operating_point, metric, estimate_a, estimate_b, difference, ci_low,
        ci_high, p_value, p_text, n_resamples``; ``operating_point`` is '' for AUROC/AUPRC.
    """
    table = boot.table
    models = _ordered(table["model"] if models is None else models, reference)
    est = table.set_index(["model", "operating_point", "metric"])["estimate"]
    smp = {k: g["value"].to_numpy() for k, g in boot.samples.groupby(["model", "operating_point", "metric"],
                                                                     sort=False)}
    n_res = int(table["n_resamples"].iloc[0]) if len(table) else 0
    ops = {m: list(dict.fromkeys(table.loc[(table["model"] == m) & (table["operating_point"] != ""),
                                           "operating_point"])) for m in models}
    rows = []
    for a, b in model_pairs(models):
        keys = [("", m) for m in RANK_METRICS] + [(op, m) for op in ops[a] if op in ops[b]
                                                 for m in OPERATING_POINT_METRICS]
        for op, metric in keys:
            ka, kb = (a, op, metric), (b, op, metric)
            if ka not in smp or kb not in smp:
                continue
            lo, hi, p = difference_summary(smp[ka], smp[kb], ci)
            rows.append({"model_a": a, "model_b": b, "operating_point": op, "metric": metric,
                         "estimate_a": est[ka], "estimate_b": est[kb], "difference": est[ka] - est[kb],
                         "ci_low": lo, "ci_high": hi, "p_value": _p_bound(p, n_res),
                         "p_text": format_p_value(p, n_res), "n_resamples": n_res})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "operating_point", "metric", "estimate_a",
                                       "estimate_b", "difference", "ci_low", "ci_high", "p_value", "p_text",
                                       "n_resamples"])


def delong_pairs(predictions: pd.DataFrame, screens: pd.DataFrame | None, stays: pd.DataFrame, *, models=None,
                 window_h: float = 48.0, new_data_only: bool = True) -> pd.DataFrame:
    """DeLong's test of AUROC for every pair of models on their common eligible screens.

    The screens are those of :func:`evaluation.protocol.prepare_screens` (new data, before
    onset; label = onset within ``window_h``), aligned across models on (stay_id, screen_time).

    Returns
    -------
    DataFrame
        ``model_a, model_b, n_screens, n_stays, delong_difference, delong_se, delong_z,
        delong_p, delong_p_text`` (clustered by stay) and ``delong_p_iid`` (screens as
        independent).
    """
    models = list(dict.fromkeys(predictions["model"])) if models is None else list(models)
    frames = {m: prepare_screens(predictions, stays, screens, model=m, new_data_only=new_data_only).frame
              for m in models}
    keys = ["stay_id", "screen_time"]
    rows = []
    for a, b in model_pairs(models):
        fa, fb = frames[a], frames[b]
        both = fa.merge(fb[keys + ["risk"]], on=keys, how="inner", suffixes=("_a", "_b"))
        y = screen_labels(both["onset_in_h"].to_numpy(), window_h)
        row = {"model_a": a, "model_b": b, "n_screens": int(len(both)), "n_stays": int(both["stay_id"].nunique())}
        if 0 < y.sum() < len(y):
            ra, rb = both["risk_a"].to_numpy(), both["risk_b"].to_numpy()
            row.update(delong_columns(delong_test(y, ra, rb, groups=both["stay_id"].to_numpy()),
                                      delong_test(y, ra, rb)))
        rows.append(row)
    return pd.DataFrame(rows)


def delong_columns(clustered, iid) -> dict:
    """The DeLong columns of a pair's row from the clustered and the plain :class:`evaluation.delong.DeLongResult`."""
    return dict(delong_difference=clustered.difference, delong_se=clustered.se, delong_z=clustered.z,
                delong_p=clustered.p_value, delong_p_text=format_p_value(clustered.p_value),
                delong_p_iid=iid.p_value, delong_p_iid_text=format_p_value(iid.p_value))


def join_delong(diff: pd.DataFrame, delong: pd.DataFrame) -> pd.DataFrame:
    """:func:`paired_differences` with the DeLong columns (:func:`delong_pairs`) joined to each pair's AUROC row."""
    dl = delong.drop(columns=["n_screens", "n_stays"], errors="ignore").assign(metric="auroc", operating_point="")
    return diff.merge(dl, on=["model_a", "model_b", "operating_point", "metric"], how="left")


def paired_comparisons(boot: BootstrapResult, predictions: pd.DataFrame, screens: pd.DataFrame | None,
                       stays: pd.DataFrame, *, reference: str | None = "news2", window_h: float = 48.0,
                       new_data_only: bool = True, ci: float = 0.95) -> pd.DataFrame:
    """:func:`paired_differences` with DeLong's test joined to each pair's AUROC row.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from evaluation.bootstrap import bootstrap_metrics
    >>> rng = np.random.default_rng(0)
    >>> T = pd.Timestamp("2020-01-01")
    >>> stay = np.repeat(np.arange(40), 10)
    >>> times = T + pd.to_timedelta(np.tile(np.arange(1, 11), 40), unit="h")
    >>> stays = pd.DataFrame({"stay_id": range(40),
    ...                       "onset_time": [T + pd.Timedelta(hours=12) if s < 8 else pd.NaT for s in range(40)]})
    >>> y = (stay < 8).astype(float)
    >>> pred = pd.concat([pd.DataFrame({"stay_id": stay, "screen_time": times, "model": m, "fold": 0,
    ...                                 "split": "test", "risk": np.clip(k * y + rng.random(400), 0, 1)})
    ...                   for m, k in (("good", 0.5), ("poor", 0.1))], ignore_index=True)
    >>> boot = bootstrap_metrics(pred, None, stays, n_resamples=50, seed=0, reference=None)
    >>> t = paired_comparisons(boot, pred, None, stays)
    >>> t.query("metric == 'auroc'")[["model_a", "model_b", "p_text"]].values.tolist()
    [['good', 'poor', '< 0.04']]
    >>> bool(t.query("metric == 'auroc'")["delong_p"].iloc[0] < 0.05)
    True
    """
    models = _ordered(boot.table["model"], reference)
    diff = paired_differences(boot, models=models, ci=ci)
    if diff.empty or len(models) < 2:
        return diff
    dl = delong_pairs(predictions, screens, stays, models=models, window_h=window_h, new_data_only=new_data_only)
    return join_delong(diff, dl)
