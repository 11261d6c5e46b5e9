"""Conditions for the DDL-CXR model, read from screens and films: what :class:`fusion.ddl.LatentDiffusion` eats.

A condition is (previous film's latent, hourly EHR inputs since that film, time gap). Two ways to
make them, both under the leakage rule:

:func:`film_pairs`         training pairs: consecutive films of one stay (earlier -> later), with the
                           EHR rows after the earlier film up to the later one
:func:`screen_conditions`  at screens: the latest film at or before each screen (as
                           :func:`fusion.embeddings.attach_embeddings` finds it) and the EHR since

The EHR window is the stay's screen rows (:class:`fusion.sequences.SequenceInputs` channels) with
``t0 < screen_time <= t1``, the last ``window_h`` of them; if there is none, the latest row at or
before ``t1``; if there is none either (a film before the first screen hour), one zero row.

Examples
--------
>>> from fusion._demo import demo_screens
>>> from fusion.sequences import SequenceInputs
>>> s = demo_screens(n_stays=6, seed=0, hours=6, images=True)
>>> inputs = SequenceInputs().fit(s)
>>> c = screen_conditions(s, inputs, window_h=4)
>>> c.ehr.shape[1:] == (4, len(inputs.channels_)), len(c.keys) == int(s["emb_cxr_age_h"].notna().sum())
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehr.schema import require_columns
from fusion.sequences import EMB_AGE, SequenceInputs, embedding_columns

__all__ = ["Conditions", "film_pairs", "screen_conditions"]

_KEY_SCALE = 10**10  # stay_id * scale + epoch seconds: one sortable int64 key per (stay, time)


@dataclass
class Conditions:
    """Aligned arrays: ``previous (n, D)`` embeddings, ``ehr (n, T, C)``, ``lengths``, ``gap_h``, and ``keys``.

    ``keys`` holds ``stay_id, time`` (when the film is wanted), ``previous_time`` and, for
    training pairs, ``target`` rows in :attr:`target` (embeddings of the later film).
    """

    previous: np.ndarray
    ehr: np.ndarray
    lengths: np.ndarray
    gap_h: np.ndarray
    keys: pd.DataFrame
    target: np.ndarray | None = None


def _seconds(values) -> np.ndarray:
    return pd.to_datetime(values).to_numpy(dtype="datetime64[s]").astype(np.int64)


def _windows(screens: pd.DataFrame, inputs: SequenceInputs, stay_id, t0, t1, window_h: int):
    """EHR rows of ``stay_id`` with ``t0 < screen_time <= t1`` (the last ``window_h``), right-padded."""
    if int(window_h) < 1:
        raise ValueError(f"window_h must be >= 1, got {window_h}")
    seq = inputs.transform(screens)
    s = screens.iloc[seq.order]
    key = s["stay_id"].to_numpy(np.int64) * _KEY_SCALE + _seconds(s["screen_time"])
    sid = np.asarray(stay_id, dtype=np.int64)
    hi = np.searchsorted(key, sid * _KEY_SCALE + _seconds(t1), side="right")
    lo = np.maximum(np.searchsorted(key, sid * _KEY_SCALE + _seconds(t0), side="right"), hi - int(window_h))
    same_stay = (hi > 0) & (key[np.maximum(hi - 1, 0)] // _KEY_SCALE == sid)
    lo = np.where((hi == lo) & same_stay, hi - 1, lo)
    lengths = hi - lo
    ehr = np.zeros((len(sid), int(window_h), seq.x.shape[1]), dtype=np.float32)
    for r in np.flatnonzero(lengths > 0):
        ehr[r, :lengths[r]] = seq.x[lo[r]:hi[r]]
    return ehr, np.maximum(lengths, 1)


def film_pairs(screens: pd.DataFrame, embeddings: pd.DataFrame, inputs: SequenceInputs, *,
               window_h: int = 48, stays=None) -> Conditions:
    """Consecutive films of each stay (of ``stays``, default all): earlier film -> later film.

    ``embeddings`` is the per-study embedding table (``study_id, stay_id, time, emb_cxr_*``).
    ``keys`` gets ``study_id`` (the later film) and ``previous_study_id``.
    """
    cols = embedding_columns(embeddings.columns)
    require_columns(embeddings, ["study_id", "stay_id", "time", *cols[:1]], table="cxr embeddings",
                    purpose="to pair consecutive films")
    emb = embeddings if stays is None else embeddings[embeddings["stay_id"].isin(np.asarray(stays))]
    emb = emb.sort_values(["stay_id", "time", "study_id"], kind="stable").reset_index(drop=True)
    sid = emb["stay_id"].to_numpy(np.int64)
    later = np.flatnonzero(sid[1:] == sid[:-1]) + 1
    earlier = later - 1
    t0, t1 = emb["time"].to_numpy()[earlier], emb["time"].to_numpy()[later]
    ehr, lengths = _windows(screens, inputs, sid[later], t0, t1, window_h)
    values = emb[cols].to_numpy(dtype=np.float64)
    keys = pd.DataFrame({"stay_id": sid[later], "time": t1, "previous_time": t0,
                         "study_id": emb["study_id"].to_numpy()[later],
                         "previous_study_id": emb["study_id"].to_numpy()[earlier]})
    gap = (pd.to_datetime(t1) - pd.to_datetime(t0)) / pd.Timedelta(hours=1)
    return Conditions(values[earlier], ehr, lengths, np.asarray(gap, dtype=np.float64), keys, values[later])


def screen_conditions(screens: pd.DataFrame, inputs: SequenceInputs, *, window_h: int = 48) -> Conditions:
    """Conditions at every screen that has a film (``emb_cxr_*`` attached), in screen order.

    ``keys`` gets ``row``: the position of the screen in ``screens``.
    """
    cols = embedding_columns(screens.columns)
    require_columns(screens, ["stay_id", "screen_time", EMB_AGE, *cols[:1]], table="screens",
                    purpose="for DDL-CXR conditions (attach CXR embeddings first)")
    rows = np.flatnonzero(screens[EMB_AGE].notna().to_numpy())
    s = screens.iloc[rows]
    t1 = pd.to_datetime(s["screen_time"]).to_numpy(dtype="datetime64[ns]")
    gap = s[EMB_AGE].to_numpy(dtype=np.float64)
    t0 = t1 - np.round(gap * 3.6e12).astype(np.int64).astype("timedelta64[ns]")
    ehr, lengths = _windows(screens, inputs, s["stay_id"].to_numpy(np.int64), t0, t1, window_h)
    keys = pd.DataFrame({"stay_id": s["stay_id"].to_numpy(np.int64), "time": t1, "previous_time": t0, "row": rows})
    return Conditions(s[cols].to_numpy(dtype=np.float64), ehr, lengths, gap, keys)
