"""The synthetic cohort's lung state at any hour: what a chest film *would* have shown then.

Films are taken every day or two; the latent trajectory behind them exists at every hour. This
module replays the generator (same ``n_stays``, ``seed``, ``site``, ``start``: identical tables)
to recover the plan, and evaluates each finding's probability
(:func:`ehr.synthetic.cxr.finding_probabilities`) at the hours asked for.

How a probability becomes a 0/1 finding (``draw``): a finding is present while ``u < p(t)``.

``"study"`` (default): what a *new study* taken then would show, drawn as the generator draws
    every study: ``u`` fresh for each (stay, time), from ``(seed, stay_id, time)``, and a chest
    of its own (``anatomy_study_id`` <NA>). Films of one patient are conditionally independent
    given the trajectory, in the cohort as here, so this is the target a model trained on
    consecutive films can be fairly asked to hit.
``"persistent"``: a lung state coherent in time: ``u`` is drawn from ``(seed, stay_id)`` before
    the first study and *refreshed* by each study, from ``(seed, study_id)`` conditionally on what
    it showed (uniform on ``(0, p)`` if present, on ``[p, 1)`` if absent); the chest is the last
    study's. Findings then come and go only as the trajectory moves ``p``.

Either way a query at a study's own time returns exactly that study (truth and chest). Used to
evaluate generated films, never as a model input.

Examples
--------
>>> lungs = LungState.from_generator(30, seed=1)
>>> cxr = lungs.cohort.cxr
>>> at = lungs.at(cxr[["stay_id", "time"]])
>>> bool((at["truth_effusion"].to_numpy() == cxr["truth_effusion"].to_numpy()).all())
True
>>> bool((at["anatomy_study_id"].to_numpy() == cxr["study_id"].to_numpy()).all())
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import CXR_FINDINGS, SchemaError, require_columns
from ehr.synthetic.cxr import finding_probabilities

__all__ = ["LungState", "sample_screen_times"]


def _uniforms(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """One row of ``len(CXR_FINDINGS)`` uniforms per key, from ``(seed, key, stream)`` only."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    draws = np.array([np.random.default_rng([int(seed), int(k), stream]).random(len(CXR_FINDINGS))
                      for k in uniq]).reshape(len(uniq), len(CXR_FINDINGS))
    return draws[inverse]


class LungState:
    """The latent lung state of a synthetic cohort, at any (stay, time).

    Build with :meth:`from_generator`; :meth:`at` answers queries.
    """

    def __init__(self, cohort, plan: dict, seed: int):
        self.cohort = cohort
        self.plan = plan
        self.seed = int(seed)

    @classmethod
    def from_generator(cls, n_stays: int, seed: int = 0, *, site: str = "A", start="2024-01-01") -> "LungState":
        """Replay ``generate_cohort(n_stays, seed, site=site, start=start)`` and keep its plan."""
        from ehr.synthetic.cohort import _generate
        from ehr.synthetic.plan import SITES

        if int(n_stays) < 1:
            raise ValueError(f"LungState: n_stays must be >= 1, got {n_stays}")
        if site not in SITES:
            raise ValueError(f"LungState: unknown site {site!r}; expected one of {', '.join(SITES)}")
        plan: dict = {}
        cohort = _generate(int(n_stays), np.random.default_rng(seed), pd.Timestamp(start), site=site, plan_out=plan)
        return cls(cohort, plan, seed)

    def _index(self, stay_id: np.ndarray) -> np.ndarray:
        ids = self.cohort.stays["stay_id"].to_numpy(dtype=np.int64)
        pos = np.searchsorted(ids, stay_id)
        bad = (pos >= len(ids)) | (ids[np.minimum(pos, len(ids) - 1)] != stay_id)
        if bad.any():
            raise SchemaError(f"lung state: stay_id {int(stay_id[np.flatnonzero(bad)[0]])} is not in this cohort")
        return pos

    def _probabilities(self, k: np.ndarray, hours: np.ndarray) -> np.ndarray:
        p = finding_probabilities(self.plan["plan"], k, hours, self.plan["onset_h"], self.plan["septic"])
        return np.column_stack([p[f] for f in CXR_FINDINGS])

    def at(self, queries: pd.DataFrame, *, draw: str = "study") -> pd.DataFrame:
        """The lung state at each query row (``stay_id``, ``time``); ``draw`` as in the module notes.

        Returns one row per query, in order: ``stay_id, time, hour`` (since admission),
        ``truth_<finding>`` (0/1), ``p_<finding>`` and ``anatomy_study_id``: the study whose chest a
        film then would show (the study at that very time; with ``"persistent"`` the latest study at
        or before it), <NA> for a chest of its own.
        """
        if draw not in ("study", "persistent"):
            raise ValueError(f"draw must be 'study' or 'persistent', got {draw!r}")
        require_columns(queries, ["stay_id", "time"], table="lung-state queries")
        sid = queries["stay_id"].to_numpy(dtype=np.int64)
        when = pd.to_datetime(queries["time"]).to_numpy(dtype="datetime64[ns]")
        if np.isnat(when).any():
            raise SchemaError(f"lung-state queries: row {int(np.flatnonzero(np.isnat(when))[0])} has no time")
        k = self._index(sid)
        admit = self.cohort.stays["admit_time"].to_numpy(dtype="datetime64[ns]")
        hours = (when - admit[k]) / np.timedelta64(1, "h")
        p = self._probabilities(k, hours)

        cxr = self.cohort.cxr.sort_values(["time", "study_id"], kind="stable")
        right = pd.DataFrame({"stay_id": cxr["stay_id"].to_numpy(np.int64), "time": cxr["time"].to_numpy(),
                              "_row": np.arange(len(cxr))})
        left = pd.DataFrame({"stay_id": sid, "time": when, "_pos": np.arange(len(sid))}).sort_values("time")
        hit = pd.merge_asof(left, right, on="time", by="stay_id", direction="backward").sort_values("_pos")
        row = hit["_row"].to_numpy()
        seen = ~np.isnan(row)
        if draw == "study":  # only a study at this very time counts; any other hour is a new study
            exact = np.zeros(len(sid), bool)
            exact[seen] = cxr["time"].to_numpy(dtype="datetime64[ns]")[row[seen].astype(np.int64)] == when[seen]
            seen &= exact
            u = _uniforms(self.seed, sid * 10**10 + when.astype("datetime64[s]").astype(np.int64), stream=4)
        else:
            u = _uniforms(self.seed, sid, stream=3)
        if seen.any():
            r = row[seen].astype(np.int64)
            study = cxr.iloc[r]
            k_s = self._index(study["stay_id"].to_numpy(np.int64))
            h_s = (study["time"].to_numpy(dtype="datetime64[ns]") - admit[k_s]) / np.timedelta64(1, "h")
            p_s = self._probabilities(k_s, h_s)
            shown = study[[f"truth_{f}" for f in CXR_FINDINGS]].to_numpy(dtype=np.int64) == 1
            w = _uniforms(self.seed, study["study_id"].to_numpy(np.int64), stream=2)
            u[seen] = np.where(shown, w * p_s, p_s + w * (1.0 - p_s))
        out = pd.DataFrame({"stay_id": sid, "time": when, "hour": hours})
        for j, f in enumerate(CXR_FINDINGS):
            out[f"truth_{f}"] = (u[:, j] < p[:, j]).astype(np.int64)
        for j, f in enumerate(CXR_FINDINGS):
            out[f"p_{f}"] = p[:, j]
        anatomy = np.full(len(sid), -1, dtype=np.int64)
        anatomy[seen] = cxr["study_id"].to_numpy(np.int64)[row[seen].astype(np.int64)]
        out["anatomy_study_id"] = pd.array(np.where(seen, anatomy, 0), dtype="Int64")
        out.loc[~seen, "anatomy_study_id"] = pd.NA
        return out


def sample_screen_times(stays: pd.DataFrame, n: int, seed: int = 0, *, min_hour: int = 1) -> pd.DataFrame:
    """``n`` random screen times (whole hours after admission, before discharge) of random stays.

    >>> from ehr.synthetic import generate_cohort
    >>> q = sample_screen_times(generate_cohort(20, seed=2).stays, 5, seed=0)
    >>> list(q.columns), len(q)
    (['stay_id', 'time'], 5)
    """
    require_columns(stays, ["stay_id", "admit_time", "discharge_time"], table="stays", purpose="to sample screens")
    if int(n) < 1:
        raise ValueError(f"sample_screen_times: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(stays), int(n))
    admit = pd.to_datetime(stays["admit_time"]).to_numpy(dtype="datetime64[ns]")[pick]
    discharge = pd.to_datetime(stays["discharge_time"]).to_numpy(dtype="datetime64[ns]")[pick]
    los = (discharge - admit) / np.timedelta64(1, "h")
    last = np.maximum(np.floor(los - 1e-9).astype(np.int64), min_hour)
    hour = min_hour + np.floor(rng.random(int(n)) * (last - min_hour + 1)).astype(np.int64)
    out = pd.DataFrame({"stay_id": stays["stay_id"].to_numpy(np.int64)[pick],
                        "time": admit + hour * np.timedelta64(3600, "s")})
    return out.sort_values(["stay_id", "time"], kind="stable").reset_index(drop=True)
