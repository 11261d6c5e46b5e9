"""Latent physiology of the synthetic cohort: the plan's timeline turned into trajectories.

:func:`trends` evaluates, for any vector of (stay, hour) pairs, the noise-free state of every
synthetic concept plus the latent drivers (``infection``, ``inflammation``, ``dysfunction``,
``postop``, ``overload``). It is closed-form in time, so the same function serves the hourly grid
(sampling intensities, SOFA onset) and the exact measurement times (values).

Couplings kept on purpose (they are what a model should find):

* fever drives heart rate (+10/min per degree above 37), post-operative pain adds transient
  tachycardia, a mild post-operative temperature and CRP rise (the confounders);
* MAP is (SBP + 2 DBP) / 3; circulatory dysfunction lowers both pressures and raises lactate,
  which lowers bicarbonate and pH;
* the P/F ratio falls with respiratory dysfunction, pneumonia and fluid overload; oxygen is
  titrated to a target PaO2 (lower for hypercapnic COPD patients, NEWS2 scale 2) and SpO2 follows
  the Severinghaus curve of PaO2 = P/F x FiO2, so on_o2 / o2_flow / fio2 / SpO2 agree;
* GCS falls with CNS dysfunction; ACVPU is derived from GCS (15 = Alert, 13-14 = new Confusion,
  9-12 = Voice, 6-8 = Pain, 3-5 = Unresponsive).
"""

from __future__ import annotations

import numpy as np

from ehr.sofa import MAP_ONLY_CUTS, organ_score, score

__all__ = ["trends", "sofa", "sofa_onset", "severinghaus", "o2_device", "acvpu_from_gcs"]


def _ramp(x):
    return np.clip(x, 0.0, 1.0)


def _decay(t, t0, tau):
    # 1 until t0, then exponential decay; t0 = inf means never
    with np.errstate(invalid="ignore"):
        d = np.where(np.isfinite(t0), np.maximum(t - t0, 0.0), 0.0)
    return np.exp(-d / tau)


def severinghaus(pao2):
    """Oxygen saturation (%) for an arterial PO2 (mmHg), Severinghaus (1979).

    Examples
    --------
    >>> round(float(severinghaus(90.0)), 1)
    96.9
    """
    p = np.asarray(pao2, dtype="float64")
    return 100.0 / (23400.0 / (p**3 + 150.0 * p) + 1.0)


def o2_device(pf, target_pao2, icu):
    """Oxygen therapy titrated to a target PaO2: (on_o2, o2_flow L/min, fio2).

    Nasal cannula 1-6 L/min gives FiO2 0.21 + 0.04 per litre; beyond that a face mask (10 L/min,
    FiO2 0.5) or non-rebreather (15 L/min, 0.8) on the ward, high-flow nasal oxygen (40 L/min,
    FiO2 titrated up to 1.0) in ICU.

    Examples
    --------
    >>> on, flow, fio2 = o2_device(np.array([450.0, 250.0]), 65.0, np.array([False, False]))
    >>> on.tolist(), flow.tolist(), fio2.round(2).tolist()
    ([False, True], [0.0, 2.0], [0.21, 0.29])
    """
    need = target_pao2 / np.maximum(pf, 1.0)
    on = need > 0.215
    flow_nc = np.clip(np.ceil((need - 0.21) / 0.04), 1, 6)
    fio2_nc = 0.21 + 0.04 * flow_nc
    fio2_hf = np.clip(np.ceil(need * 20.0) / 20.0, 0.45, 1.0)
    nasal = need <= 0.45
    flow = np.where(nasal, flow_nc, np.where(icu, 40.0, np.where(need <= 0.55, 10.0, 15.0)))
    fio2 = np.where(nasal, fio2_nc, np.where(icu, fio2_hf, np.where(need <= 0.55, 0.5, 0.8)))
    return on, np.where(on, flow, 0.0), np.where(on, fio2, 0.21)


def acvpu_from_gcs(gcs):
    """ACVPU code (0 A, 1 C, 2 V, 3 P, 4 U) for a GCS total."""
    g = np.asarray(gcs, dtype="float64")
    return np.select([g >= 15, g >= 13, g >= 9, g >= 6], [0, 1, 2, 3], 4).astype("float64")


def trends(t, i, P, *, wander: bool = True) -> dict[str, np.ndarray]:
    """Latent state at hours ``t`` since admission of stays ``i`` (indices into the plan ``P``).

    With ``wander=False`` the slow physiological wander (sinusoids and circadian rhythm) is left
    out: that is the noise-free trend the SOFA-based onset is defined on.
    """
    t = np.asarray(t, dtype="float64")
    g = lambda k: P[k][i]  # noqa: E731  (plan field for each row)
    if wander:
        per, ph = P["w_period"][:, i], P["w_phase"][:, i]
        w_hemo = 0.6 * np.sin(2 * np.pi * t / per[0] + ph[0]) + 0.4 * np.sin(2 * np.pi * t / per[1] + ph[1])
        w_resp = 0.6 * np.sin(2 * np.pi * t / per[0] + ph[2]) + 0.4 * np.sin(2 * np.pi * t / per[1] + ph[3])
        circ = np.sin(2 * np.pi * (g("admit_clock_h") + t - 10.0) / 24.0)  # peaks ~16:00
    else:
        w_hemo = w_resp = circ = 0.0

    infection = _ramp((t - g("infection_h")) / 6.0) * _decay(t, g("infection_recovery_h"), 36.0)
    inflammation = _ramp((t - g("lab_h")) / 18.0) * _decay(t, g("infection_recovery_h") + 24.0, 48.0)
    dys = _ramp((t - g("dysfunction_h")) / g("ramp_h")) * _decay(t, g("dysfunction_recovery_h"), 48.0)
    ts = g("surgery_h")
    after_surg = t >= ts
    with np.errstate(invalid="ignore"):
        postop = np.where(after_surg, np.exp(-np.maximum(t - ts, 0.0) / 14.0), 0.0)
        postop_crp = np.where(after_surg, _ramp((t - ts) / 36.0) * _decay(t, ts + 48.0, 48.0), 0.0)
    overload = g("hf") * (0.4 + 0.6 * np.exp(-t / 36.0))  # heart failure, improving with diuresis
    pneu = g("pneumonia")

    temp = g("temp0") + g("fever_amp") * infection + 0.6 * postop + 0.15 * circ
    drop = g("a_circ") * dys
    sbp = g("sbp0") - 1.4 * drop + 5.0 * postop + 5.0 * w_hemo
    dbp = g("dbp0") - 0.8 * drop + 3.0 * postop + 3.0 * w_hemo
    mapp = (sbp + 2.0 * dbp) / 3.0
    hr = (g("hr0") + 10.0 * np.maximum(temp - 37.0, 0.0) + 8.0 * infection + 0.8 * drop
          + 18.0 * postop + 8.0 * overload + 3.0 * circ + 5.0 * w_hemo)
    pf = (g("pf0") * (1.0 - g("a_resp") * dys) * (1.0 - 0.2 * pneu * infection)
          * (1.0 - 0.35 * overload))
    lact = g("lact0") + g("a_perf") * dys + 0.4 * postop
    resp = (g("resp0") + infection * np.where(pneu, 6.0, 3.0) + 14.0 * g("a_resp") * dys
            + 5.0 * overload + 1.0 * (lact - g("lact0")) + 2.0 * postop + 1.5 * w_resp)
    # hypercapnic patients are titrated to SpO2 88-92 %, ICU more liberally than the ward
    target = np.where(g("copd"), 57.0, np.where(g("icu"), 80.0, 65.0))
    on_o2, flow, fio2 = o2_device(pf, target, g("icu"))
    extra = g("postop_o2") & (postop > 0.3) & ~on_o2  # routine post-op oxygen
    on_o2 = on_o2 | extra
    flow = np.where(extra, 2.0, flow)
    fio2 = np.where(extra, 0.29, fio2)
    spo2 = severinghaus(pf * (1.0 + 0.04 * w_resp) * fio2)
    gcs = g("gcs0") - g("a_cns") * dys
    crp = g("crp0") + g("crp_amp") * inflammation + 110.0 * postop_crp
    wbc = g("wbc0") * (1.0 + g("wbc_amp") * inflammation) + 3.0 * postop
    plt = g("plt0") * (1.0 - g("a_coag") * dys) * (1.0 - 0.1 * dys)
    bili = g("bili0") * (1.0 + g("a_liver") * dys)
    crea = g("crea0") * (1.0 + g("a_renal") * dys)
    bun = g("bun_ratio") * crea * (1.0 + 0.3 * g("a_renal") * dys)
    hco3 = g("hco30") - 0.9 * (lact - g("lact0"))
    ph = g("ph0") - 0.025 * (lact - g("lact0"))
    alb = g("alb0") - 0.6 * inflammation - 0.3 * dys
    glucose = g("glu0") * (1.0 + 0.25 * infection + 0.2 * postop + 0.15 * dys)
    hgb = g("hgb0") - 1.2 * after_surg - np.minimum(0.006 * t, 1.0) - 0.8 * dys
    return {
        "hr": hr, "sbp": sbp, "dbp": dbp, "map": mapp, "resp": resp, "spo2": spo2, "temp": temp,
        "on_o2": on_o2.astype("float64"), "o2_flow": flow, "fio2": fio2, "gcs": gcs,
        "acvpu": acvpu_from_gcs(np.round(gcs)), "crp": crp, "wbc": wbc, "plt": plt, "bili": bili,
        "crea": crea, "bun": bun, "alb": alb, "lact": lact, "hco3": hco3, "ph": ph,
        "glucose": glucose, "hgb": hgb,
        # latent drivers (not measured)
        "pf": pf, "infection": infection, "inflammation": inflammation, "dysfunction": dys,
        "postop": postop, "overload": overload,
    }


def sofa(x: dict[str, np.ndarray]) -> np.ndarray:
    """SOFA-like total from a :func:`trends` dict (0-23).

    Respiration (P/F; every ratio counts as if ventilated), coagulation, liver, renal (creatinine)
    and CNS (rounded GCS) with the cut-points of :mod:`ehr.sofa`; the cardiovascular score uses MAP
    only (:data:`ehr.sofa.MAP_ONLY_CUTS`: < 70: 1, < 60: 2, < 50: 3) because the cohort has no
    vasopressor doses.
    """
    return (organ_score(x["pf"], "respiration") + organ_score(x["plt"], "coagulation")
            + organ_score(x["bili"], "liver") + organ_score(x["crea"], "renal")
            + organ_score(np.round(x["gcs"]), "cns") + score(x["map"], MAP_ONLY_CUTS, lower_is_worse=True))


def sofa_onset(P, stays_idx=None, *, step_h: float = 0.25):
    """Sepsis-3-like onset: the first time the SOFA-like score rises >= 2 above its value at the
    start of infection, evaluated on the noise-free trend every ``step_h`` hours.

    Returns ``(onset_h, baseline, max_rise)`` for the stays ``stays_idx`` (all stays by default);
    ``onset_h`` is ``np.inf`` where the rise never reaches 2 or the stay has no infection.
    """
    n = len(P["los_h"])
    idx = np.arange(n) if stays_idx is None else np.asarray(stays_idx)
    onset = np.full(len(idx), np.inf)
    base = np.zeros(len(idx))
    rise = np.zeros(len(idx))
    inf_h = P["infection_h"][idx]
    sel = np.isfinite(inf_h)
    if not sel.any():
        return onset, base, rise
    ii = idx[sel]
    start = np.maximum(inf_h[sel], 0.0)
    end = P["los_h"][ii]
    k = np.ceil(np.maximum(end - start, 0.0) / step_h).astype(np.int64) + 1
    rows = np.repeat(np.arange(len(ii)), k)
    first = np.repeat(np.cumsum(k) - k, k)
    t = start[rows] + (np.arange(rows.size) - first) * step_h
    t = np.minimum(t, end[rows] - 1e-6)
    s = sofa(trends(t, ii[rows], P, wander=False))
    b = s[np.cumsum(k) - k]
    r = s - b[rows]
    hit = r >= 2
    has = np.zeros(len(ii), dtype=bool)
    np.logical_or.at(has, rows, hit)
    first_hit = np.full(len(ii), -1)
    hit_rows = np.flatnonzero(hit)
    # first hit per stay: hit_rows are sorted, so the first occurrence per stay is the minimum
    uniq, pos = np.unique(rows[hit_rows], return_index=True)
    first_hit[uniq] = hit_rows[pos]
    on = np.where(has, t[np.maximum(first_hit, 0)], np.inf)
    maxr = np.full(len(ii), -np.inf)
    np.maximum.at(maxr, rows, r)
    onset[sel], base[sel], rise[sel] = on, b, maxr
    return onset, base, rise
