"""Alarm burden against sensitivity: the trade-off clinicians argue about, for every model.

:func:`alarm_burden` sweeps each model's threshold through its score distribution (from
thresholds that put ``max_fraction`` of the eligible screens over the line down to
``min_fraction``) and runs the screening protocol at each (:class:`evaluation.operating_points.ThresholdSweep`:
new-data screens before onset, silencing, true alarm = onset within the window). Each row is one
threshold: the protocol sensitivity (screenable septic stays warned in time), alarms per
admission, and false alarms per true alarm, so burden can be read at any sensitivity.

Examples
--------
>>> import numpy as np, pandas as pd
>>> T = pd.Timestamp("2020-01-01")
>>> stay = np.repeat(np.arange(20), 10)
>>> times = T + pd.to_timedelta(np.tile(np.arange(1, 11), 20), unit="h")
>>> stays = pd.DataFrame({"stay_id": range(20),
...                       "onset_time": [T + pd.Timedelta(hours=12) if s < 5 else pd.NaT for s in range(20)]})
>>> rng = np.random.default_rng(0)
>>> pred = pd.DataFrame({"stay_id": stay, "screen_time": times, "model": "m", "fold": 0, "split": "test",
...                      "risk": (stay < 5) * 0.3 + rng.random(200)})
>>> b = alarm_burden(pred, None, stays, n_points=8)
>>> bool(b["sensitivity"].is_monotonic_increasing), bool(b["alarms_per_admission"].is_monotonic_increasing)
(True, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .operating_points import ThresholdSweep
from .protocol import prepare_screens

__all__ = ["alarm_burden", "BURDEN_COLUMNS", "threshold_ranks", "sweep_thresholds", "burden_row"]

#: columns of :func:`alarm_burden`'s table
BURDEN_COLUMNS = ("model", "threshold", "screen_alarm_fraction", "sensitivity", "alarms_per_admission",
                  "false_alarms_per_true_alarm", "n_alarms", "n_true_alarms")


def threshold_ranks(n: int, n_points: int = 40, min_fraction: float = 2e-4, max_fraction: float = 0.6) -> np.ndarray:
    """Positions in the ascending order of ``n`` scores whose values are the sweep's thresholds.

    >>> threshold_ranks(1000, 3, 0.01, 0.5).tolist()
    [500, 930, 990]
    """
    fractions = np.geomspace(max_fraction, min_fraction, n_points)
    return np.clip(np.ceil(n * (1 - fractions)).astype(int), 0, n - 1)


def _thresholds(scores: np.ndarray, n_points: int, min_fraction: float, max_fraction: float) -> np.ndarray:
    s = np.sort(scores)
    return sweep_thresholds(s[threshold_ranks(len(s), n_points, min_fraction, max_fraction)])


def sweep_thresholds(values: np.ndarray) -> np.ndarray:
    """The scores at :func:`threshold_ranks`, distinct, high to low (sensitivity rises along the table)."""
    return np.unique(values)[::-1]


def burden_row(model: str, threshold: float, n_at_or_above: int, n_scores: int, detected: int, n_alarms: int,
               n_true: int, n_screenable: int, n_stays: int) -> tuple:
    """One row of :data:`BURDEN_COLUMNS` from the protocol's counts at ``threshold`` (counts add up over stays)."""
    return (model, float(threshold), n_at_or_above / n_scores if n_scores else np.nan,
            detected / n_screenable if n_screenable else np.nan,
            n_alarms / n_stays if n_stays else np.nan,
            (n_alarms - n_true) / n_true if n_true else np.nan, n_alarms, n_true)


def alarm_burden(predictions: pd.DataFrame, screens: pd.DataFrame | None, stays: pd.DataFrame, *, models=None,
                 n_points: int = 40, min_fraction: float = 2e-4, max_fraction: float = 0.6,
                 window_h: float = 48.0, silencing_h: float = 48.0, new_data_only: bool = True) -> pd.DataFrame:
    """Sensitivity, alarms per admission and false per true alarm over a sweep of thresholds.

    Parameters
    ----------
    predictions, screens, stays : DataFrame
        Contract tables of the evaluated split (``screens`` may be None: every prediction is a screen).
    models : list of str, optional
        Default: every model in ``predictions``.
    n_points : int, default 40
        Thresholds per model (fewer when the scores have fewer distinct values, e.g. NEWS2).
    min_fraction, max_fraction : float
        Range of the share of eligible screens at or above the threshold (log-spaced).
    window_h, silencing_h, new_data_only
        Protocol settings (:func:`evaluation.protocol.run_protocol`).

    Returns
    -------
    DataFrame
        :data:`BURDEN_COLUMNS`, thresholds from high to low within each model.
    """
    if not 0 < min_fraction < max_fraction <= 1:
        raise ValueError(f"need 0 < min_fraction < max_fraction <= 1, got {min_fraction}, {max_fraction}")
    models = list(dict.fromkeys(predictions["model"])) if models is None else list(models)
    rows = []
    for m in models:
        ss = prepare_screens(predictions, stays, screens, model=m, new_data_only=new_data_only)
        risk = ss.frame["risk"].to_numpy()
        if not len(risk):
            continue
        sweep = ThresholdSweep(ss, silencing_h, window_h)
        n_stays = len(ss.population)
        for t in _thresholds(risk, n_points, min_fraction, max_fraction):
            detected, n_alarms, n_true = sweep.outcome(float(t))
            rows.append(burden_row(m, t, int(np.sum(risk >= t)), len(risk), detected, n_alarms, n_true,
                                   sweep.n_screenable, n_stays))
    return pd.DataFrame(rows, columns=list(BURDEN_COLUMNS))
