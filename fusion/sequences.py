"""Sequence inputs of the deep models: per stay, hourly tensors read from the screens table.

Why the screens table and not the events: a screen row already is the GRU-D input at its hour.
``build_screens`` carries each concept's last value forward (never back-filled) and records
``<concept>_age_h``, the hours since it was measured, under the leakage rule (a screen at ``t`` sees
only data with ``time <= t``). Reading the sequence from those rows reuses the one carry-forward
implementation, lets the deep models score exactly the rows every other model scores, and means a
stay's sequence up to screen ``t`` is its screens up to ``t``: a unidirectional recurrent network
cannot see later rows. Building from events would need a second carry-forward and a second grid.

Channels per hour, for each concept ``c`` (GRU-D-style: value, mask, time gap):

``c``            z-scored last value (training mean/sd, clipped to +-``clip_z``); 0 (the mean) if never measured
``c:measured``   1 when the value was registered in the last hour (``c_age_h < 1``)
``c:gap``        ``log1p(min(c_age_h, max_age_h)) / log1p(max_age_h)``; 1 if never measured

then ``hours_since_admit`` at several scales (log, per week, and decays of 24 h and 72 h: where
in the stay a screen falls carries much of the signal on PhysioNet, and one log scale alone
compresses the second and third days, which a network then learns poorly) and the static
covariates (age z-scored, sex, one-hot department of the training categories).

CXR studies (fusion models): the screens carry the latest study's embedding ``emb_cxr_<k>``
and its age ``emb_cxr_age_h`` (:func:`fusion.embeddings.attach_embeddings`). A study enters the
stay's history at the first row that shows it; each row gets the ``max_images`` most recent
studies seen so far and their ages at that row. Two studies registered in the same hour count
as one (the later), as they do for the other models. With ``image_paths=True`` (a fusion model
that fine-tunes the imaging encoder's last block) the screens also carry ``emb_cxr_image``, the
latest study's image file, and each study keeps its file (``Sequences.study_paths``).

A stay's rows must be every screen hour (the history is read from them): a gap raises.

Examples
--------
>>> import numpy as np, pandas as pd
>>> s = pd.DataFrame({"stay_id": [1, 1, 1], "subject_id": 1,
...     "screen_time": pd.date_range("2024-01-01 01:00", periods=3, freq="h"),
...     "hours_since_admit": [1.0, 2.0, 3.0], "hr": [80.0, 80.0, 120.0], "hr_age_h": [0.5, 1.5, 0.5]})
>>> inputs = SequenceInputs().fit(s)
>>> inputs.channels_[:3]
['hr', 'hr:measured', 'hr:gap']
>>> seq = inputs.transform(s)
>>> seq.x.shape, seq.x[:, 1].tolist()
((3, 7), [1.0, 0.0, 1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ehr.schema import SchemaError, require_columns, screen_concept_columns

__all__ = ["EMB_PREFIX", "EMB_AGE", "EMB_IMAGE", "SequenceInputs", "Sequences", "embedding_columns", "studies_from_screens"]

#: Screen columns holding the latest CXR study's embedding, and its age in hours.
EMB_PREFIX = "emb_cxr_"
EMB_AGE = "emb_cxr_age_h"
#: Screen column holding the latest CXR study's image file (relative to an image root), for the
#: fusion models that fine-tune the imaging encoder (``fusion.embeddings.attach_embeddings(image_paths=True)``).
EMB_IMAGE = "emb_cxr_image"
_HOUR_S = 3600
_KEYS = ("stay_id", "screen_time")


def embedding_columns(columns) -> list[str]:
    """The ``emb_cxr_<k>`` columns among ``columns``, in order.

    >>> embedding_columns(["hr", "emb_cxr_001", "emb_cxr_000", "emb_cxr_age_h", "emb_cxr_image"])
    ['emb_cxr_000', 'emb_cxr_001']
    """
    return sorted(c for c in columns if c.startswith(EMB_PREFIX) and c not in (EMB_AGE, EMB_IMAGE))


def _sorted_rows(screens: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Order by (stay, time) and per-stay starts; raises on duplicate keys and hour gaps."""
    sid = screens["stay_id"].to_numpy(dtype=np.int64)
    sec = pd.to_datetime(screens["screen_time"]).to_numpy(dtype="datetime64[s]").astype(np.int64)
    order = np.lexsort((sec, sid))
    sid, sec = sid[order], sec[order]
    same = sid[1:] == sid[:-1]
    step = np.diff(sec)
    bad = np.flatnonzero(same & (step != _HOUR_S))
    if len(bad):
        i = int(bad[0])
        what = "twice" if step[i] == 0 else f"{step[i] / _HOUR_S:g} h apart"
        raise SchemaError(f"screens: stay {sid[i]} has screens at {pd.Timestamp(sec[i], unit='s')} and "
                          f"{pd.Timestamp(sec[i + 1], unit='s')} ({what}); sequence models read each stay's "
                          f"history from its rows: pass every screen hour of a stay, once")
    starts = np.flatnonzero(np.concatenate([[True], ~same])) if len(sid) else np.zeros(0, np.int64)
    return order, starts, sid, sec


def _study_keys(sec: np.ndarray, age_h: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Study time (s) seen at each row (-1: none) and whether a new study appears at that row."""
    has = ~np.isnan(age_h)
    key = np.where(has, sec - np.round(np.nan_to_num(age_h) * _HOUR_S).astype(np.int64), -1)
    prev = np.concatenate([[-1], key[:-1]])
    prev[starts] = -1
    return key, has & (key != prev)


def studies_from_screens(screens: pd.DataFrame) -> pd.DataFrame:
    """The CXR studies a screens table shows: ``stay_id, time`` and the ``emb_cxr_<k>`` columns.

    The inverse of :func:`fusion.embeddings.attach_embeddings` (up to studies of one hour); with an
    ``emb_cxr_image`` column also each study's ``image_path``.
    """
    cols = embedding_columns(screens.columns)
    require_columns(screens, [*_KEYS, EMB_AGE, *cols[:1]], table="screens", purpose="to read CXR studies")
    order, starts, sid, sec = _sorted_rows(screens)
    key, new = _study_keys(sec, screens[EMB_AGE].to_numpy(dtype="float64")[order], starts)
    rows = order[new]
    emb = pd.DataFrame(screens[cols].to_numpy(dtype=np.float32)[rows], columns=cols)
    keys = pd.DataFrame({"stay_id": sid[new], "time": pd.to_datetime(key[new], unit="s")})
    if EMB_IMAGE in screens.columns:
        keys["image_path"] = screens[EMB_IMAGE].to_numpy(dtype=object)[rows]
    return pd.concat([keys, emb], axis=1)


@dataclass
class Sequences:
    """Model-ready arrays of one screens table (rows in (stay, time) order).

    Attributes
    ----------
    x : float32 (n_rows, n_channels)
    order : int64 (n_rows,) - position in the original screens of each sorted row
    starts, lengths : int64 (n_stays,) - each stay's rows in the sorted arrays
    study_emb : float32 (n_studies + 1, dim) or None - z-scored embeddings; row 0 is "no study"
    image_index : int64 (n_rows, max_images) - rows of ``study_emb``, most recent first; 0 = none
    image_age_h : float32 (n_rows, max_images) - age of each of those studies at the row
    study_paths : object (n_studies + 1,) or None - each study's image file (``image_paths=True``); row 0 None
    """

    x: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    study_emb: np.ndarray | None = None
    image_index: np.ndarray | None = None
    image_age_h: np.ndarray | None = None
    study_paths: np.ndarray | None = None

    @property
    def n_stays(self) -> int:
        return len(self.starts)

    def positions(self, stays) -> np.ndarray:
        """Sorted-row positions of ``stays`` (indices into ``starts``), in batch order (stay, hour)."""
        stays = np.asarray(stays, dtype=np.int64)
        lens = self.lengths[stays]
        offs = np.repeat(self.starts[stays] - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return offs + np.arange(int(lens.sum()))

    def batch(self, stays, device="cpu") -> dict[str, torch.Tensor]:
        """Right-padded tensors for stays ``stays``: ``x (B, T, C)``, ``valid (B, T)``, and images.

        Images (when present): ``images (S, D)`` the batch's studies with row 0 = none,
        ``image_index (B, T, K)`` into it and ``image_age_h (B, T, K)``; with study paths also
        ``image_paths``, a list of the files of ``images[1:]`` (not a tensor).
        """
        stays = np.asarray(stays, dtype=np.int64)
        lens = self.lengths[stays]
        b, t = len(stays), int(lens.max()) if len(stays) else 0
        valid = np.arange(t)[None, :] < lens[:, None]
        pos = self.positions(stays)
        x = np.zeros((b, t, self.x.shape[1]), dtype=np.float32)
        x[valid] = self.x[pos]
        out = {"x": torch.from_numpy(x), "valid": torch.from_numpy(valid)}
        if self.study_emb is not None:
            k = self.image_index.shape[1]
            idx = np.zeros((b, t, k), dtype=np.int64)
            age = np.zeros((b, t, k), dtype=np.float32)
            idx[valid], age[valid] = self.image_index[pos], self.image_age_h[pos]
            used, local = np.unique(np.concatenate([[0], idx.ravel()]), return_inverse=True)
            out["images"] = torch.from_numpy(self.study_emb[used])
            out["image_index"] = torch.from_numpy(local[1:].reshape(idx.shape))
            out["image_age_h"] = torch.from_numpy(age)
        out = {name: v.to(device) for name, v in out.items()}
        if self.study_emb is not None and self.study_paths is not None:
            out["image_paths"] = self.study_paths[used[1:]].tolist()
        return out


class SequenceInputs:
    """Fitted preprocessing from screens to :class:`Sequences` (statistics saved with the model).

    Parameters
    ----------
    max_age_h : float
        Time gaps are capped here before log-scaling (a week).
    clip_z : float
        z-scores are clipped to ``[-clip_z, clip_z]`` (implausible extremes do not dominate).
    max_images : int, optional
        Read CXR embedding columns and give each row this many most recent studies; ``None``: EHR only.
    image_paths : bool
        Also read ``emb_cxr_image`` and keep each study's image file (``Sequences.study_paths``);
        needs ``max_images``.
    """

    def __init__(self, *, max_age_h: float = 168.0, clip_z: float = 5.0, max_images: int | None = None,
                 image_paths: bool = False):
        self.max_age_h = max_age_h
        self.clip_z = clip_z
        self.max_images = max_images
        self.image_paths = image_paths
        if image_paths and max_images is None:
            raise ValueError("image_paths=True needs max_images (the CXR studies)")

    def fit(self, screens: pd.DataFrame) -> "SequenceInputs":
        """Choose the columns and fit the z-score statistics on (training) ``screens``."""
        require_columns(screens, [*_KEYS, "hours_since_admit"], table="screens", purpose="for sequence inputs")
        self.concepts_ = [c for c in screen_concept_columns(screens) if not c.startswith("cxr_")]
        if not self.concepts_:
            raise SchemaError("screens: no concept columns (<concept> with <concept>_age_h) to build sequences from")
        vals = screens[self.concepts_].to_numpy(dtype="float64")
        self.mean_ = np.nan_to_num(np.nanmean(vals, axis=0)) if len(vals) else np.zeros(len(self.concepts_))
        sd = np.nanstd(vals, axis=0) if len(vals) else np.ones(len(self.concepts_))
        self.scale_ = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
        self.static_ = [c for c in ("age", "sex", "department") if c in screens.columns]
        ages = screens["age"].to_numpy(dtype="float64") if "age" in self.static_ else np.zeros(1)
        age_sd = float(np.nanstd(ages)) if np.isfinite(ages).any() else 1.0
        self.age_stats_ = [float(np.nan_to_num(np.nanmean(ages))) if np.isfinite(ages).any() else 0.0,
                           age_sd if age_sd > 0 else 1.0]
        self.departments_ = (sorted(screens["department"].dropna().astype(str).unique())
                             if "department" in self.static_ else [])
        self.embedding_columns_ = []
        if self.max_images is not None:
            self.embedding_columns_ = embedding_columns(screens.columns)
            require_columns(screens, [EMB_AGE, *(self.embedding_columns_[:1] or [f"{EMB_PREFIX}000"])],
                            table="screens", purpose="for a fusion model (attach CXR embeddings first)")
            emb = studies_from_screens(screens)[self.embedding_columns_].to_numpy(dtype="float64")
            self.emb_mean_ = emb.mean(axis=0) if len(emb) else np.zeros(emb.shape[1])
            esd = emb.std(axis=0) if len(emb) else np.ones(emb.shape[1])
            self.emb_scale_ = np.where(esd > 0, esd, 1.0)
        return self

    @property
    def columns_(self) -> list[str]:
        """Screen columns these inputs read."""
        cols = [*_KEYS, "hours_since_admit"] + [c for x in self.concepts_ for c in (x, f"{x}_age_h")]
        cols += self.static_
        cols += [*self.embedding_columns_, EMB_AGE] if self.max_images is not None else []
        return cols + ([EMB_IMAGE] if self.image_paths else [])

    @property
    def channels_(self) -> list[str]:
        """Names of the channels of ``Sequences.x``."""
        names = [n for c in self.concepts_ for n in (c, f"{c}:measured", f"{c}:gap")]
        names += [f"hours_since_admit:{k}" for k in ("log", "week", "decay24", "decay72")]
        names += ["age"] if "age" in self.static_ else []
        names += ["sex:M"] if "sex" in self.static_ else []
        return names + [f"department:{d}" for d in self.departments_]

    def concept_channels(self, concept: str) -> list[int]:
        """Channel positions of one concept (value, mask, gap), for occlusion."""
        i = self.concepts_.index(concept)
        return [3 * i, 3 * i + 1, 3 * i + 2]

    def transform(self, screens: pd.DataFrame) -> Sequences:
        """Arrays of ``screens`` (any row order; every screen hour of each stay)."""
        require_columns(screens, self.columns_, table="screens", purpose="that these sequence inputs were fitted on")
        order, starts, sid, sec = _sorted_rows(screens)
        n = len(order)
        s = screens.iloc[order]
        vals = s[self.concepts_].to_numpy(dtype="float64")
        ages = s[[f"{c}_age_h" for c in self.concepts_]].to_numpy(dtype="float64")
        seen = ~np.isnan(ages) & ~np.isnan(vals)
        z = np.clip((np.nan_to_num(vals) - self.mean_) / self.scale_, -self.clip_z, self.clip_z)
        cap = np.log1p(self.max_age_h)
        gap = np.log1p(np.clip(np.nan_to_num(ages), 0.0, self.max_age_h)) / cap
        per_concept = np.stack([np.where(seen, z, 0.0), seen & (ages < 1.0), np.where(seen, gap, 1.0)], axis=2)
        hours = s["hours_since_admit"].to_numpy(dtype="float64")
        parts = [per_concept.reshape(n, -1),
                 np.column_stack([np.log1p(hours) / cap, hours / 168.0, np.exp(-hours / 24.0), np.exp(-hours / 72.0)])]
        if "age" in self.static_:
            mu, sd = self.age_stats_
            parts.append(np.nan_to_num((s["age"].to_numpy(dtype="float64") - mu) / sd)[:, None])
        if "sex" in self.static_:
            parts.append((s["sex"].astype(str).to_numpy() == "M")[:, None])
        if self.departments_:
            dep = s["department"].astype(str).to_numpy()
            parts.append(dep[:, None] == np.array(self.departments_)[None, :])
        x = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)
        lengths = np.diff(np.concatenate([starts, [n]])).astype(np.int64)
        seq = Sequences(x=x, order=order, starts=starts.astype(np.int64), lengths=lengths)
        if self.max_images is not None:
            self._add_images(seq, s, sec, starts)
        return seq

    def _add_images(self, seq: Sequences, s: pd.DataFrame, sec: np.ndarray, starts: np.ndarray) -> None:
        age_h = s[EMB_AGE].to_numpy(dtype="float64")
        key, new = _study_keys(sec, age_h, starts)
        emb = s[self.embedding_columns_].to_numpy(dtype="float64")[new]
        if np.isnan(emb).any():
            row = int(np.flatnonzero(np.isnan(emb).any(axis=1))[0])
            raise SchemaError(f"screens: CXR study {row} (stay {s['stay_id'].to_numpy()[new][row]}) has "
                              f"{EMB_AGE} but missing embedding values")
        seq.study_emb = np.concatenate([np.zeros((1, emb.shape[1])), (emb - self.emb_mean_) / self.emb_scale_]
                                       ).astype(np.float32)
        study_key = np.concatenate([[0], key[new]])
        total = np.cumsum(new)  # studies seen so far, counted over all rows: the 1-based study number
        base = np.repeat(total[starts] - new[starts], seq.lengths)
        k = int(self.max_images)
        seen_in_stay = (total - base)[:, None] - np.arange(k)[None, :]
        idx = np.where(seen_in_stay >= 1, total[:, None] - np.arange(k)[None, :], 0)
        seq.image_index = idx.astype(np.int64)
        seq.image_age_h = np.where(idx > 0, (sec[:, None] - study_key[idx]) / _HOUR_S, 0.0).astype(np.float32)
        if self.image_paths:
            paths = s[EMB_IMAGE].to_numpy(dtype=object)[new]
            bad = np.flatnonzero([not isinstance(p, str) or not p for p in paths])
            if len(bad):
                raise SchemaError(f"screens: CXR study {int(bad[0])} (stay {s['stay_id'].to_numpy()[new][bad[0]]}) "
                                  f"has {EMB_AGE} but no image file in {EMB_IMAGE}; fine-tuning the encoder reads "
                                  "every study's image (attach_embeddings(..., image_paths=True))")
            seq.study_paths = np.concatenate([np.array([None], dtype=object), paths])

    # -- persistence (JSON-safe state) --------------------------------------------------------
    _FITTED = ("concepts_", "mean_", "scale_", "static_", "age_stats_", "departments_", "embedding_columns_")

    def state(self) -> dict:
        """Fitted statistics as plain lists (stored in ``model.json``)."""
        out = {a: np.asarray(getattr(self, a)).tolist() if a in ("mean_", "scale_") else getattr(self, a)
               for a in self._FITTED}
        if self.max_images is not None:
            out.update(emb_mean_=self.emb_mean_.tolist(), emb_scale_=self.emb_scale_.tolist())
        params = {"max_age_h": self.max_age_h, "clip_z": self.clip_z, "max_images": self.max_images}
        if self.image_paths:  # only when set: models saved before the option load unchanged
            params["image_paths"] = True
        return {"params": params, "fitted": out}

    @classmethod
    def from_state(cls, state: dict) -> "SequenceInputs":
        """Rebuild fitted inputs from :meth:`state`."""
        obj = cls(**state["params"])
        for name, value in state["fitted"].items():
            arr = name in ("mean_", "scale_", "emb_mean_", "emb_scale_")
            setattr(obj, name, np.asarray(value, dtype="float64") if arr else value)
        return obj
