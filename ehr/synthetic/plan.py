"""Stay-level plan of the synthetic cohort: who the patients are and what happens to them when.

Everything here is drawn once per stay (vectorised over stays); times are float hours since
``admit_time`` and ``np.inf`` means "never". :mod:`ehr.synthetic.physiology` turns the plan into
latent trajectories, :mod:`ehr.synthetic.sampling` into measured events.

The timeline of an infected stay (why each step comes in this order is what the cohort is for):

``infection_h`` (symptoms start: fever, tachycardia, tachypnoea; may precede admission)
-> ``cxr_h`` (pneumonia only: the chest X-ray taken on respiratory symptoms)
-> ``suspicion_h`` (the clinician suspects infection: cultures, lactate, antibiotics soon)
-> ``lab_h`` (inflammatory labs move: CRP, WBC; always after the pneumonia CXR)
-> ``dysfunction_h`` (organ dysfunction ramps up over ``ramp_h``; septic stays only reach
   a SOFA rise >= 2, which defines the onset in :func:`ehr.synthetic.physiology.sofa_onset`)
-> recovery after antibiotics, or death.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DEPARTMENTS", "Site", "SITES", "plan_stays"]

#: Departments (index 0 ward, 1 surgical ward, 2 ICU, 3 ED).
DEPARTMENTS: tuple[str, ...] = ("ward", "surgical ward", "ICU", "ED")


@dataclass(frozen=True)
class Site:
    """A hospital's case mix and habits: what differs between two sites of the synthetic cohort.

    Per department (ward, surgical ward, ICU, ED): the share of stays, the chance that a stay is
    planned septic, and the base rates (per hour) of vital-sign rounds, lab panels and blood
    gases (:mod:`ehr.synthetic.sampling` raises them as patients deteriorate); and the age
    distribution. Site ``A`` is the generator's default; the same seed gives the same cohort.
    """

    name: str
    dept_p: tuple
    septic_p: tuple
    age_mean: float
    age_sd: float
    vital_rate: tuple
    lab_rate: tuple
    gas_rate: tuple


#: Site A: the default cohort (~9 % septic). Site B: a tertiary hospital with more ICU and
#: surgical stays, older patients, more sepsis (~14 %), 2-hourly ward observations and more
#: frequent labs and blood gases: an external-validation site with a shift in case mix,
#: measurement habits and prevalence.
SITES = {
    "A": Site("A", dept_p=(0.40, 0.25, 0.20, 0.15), septic_p=(0.065, 0.05, 0.19, 0.09), age_mean=64.0, age_sd=17.0,
              vital_rate=(1 / 4.0, 1 / 4.0, 1 / 0.95, 1 / 1.5), lab_rate=(1 / 22.0, 1 / 22.0, 1 / 14.0, 1 / 16.0),
              gas_rate=(0.003, 0.003, 0.025, 0.01)),
    "B": Site("B", dept_p=(0.25, 0.30, 0.32, 0.13), septic_p=(0.10, 0.08, 0.24, 0.12), age_mean=69.0, age_sd=14.0,
              vital_rate=(1 / 2.0, 1 / 2.0, 1 / 0.95, 1 / 1.0), lab_rate=(1 / 12.0, 1 / 12.0, 1 / 8.0, 1 / 10.0),
              gas_rate=(0.008, 0.008, 0.05, 0.02)),
}
#: Median length of stay (hours) of stays without infection, per department.
_LOS_MEDIAN_H = np.array([48.0, 52.0, 44.0, 26.0])

_MAX_LOS_H = 480.0  # 20 days


def _u(rng, lo, hi, n):
    return rng.uniform(lo, hi, n)


def plan_stays(n: int, rng: np.random.Generator, site: Site = SITES["A"]) -> dict[str, np.ndarray]:
    """Draw the stay-level plan for ``n`` stays.

    Parameters
    ----------
    n : int
        Number of stays.
    rng : numpy.random.Generator
        The only source of randomness; the draw order is fixed, so a seed gives one cohort.
    site : Site
        Case mix, prevalence and age of the hospital (default site A).

    Returns
    -------
    dict of str to ndarray
        One array of length ``n`` per plan field (baselines, comorbidities, event times in hours
        since admission with ``np.inf`` for never, organ-dysfunction amplitudes).

    Examples
    --------
    >>> import numpy as np
    >>> p = plan_stays(50, np.random.default_rng(0))
    >>> len(p["los_h"]), bool((p["los_h"] >= 12).all())
    (50, True)
    """
    P: dict[str, np.ndarray] = {}
    inf = np.inf
    dept = rng.choice(len(DEPARTMENTS), size=n, p=np.array(site.dept_p))
    icu = dept == 2
    P["dept"] = dept
    P["icu"] = icu
    age = np.clip(rng.normal(site.age_mean, site.age_sd, n), 18.0, 99.0)
    P["age"] = np.round(age, 1)
    P["male"] = rng.random(n) < 0.53
    old = age > 70
    P["copd"] = rng.random(n) < (0.05 + 0.05 * (age > 60))
    P["hf"] = rng.random(n) < (0.03 + 0.08 * old)
    P["ckd"] = rng.random(n) < (0.06 + 0.10 * old)
    P["diabetes"] = rng.random(n) < 0.2
    # ICU stays often follow a ward stay or theatre: the hospital admission precedes the ICU one,
    # which matters for the 4-day community/hospital-onset rule.
    P["hosp_offset_h"] = np.where(icu & (rng.random(n) < 0.6), _u(rng, 6, 96, n), 0.0)

    surgical = (dept == 1) | (icu & (rng.random(n) < 0.35))
    P["surgical"] = surgical
    P["surgery_h"] = np.where(surgical, _u(rng, 1.0, 20.0, n), inf)
    P["postop_o2"] = surgical & (rng.random(n) < 0.7)

    septic = rng.random(n) < np.array(site.septic_p)[dept]
    mild = ~septic & (rng.random(n) < 0.17)
    infected = septic | mild
    P["planned_septic"] = septic
    P["infected"] = infected
    pneumonia = infected & (rng.random(n) < np.where(septic, 0.45, 0.35))
    P["pneumonia"] = pneumonia
    # infection source for the truth table: 0 none, 1 pneumonia, 2 urinary, 3 abdominal, 4 skin, 5 other
    other_src = rng.choice([2, 3, 4, 5], size=n, p=[0.35, 0.30, 0.15, 0.20])
    other_src = np.where(surgical & (rng.random(n) < 0.5), 3, other_src)
    P["source"] = np.where(~infected, 0, np.where(pneumonia, 1, other_src))

    hospital_acq = rng.random(n) < np.where(surgical, 0.55, 0.35)
    t_inf = np.where(hospital_acq, 60.0 + rng.gamma(1.5, 50.0, n), _u(rng, -30.0, 20.0, n))
    t_inf = np.minimum(t_inf, 320.0)
    t_inf = np.where(infected, t_inf, inf)
    P["infection_h"] = t_inf
    # Pneumonia: the X-ray is taken on respiratory symptoms, early (or on arrival).
    t_cxr = np.maximum(t_inf + _u(rng, 1.0, 6.0, n), _u(rng, 0.3, 1.5, n))
    P["cxr_h"] = np.where(pneumonia, t_cxr, inf)
    t_susp = np.maximum(t_inf + _u(rng, 2.0, 10.0, n), _u(rng, 0.2, 2.0, n))
    P["suspicion_h"] = np.where(infected, t_susp, inf)
    lab = np.where(pneumonia, np.maximum(t_inf + _u(rng, 8.0, 16.0, n), t_cxr + _u(rng, 2.0, 6.0, n)),
                   t_inf + _u(rng, 4.0, 12.0, n))
    P["lab_h"] = np.where(infected, lab, inf)
    dys0 = np.maximum(lab + _u(rng, 6.0, 24.0, n), _u(rng, 1.0, 4.0, n))
    ramp = _u(rng, 8.0, 30.0, n)
    P["dysfunction_h"] = np.where(infected, dys0, inf)
    P["ramp_h"] = ramp
    t_on_plan = dys0 + 0.6 * ramp  # roughly where the SOFA rise reaches 2

    # Antibiotics: usually at/after suspicion; in septic stays often around onset, early for some.
    early = rng.random(n) < 0.4
    abx_septic = np.where(early, t_susp + _u(rng, 0.0, 6.0, n),
                          np.maximum(t_on_plan + rng.normal(1.5, 3.0, n), t_susp))
    abx_mild = np.where(rng.random(n) < 0.9, t_susp + rng.gamma(2.0, 4.0, n), inf)
    t_abx = np.where(septic, abx_septic, np.where(mild, abx_mild, inf))
    P["antibiotic_h"] = t_abx
    P["infection_recovery_h"] = np.where(np.isfinite(t_abx), t_abx + _u(rng, 24.0, 48.0, n), inf)

    # Deaths: higher in septic stays (and in ICU).
    death = np.where(septic, rng.random(n) < np.where(icu, 0.30, 0.20),
                     rng.random(n) < np.where(icu, 0.07, 0.025))
    P["death"] = death
    P["bsi"] = np.where(septic, rng.random(n) < np.where(pneumonia, 0.15, 0.45),
                        mild & (rng.random(n) < 0.05))
    rec = np.maximum(np.where(np.isfinite(t_abx), t_abx, t_on_plan), t_on_plan) + _u(rng, 12.0, 48.0, n)
    P["dysfunction_recovery_h"] = np.where(septic & ~death, rec, inf)

    # Length of stay: right-skewed, from ~1 to ~20 days.
    los = _LOS_MEDIAN_H[dept] * np.exp(rng.normal(0.0, 0.6, n))
    los = np.where(surgical, np.maximum(los, P["surgery_h"] + _u(rng, 24.0, 72.0, n)), los)
    los = np.where(mild, np.maximum(los, t_inf + _u(rng, 48.0, 120.0, n)), los)
    full = dys0 + ramp
    los_septic = np.where(death, full + 6.0 + rng.gamma(2.0, 24.0, n),
                          full + 18.0 + 50.0 * np.exp(rng.normal(0.0, 0.6, n)))
    los = np.where(septic, los_septic, los)
    los = np.clip(los, np.where(dept == 3, 12.0, 18.0), _MAX_LOS_H)
    los = np.where(septic, np.maximum(los, full + 6.0), los)  # onset always inside the stay
    P["los_h"] = np.round(los * 60.0) / 60.0  # whole minutes
    P["surgery_h"] = np.where(surgical, np.minimum(P["surgery_h"], 0.5 * P["los_h"]), inf)

    # Baselines (healthy-ish values, shifted by comorbidity and department).
    P["hr0"] = rng.normal(80.0, 10.0, n)
    P["sbp0"] = rng.normal(118.0, 14.0, n) + 0.25 * (age - 60)
    P["dbp0"] = 0.45 * P["sbp0"] + rng.normal(12.0, 6.0, n)
    P["resp0"] = rng.normal(16.0, 2.0, n) + 3.0 * P["copd"]
    pf0 = rng.normal(440.0, 45.0, n) - 1.0 * np.maximum(age - 60, 0)
    pf0 = np.where(P["copd"], rng.normal(290.0, 20.0, n), pf0)
    pf0 = np.where(icu & ~P["copd"], pf0 - rng.uniform(0, 80, n), pf0)
    P["pf0"] = pf0
    P["temp0"] = rng.normal(36.8, 0.3, n)
    P["gcs0"] = np.where((age > 80) & (rng.random(n) < 0.1), 14.0, 15.0)
    P["crp0"] = np.exp(rng.normal(np.log(4.0), 0.9, n))
    P["wbc0"] = np.exp(rng.normal(np.log(7.5), 0.25, n))
    P["plt0"] = np.clip(rng.normal(245.0, 60.0, n) - 45.0 * icu, 110.0, None)
    P["bili0"] = np.exp(rng.normal(np.log(0.55), 0.35, n))
    P["crea0"] = np.where(P["ckd"], np.exp(rng.normal(np.log(1.6), 0.3, n)),
                          np.exp(rng.normal(np.log(0.85), 0.2, n)))
    P["bun_ratio"] = rng.normal(16.0, 3.5, n)
    P["alb0"] = rng.normal(3.8, 0.4, n) - 0.3 * icu
    P["lact0"] = np.exp(rng.normal(np.log(1.1), 0.25, n))
    P["hco30"] = np.where(P["copd"], rng.normal(30.0, 2.0, n), rng.normal(24.5, 1.8, n))
    P["ph0"] = np.where(P["copd"], rng.normal(7.37, 0.02, n), rng.normal(7.40, 0.02, n))
    P["glu0"] = np.where(P["diabetes"], rng.normal(165.0, 30.0, n), rng.normal(105.0, 12.0, n))
    P["hgb0"] = rng.normal(12.8, 1.6, n) - 0.8 * ~P["male"] - 1.2 * icu

    # Infection response amplitudes.
    P["fever_amp"] = np.where(rng.random(n) < 0.1, -rng.uniform(0.3, 1.0, n),  # some never spike
                              np.where(septic, rng.normal(1.8, 0.5, n), rng.normal(1.2, 0.5, n)))
    P["crp_amp"] = np.where(septic, _u(rng, 120.0, 320.0, n), _u(rng, 40.0, 150.0, n))
    P["wbc_amp"] = np.where(septic & (rng.random(n) < 0.15), -_u(rng, 0.4, 0.7, n),
                            np.where(septic, _u(rng, 0.6, 1.8, n), _u(rng, 0.3, 1.0, n)))
    # Organ dysfunction at full ramp. Septic stays: 2+ organs, chosen per source; mild
    # infections: one organ at most, never enough for a SOFA rise of 2 (see physiology).
    pick = rng.random((6, n))
    p_org = np.array([0.55, 0.45, 0.35, 0.30, 0.20, 0.35])[:, None]  # circ renal resp coag liver cns
    p_org = np.where((np.arange(6)[:, None] == 2) & pneumonia[None, :], 0.95, p_org)
    chosen = pick < p_org
    # guarantee at least two organs in septic stays
    first_two = np.argsort(pick - p_org, axis=0)[:2]
    chosen[first_two[0], np.arange(n)] = True
    chosen[first_two[1], np.arange(n)] = True
    chosen &= septic[None, :]
    mild_org = rng.choice([0, 1, 3, 4], size=n)  # mild pneumonia already lowers P/F
    mild_has = mild & ~pneumonia & (rng.random(n) < 0.6)
    def amplitude(organ, septic_range, mild_range=None):
        full = np.where(chosen[organ], _u(rng, *septic_range, n), 0.0)
        if mild_range is None:
            return full
        return np.where(mild_has & (mild_org == organ), _u(rng, *mild_range, n), full)

    P["a_circ"] = amplitude(0, (22.0, 40.0), (0.0, 8.0))  # mmHg MAP drop
    P["a_renal"] = amplitude(1, (1.0, 2.5), (0.0, 0.3))  # creatinine x (1 + a)
    P["a_resp"] = amplitude(2, (0.35, 0.6))  # P/F x (1 - a)
    P["a_coag"] = amplitude(3, (0.45, 0.75), (0.0, 0.3))  # platelets x (1 - a)
    P["a_liver"] = amplitude(4, (1.5, 6.0), (0.0, 0.5))  # bilirubin x (1 + a)
    P["a_cns"] = amplitude(5, (2.5, 7.0))  # GCS points
    P["a_perf"] = np.where(septic, np.where(chosen[0], _u(rng, 1.5, 5.0, n), _u(rng, 0.4, 1.8, n)),
                           np.where(mild, _u(rng, 0.0, 0.4, n), 0.0))

    # Slow physiological wander (two sinusoids per stay) and the admission clock hour.
    P["w_period"] = np.stack([_u(rng, 8.0, 30.0, n), _u(rng, 30.0, 90.0, n)])
    P["w_phase"] = rng.uniform(0, 2 * np.pi, (4, n))
    P["admit_clock_h"] = _u(rng, 0.0, 24.0, n)
    return P
