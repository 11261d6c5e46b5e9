"""The synthetic linked cohort: :func:`generate_cohort` (an :class:`ehr.cohort.Cohort`)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ehr.cohort import Cohort
from ehr.concepts import load_concepts
from ehr.schema import CXR_FINDINGS, validate
from ehr.synthetic.cxr import simulate_cxr
from ehr.synthetic.physiology import sofa, sofa_onset, trends
from ehr.synthetic.plan import DEPARTMENTS, SITES, plan_stays
from ehr.synthetic.sampling import make_grid, measure

__all__ = ["generate_cohort", "GENERATOR_VERSION", "synthetic_concepts"]

log = logging.getLogger(__name__)

#: Bumped whenever the same seed would give a different cohort.
GENERATOR_VERSION = "1.0"

_SUBJECT0, _STAY0, _STUDY0 = 100_000, 200_000, 500_000
_SOURCES = np.array([None, "pneumonia", "urinary", "abdominal", "skin", "other"], dtype=object)
_ACVPU = np.array(["A", "C", "V", "P", "U"], dtype=object)


def synthetic_concepts() -> list[str]:
    """Concepts the generator emits (those with a ``synthetic`` source code), dictionary order."""
    return [c.name for c in load_concepts().values() if "synthetic" in c.sources]


def _stamp(admit, hours):
    """admit (datetime64[ns]) + float hours, rounded to whole minutes; inf/nan -> NaT."""
    h = np.asarray(hours, dtype="float64")
    ok = np.isfinite(h)
    minutes = np.where(ok, np.round(np.where(ok, h, 0.0) * 60.0), 0).astype(np.int64)
    out = admit + minutes * np.timedelta64(60, "s")
    return np.where(ok, out, np.datetime64("NaT")).astype("datetime64[ns]")


def generate_cohort(n_stays: int = 2000, seed: int = 0, *, start="2024-01-01", site: str = "A") -> Cohort:
    """Generate a seeded synthetic linked cohort (events, stays, CXR studies).

    Parameters
    ----------
    n_stays : int
        Number of stays (one per patient).
    seed : int
        Seed of the only random generator used; the same (n_stays, seed, start) always gives
        identical tables.
    start : str or Timestamp
        Admissions are spread over the year after ``start``.
    site : {"A", "B"}
        The hospital (:data:`ehr.synthetic.plan.SITES`): ``A`` is the default cohort; ``B``
        another site with more ICU and surgical stays, older patients, more sepsis and more
        frequent observations, for external validation. Site B's stays have
        ``source="synthetic-B"``.

    Returns
    -------
    Cohort
        ``events``, ``stays``, ``cxr`` and ``truth`` (validated) and ``meta`` (``source``,
        generator, version, n_stays, seed, start); no ingest report.

    Examples
    --------
    >>> c = generate_cohort(50, seed=1)
    >>> sorted(c.stays["department"].unique())[:2]
    ['ED', 'ICU']
    >>> bool((c.events["code"].str.startswith("SYNTH/")).all())
    True
    """
    if int(n_stays) < 1:
        raise ValueError(f"generate_cohort: n_stays must be >= 1, got {n_stays}")
    if site not in SITES:
        raise ValueError(f"generate_cohort: unknown site {site!r}; expected one of {', '.join(SITES)}")
    n = int(n_stays)
    start_ts = pd.Timestamp(start)
    cohort = _generate(n, np.random.default_rng(seed), start_ts, site=site)
    cohort.meta = {"source": "synthetic", "generator": "ehr.synthetic", "version": GENERATOR_VERSION, "n_stays": n,
                   "seed": int(seed), "start": str(start_ts)}
    if site != "A":  # site A's meta stays as it was (its cohort.json unchanged)
        cohort.meta["site"] = site
    return cohort


def _generate(n: int, rng: np.random.Generator, start_ts: pd.Timestamp, first_stay: int = 0,
              first_study: int = 0, site: str = "A", plan_out: dict | None = None) -> Cohort:
    """``n`` stays of ``site`` drawn from ``rng``; stay k gets ids ``first_stay + k``, studies ``first_study + ...``.

    ``plan_out``: a dict that receives the latent plan (``plan``, ``onset_h``, ``septic``) for
    :mod:`ehr.synthetic.lung`; the tables do not depend on it.
    """
    P = plan_stays(n, rng, SITES[site])
    admit_min = np.sort(rng.integers(0, 365 * 24 * 60, n))
    admit = np.datetime64(start_ts.to_datetime64(), "ns") + admit_min * np.timedelta64(60, "s")
    P["admit_clock_h"] = ((admit_min / 60.0) + start_ts.hour + start_ts.minute / 60.0) % 24.0

    # Onset = SOFA-like rise >= 2 during infection (on the noise-free trend). Planned septic
    # stays whose organ plan falls short get a stronger circulatory/renal hit, so the septic
    # share stays what the plan says; the label is always what the trajectory shows.
    onset, base, rise = sofa_onset(P)
    for _ in range(3):
        short = np.flatnonzero(P["planned_septic"] & ~np.isfinite(onset))
        if not short.size:
            break
        P["a_circ"][short] = np.maximum(P["a_circ"][short], 30.0)
        P["a_renal"][short] = P["a_renal"][short] + 1.5
        P["a_perf"][short] = np.maximum(P["a_perf"][short], 2.0)
        onset[short], base[short], rise[short] = sofa_onset(P, short)
    septic = np.isfinite(onset)
    if (~P["planned_septic"] & septic).any():
        log.debug("%d unplanned SOFA rises >= 2", int((~P["planned_septic"] & septic).sum()))

    concepts = synthetic_concepts()
    cmap = load_concepts()
    limits = {c: (cmap[c].min, cmap[c].max) for c in concepts}
    grid = make_grid(P["los_h"])
    si, minute, ci, value = measure(P, grid, rng, concepts, limits, SITES[site])
    order = np.lexsort((ci, minute, si))
    si, minute, ci, value = si[order], minute[order], ci[order], value[order]
    dup = np.concatenate([[False], (si[1:] == si[:-1]) & (minute[1:] == minute[:-1]) & (ci[1:] == ci[:-1])])
    si, minute, ci, value = si[~dup], minute[~dup], ci[~dup], value[~dup]

    stay_id = _STAY0 + first_stay + np.arange(n, dtype=np.int64)
    subject_id = _SUBJECT0 + first_stay + np.arange(n, dtype=np.int64)
    codes = np.array([cmap[c].sources["synthetic"] for c in concepts], dtype=object)
    units = np.array([cmap[c].unit for c in concepts], dtype=object)
    names = np.array(concepts, dtype=object)
    text = np.full(si.size, None, dtype=object)
    is_acvpu = ci == concepts.index("acvpu")
    text[is_acvpu] = _ACVPU[value[is_acvpu].astype(np.int64)]
    events = pd.DataFrame({
        "subject_id": subject_id[si],
        "stay_id": stay_id[si],
        "time": admit[si] + minute * np.timedelta64(60, "s"),
        "code": codes[ci],
        "numeric_value": value,
        "text_value": text,
        "unit": units[ci],
        "concept": names[ci],
    })

    hosp_admit = _stamp(admit, -P["hosp_offset_h"])
    onset_time = _stamp(admit, onset)
    from_hosp_h = np.where(septic, onset + P["hosp_offset_h"], np.nan)
    setting = np.where(~septic, None, np.where(from_hosp_h <= 96.0, "community", "hospital")).astype(object)
    abx = np.where(P["antibiotic_h"] < P["los_h"], np.maximum(P["antibiotic_h"], 0.05), np.inf)
    stays = pd.DataFrame({
        "subject_id": subject_id,
        "stay_id": stay_id,
        "source": "synthetic" if site == "A" else f"synthetic-{site}",
        "admit_time": admit,
        "discharge_time": _stamp(admit, P["los_h"]),
        "hospital_admit_time": hosp_admit,
        "age": P["age"],
        "sex": np.where(P["male"], "M", "F").astype(object),
        "department": np.array(DEPARTMENTS, dtype=object)[P["dept"]],
        "sepsis": septic,
        "onset_time": onset_time,
        "sepsis_label_time": np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
        "antibiotic_time": _stamp(admit, abx),
        "surgery_time": _stamp(admit, P["surgery_h"]),
        "death": P["death"].astype(bool),
        "bsi": P["bsi"].astype(bool),
        "onset_setting": setting,
        "pneumonia": P["pneumonia"].astype(bool),
        "hypercapnic": P["copd"].astype(bool),
    })

    if plan_out is not None:
        plan_out.update(plan=P, onset_h=onset, septic=septic)
    ci_, ct, truth, model = simulate_cxr(P, onset, septic, rng)
    cxr = pd.DataFrame({
        "study_id": _STUDY0 + first_study + np.arange(ci_.size, dtype=np.int64),
        "subject_id": subject_id[ci_],
        "stay_id": stay_id[ci_],
        "time": _stamp(admit[ci_], ct),
        "image_path": np.full(ci_.size, None, dtype=object),
    })
    for f in CXR_FINDINGS:
        cxr[f"truth_{f}"] = truth[f]
    for f in CXR_FINDINGS:
        cxr[f"cxr_{f}"] = model[f]

    x0 = trends(np.zeros(n), np.arange(n), P, wander=False)
    truth_df = pd.DataFrame({
        "stay_id": stay_id,
        "planned_septic": P["planned_septic"].astype(bool),
        "infection": P["infected"].astype(bool),
        "infection_source": _SOURCES[P["source"]],
        "infection_time": _stamp(admit, P["infection_h"]),
        "suspicion_time": _stamp(admit, P["suspicion_h"]),
        "lab_derangement_time": _stamp(admit, P["lab_h"]),
        "dysfunction_time": _stamp(admit, P["dysfunction_h"]),
        "sofa_baseline": base.astype(np.int64),
        "sofa_max_rise": np.where(np.isfinite(rise), rise, 0).astype(np.int64),
        "sofa_admission": sofa(x0).astype(np.int64),
        "copd": P["copd"].astype(bool),
        "heart_failure": P["hf"].astype(bool),
        "ckd": P["ckd"].astype(bool),
        "diabetes": P["diabetes"].astype(bool),
        "surgical": P["surgical"].astype(bool),
    })
    validate(events, "events")
    validate(stays, "stays")
    validate(cxr, "cxr")
    validate(truth_df, "truth")
    return Cohort(events, stays, cxr, truth_df)

