"""Sepsis-3 onset labels: suspected infection, hourly SOFA, onset (two named definitions).

Works on any ``events`` table (ehr/schema.py). Concepts come from the ``concept`` column
(``pao2``, ``fio2``, ``plt``, ``bili``, ``map``, ``gcs``, ``crea``); the signals without a
concept are recognised by the last segment of ``code`` in any namespace:

=====================  ===========================================================  ==========
code ``<NS>/<signal>``  meaning                                                      value
=====================  ===========================================================  ==========
``abx``                 an antibiotic started (text_value: drug)                      duration h
``culture``             a culture sampled (text_value: specimen)                      1 positive
``vent``                mechanically ventilated (1) / ventilation ended (0)          0 / 1
``urine_output``        urine output volume                                          mL
``norepinephrine``,     vasopressor infusion rate at this time (0 = stopped)          mcg/kg/min
``epinephrine``,
``dopamine``,
``dobutamine``
=====================  ===========================================================  ==========

Definitions (``definition_params(name)`` gives the exact parameters; record them in run.json):

``"sepsis3"`` -- MIT-LCP mimic-code (``concepts/sepsis/suspicion_of_infection.sql``,
``sepsis3.sql``, ``score/sofa.sql``):

* suspected infection: an antibiotic with a culture sampled in the 72 h before it (suspicion
  time = culture time), or else a culture sampled in the 24 h after it (suspicion time =
  antibiotic time); i.e. the suspicion time is the earlier of the pair. The earliest culture in
  the window is used. A culture at exactly the antibiotic time counts as culture-first (as in
  mimic-code's MIMIC-III query; its MIMIC-IV query uses strict inequalities and would drop the
  pair, which date-only MIMIC-III prescriptions make common). Cultures and antibiotics are
  paired within a stay (the reader gives a stay the rows from 24 h before ICU admission to
  discharge), where mimic-code pairs them within the subject/admission.
* SOFA: hourly grid of bins ``(t - 1 h, t]`` from ``admit - 24 h`` to discharge; each component
  is scored from the worst value in the bin and the score is the maximum over the last 24 bins
  (= the score of the 24 h worst value); renal urine output is the 24 h volume, scored only when
  the urine charting covers >= 22 h of the window (mimic-code ``uo_tm_24hr``). Missing components
  score 0. Vasopressor rates and the ventilation flag are carried forward for at most
  ``infusion_carry_h`` / ``vent_carry_h``; P/F uses the last FiO2 within 4 h before the PaO2
  (no default FiO2), classed as ventilated when the vent flag is on in that hour.
* onset: the first suspicion (in time) with a SOFA >= 2 hour (baseline assumed 0) within
  [-48 h, +24 h] of it; the onset time is the first such SOFA hour (mimic-code ``sofa_time``).

``"physionet2019"`` -- the PhysioNet/CinC 2019 challenge variant: the same suspicion rule, but
the antibiotic must be continued >= 72 h (approximated from prescription durations: courses of
antibiotic events chained when they overlap or follow within 24 h); SOFA deterioration = SOFA(t)
minus the minimum over the previous 24 h >= 2, within [-24 h, +12 h] of suspicion; onset =
min(suspicion time, SOFA deterioration time).

Examples
--------
>>> definition_params("sepsis3")["sofa_window_h"]
[-48.0, 24.0]
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ehr.sofa import cardiovascular_score, organ_score, respiration_score, urine_output_score

__all__ = ["DEFINITIONS", "VASOPRESSORS", "definition_params", "suspected_infection", "sofa_hourly",
           "sofa_onset", "label_stays"]

log = logging.getLogger(__name__)

VASOPRESSORS = ("norepinephrine", "epinephrine", "dopamine", "dobutamine")

_COMMON = {
    "culture_before_abx_h": 72.0,  # culture first: antibiotic within 72 h after it
    "culture_after_abx_h": 24.0,  # antibiotic first: culture within 24 h after it
    "grid_start_h": -24.0,  # SOFA grid starts 24 h before unit admission (mimic-code icustay_hourly)
    "sofa_window_rolling_h": 24,
    "fio2_lookback_h": 4.0,
    "vent_carry_h": 8.0,  # mimic-code joins ventilator settings charted < 8 h apart into one episode
    "infusion_carry_h": 4.0,  # CareVue charts running rates about hourly; 4 h bridges missed charting
    "urine_min_coverage_h": 22.0,
}

DEFINITIONS: dict[str, dict] = {
    "sepsis3": _COMMON | {
        "name": "sepsis3",
        "reference": "MIT-LCP mimic-code sepsis3.sql (Johnson et al.; Seymour et al. JAMA 2016)",
        "sofa_window_h": [-48.0, 24.0],
        "sofa_threshold": 2,
        "sofa_baseline": "zero",
        "min_antibiotic_h": 0.0,
        "onset": "sofa_time",
    },
    "physionet2019": _COMMON | {
        "name": "physionet2019",
        "reference": "Reyna et al., Crit Care Med 2020 (PhysioNet/CinC Challenge 2019)",
        "sofa_window_h": [-24.0, 12.0],
        "sofa_threshold": 2,
        "sofa_baseline": "min_previous_24h",
        "min_antibiotic_h": 72.0,
        "antibiotic_gap_h": 24.0,
        "onset": "min(suspicion_time, sofa_time)",
    },
}


def definition_params(name: str) -> dict:
    """The parameters of a named onset definition (a copy, JSON-serialisable)."""
    if name not in DEFINITIONS:
        raise ValueError(f"unknown sepsis definition '{name}'; expected one of {sorted(DEFINITIONS)}")
    return {k: (list(v) if isinstance(v, list) else v) for k, v in DEFINITIONS[name].items()}


def _signal(events: pd.DataFrame) -> pd.Series:
    return events["code"].astype(str).str.rsplit("/", n=1).str[-1]


def _hours(x) -> pd.Timedelta:
    return pd.to_timedelta(x, unit="h")


def _antibiotic_courses_ok(abx: pd.DataFrame, min_h: float, gap_h: float) -> np.ndarray:
    """For each antibiotic row: is it continued >= ``min_h`` (courses chained across gaps <= gap_h)."""
    if min_h <= 0:
        return np.ones(len(abx), dtype=bool)
    a = abx.sort_values(["stay_id", "time"]).copy()
    dur = a["numeric_value"].fillna(0.0).clip(lower=0.0)
    a["end"] = a["time"] + _hours(dur)
    # a new course starts when this start is later than every earlier end (+ gap)
    a["cum_end"] = a.groupby("stay_id")["end"].cummax()
    prev_end = a.groupby("stay_id")["cum_end"].shift()
    new = prev_end.isna() | (a["time"] > prev_end + _hours(gap_h))
    a["course"] = new.cumsum()
    course_end = a.groupby("course")["end"].transform("max")
    ok = (course_end - a["time"]) >= _hours(min_h)
    return ok.reindex(abx.index).to_numpy(dtype=bool)


def suspected_infection(events: pd.DataFrame, definition: str = "sepsis3") -> pd.DataFrame:
    """All antibiotic/culture pairs that make a suspicion of infection, per stay.

    Returns columns ``stay_id, suspicion_time, antibiotic_time, culture_time`` (one row per
    qualifying antibiotic event, sorted by stay and suspicion time).
    """
    p = definition_params(definition)
    sig = _signal(events)
    cols = ["stay_id", "time", "numeric_value"]
    abx = events.loc[sig == "abx", cols].dropna(subset=["time"])
    cul = events.loc[sig == "culture", ["stay_id", "time"]].dropna(subset=["time"])
    out_cols = ["stay_id", "suspicion_time", "antibiotic_time", "culture_time"]
    if abx.empty or cul.empty:
        return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "stay_id" else "datetime64[ns]")
                             for c in out_cols})
    abx = abx.loc[_antibiotic_courses_ok(abx, p["min_antibiotic_h"], p.get("antibiotic_gap_h", 24.0))]
    abx = abx.drop_duplicates(["stay_id", "time"]).sort_values("time")
    cul = cul.drop_duplicates().sort_values("time").rename(columns={"time": "culture_time"})
    abx = abx.assign(stay_id=abx["stay_id"].astype("int64"), lo=abx["time"] - _hours(p["culture_before_abx_h"]))
    cul = cul.assign(stay_id=cul["stay_id"].astype("int64"))
    # culture first: the earliest culture in [abx - 72 h, abx]
    before = pd.merge_asof(abx.sort_values("lo"), cul, left_on="lo", right_on="culture_time",
                           by="stay_id", direction="forward")
    before = before.loc[before["culture_time"] <= before["time"]]
    # antibiotic first: the earliest culture in (abx, abx + 24 h]
    after = pd.merge_asof(abx, cul, left_on="time", right_on="culture_time", by="stay_id",
                          direction="forward", allow_exact_matches=False,
                          tolerance=_hours(p["culture_after_abx_h"]))
    after = after.dropna(subset=["culture_time"])
    after = after.loc[~after.set_index(["stay_id", "time"]).index.isin(
        before.set_index(["stay_id", "time"]).index)]
    before = before.assign(suspicion_time=before["culture_time"])
    after = after.assign(suspicion_time=after["time"])
    res = pd.concat([before, after], ignore_index=True).rename(columns={"time": "antibiotic_time"})
    res = res[out_cols].sort_values(["stay_id", "suspicion_time", "antibiotic_time"]).reset_index(drop=True)
    return res


# ---------------------------------------------------------------- SOFA

def sofa_hourly(events: pd.DataFrame, stays: pd.DataFrame, definition: str = "sepsis3") -> pd.DataFrame:
    """Hourly SOFA per stay (scores of the worst values in the last 24 h).

    Parameters
    ----------
    events, stays : contract tables (stays needs ``stay_id, admit_time, discharge_time``).
    definition : name of the definition whose grid/carry parameters to use.

    Returns
    -------
    DataFrame with ``stay_id, time`` (bin end), the six component scores ``respiration,
    coagulation, liver, cardiovascular, cns, renal`` and ``sofa`` (their sum).

    Examples
    --------
    >>> import pandas as pd
    >>> t0 = pd.Timestamp("2100-01-01")
    >>> stays = pd.DataFrame({"stay_id": [1], "admit_time": [t0], "discharge_time": [t0 + pd.Timedelta("3h")]})
    >>> ev = pd.DataFrame({"stay_id": [1], "time": [t0 + pd.Timedelta("90min")], "code": ["X/plt"],
    ...                    "numeric_value": [40.0], "concept": ["plt"]})
    >>> int(sofa_hourly(ev, stays).set_index("time")["sofa"][t0 + pd.Timedelta("2h")])
    3
    """
    p = definition_params(definition)
    st = stays[["stay_id", "admit_time", "discharge_time"]].dropna()
    start = st["admit_time"].dt.floor("h") + _hours(p["grid_start_h"])
    n = ((st["discharge_time"].dt.ceil("h") - start) / pd.Timedelta("1h")).astype("int64") + 1
    n = np.maximum(n.to_numpy(), 1)
    sid = np.repeat(st["stay_id"].to_numpy(dtype="int64"), n)
    offs = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    grid_t = np.repeat(start.to_numpy(), n) + offs * np.timedelta64(1, "h")
    grid = pd.DataFrame({"stay_id": sid, "time": grid_t})
    out_cols = ["stay_id", "time", "respiration", "coagulation", "liver", "cardiovascular", "cns", "renal", "sofa"]
    if grid.empty:
        return pd.DataFrame({c: pd.Series([], dtype="float64") for c in out_cols})

    ev = events.loc[events["stay_id"].isin(st["stay_id"])]
    ev = ev.assign(time=pd.to_datetime(ev["time"]))
    ev = ev.loc[ev["time"].notna()]
    sig = _signal(ev)
    concept = ev["concept"] if "concept" in ev.columns else pd.Series(None, index=ev.index)
    ev = ev.assign(sig=sig.to_numpy(), concept=concept.to_numpy(), bin=ev["time"].dt.ceil("h"))
    keys = ["stay_id", "bin"]

    def per_bin(mask, how, value="numeric_value"):
        sub = ev.loc[mask & ev[value].notna(), keys + [value]]
        return sub.groupby(keys)[value].agg(how)

    parts: dict[str, pd.Series] = {
        "plt": per_bin(ev["concept"] == "plt", "min"),
        "bili": per_bin(ev["concept"] == "bili", "max"),
        "map": per_bin(ev["concept"] == "map", "min"),
        "gcs": per_bin(ev["concept"] == "gcs", "min"),
        "crea": per_bin(ev["concept"] == "crea", "max"),
        "vent": per_bin(ev["sig"] == "vent", "last"),
    }
    for agent in VASOPRESSORS:
        parts[agent] = per_bin(ev["sig"] == agent, "max")
    # urine: volume and the charting time it covers (time since the previous urine event)
    uo = ev.loc[(ev["sig"] == "urine_output") & ev["numeric_value"].notna(), ["stay_id", "time", "bin", "numeric_value"]]
    uo = uo.sort_values(["stay_id", "time"])
    admit = st.set_index("stay_id")["admit_time"]
    prev = uo.groupby("stay_id")["time"].shift()
    prev = prev.fillna(uo["stay_id"].map(admit))
    uo = uo.assign(tm=((uo["time"] - prev) / pd.Timedelta("1h")).clip(lower=0))
    parts["uo"] = uo.groupby(keys)["numeric_value"].sum()
    parts["uo_tm"] = uo.groupby(keys)["tm"].sum()

    g = grid.set_index(["stay_id", "time"])
    g.index = g.index.set_names(keys)
    for k, s in parts.items():
        g[k] = s.reindex(g.index) if len(s) else np.nan
    g = g.reset_index()
    by = g.groupby("stay_id", sort=False)
    g["vent"] = by["vent"].ffill(limit=int(p["vent_carry_h"])).fillna(0.0)
    for agent in VASOPRESSORS:
        g[agent] = by[agent].ffill(limit=int(p["infusion_carry_h"]))

    # P/F ratio: each PaO2 with the last FiO2 within the look-back, ventilation state of its hour
    pao2 = ev.loc[(ev["concept"] == "pao2") & ev["numeric_value"].notna(), ["stay_id", "time", "bin", "numeric_value"]]
    fio2 = ev.loc[(ev["concept"] == "fio2") & ev["numeric_value"].notna(), ["stay_id", "time", "numeric_value"]]
    g["pf_vent"] = np.nan
    g["pf_novent"] = np.nan
    if len(pao2) and len(fio2):
        pf = pd.merge_asof(pao2.sort_values("time"), fio2.sort_values("time").rename(columns={"numeric_value": "fio2"}),
                           on="time", by="stay_id", direction="backward", tolerance=_hours(p["fio2_lookback_h"]))
        pf = pf.dropna(subset=["fio2"])
        pf = pf.assign(pf=pf["numeric_value"] / pf["fio2"])
        vent_state = g.set_index(keys)["vent"]
        pf["vented"] = vent_state.reindex(pd.MultiIndex.from_frame(pf[keys])).fillna(0.0).to_numpy() > 0
        gi = g.set_index(keys)
        for name, m in (("pf_vent", pf["vented"]), ("pf_novent", ~pf["vented"])):
            s = pf.loc[m].groupby(keys)["pf"].min()
            gi[name] = s.reindex(gi.index)
        g = gi.reset_index()

    resp = respiration_score(g["pf_vent"].to_numpy(dtype=float), g["pf_novent"].to_numpy(dtype=float))
    coag = organ_score(g["plt"], "coagulation")
    liver = organ_score(g["bili"], "liver")
    cv = cardiovascular_score(g["map"], *(g[a] for a in ("dopamine", "dobutamine", "epinephrine", "norepinephrine")))
    cns = organ_score(g["gcs"], "cns")
    crea = organ_score(g["crea"], "renal")
    comp = pd.DataFrame({"stay_id": g["stay_id"], "respiration": resp, "coagulation": coag, "liver": liver,
                         "cardiovascular": cv, "cns": cns, "renal_crea": crea,
                         "uo": g["uo"].fillna(0.0), "uo_tm": g["uo_tm"].fillna(0.0)})
    w = int(p["sofa_window_rolling_h"])
    roll = comp.groupby("stay_id", sort=False).rolling(w, min_periods=1)
    out = pd.DataFrame({"stay_id": g["stay_id"].to_numpy(), "time": g["bin"].to_numpy()})
    for c in ("respiration", "coagulation", "liver", "cardiovascular", "cns", "renal_crea"):
        out[c] = roll[c].max().to_numpy()
    uo24 = roll["uo"].sum().to_numpy()
    tm24 = roll["uo_tm"].sum().to_numpy()
    uo_score = urine_output_score(uo24, tm24 >= p["urine_min_coverage_h"])
    out["renal"] = np.maximum(out.pop("renal_crea").to_numpy(), uo_score)
    comps = ["respiration", "coagulation", "liver", "cardiovascular", "cns", "renal"]
    out[comps] = out[comps].astype("int64")
    out["sofa"] = out[comps].sum(axis=1).astype("int64")
    return out[out_cols]


def sofa_onset(suspicion: pd.DataFrame, sofa: pd.DataFrame, definition: str = "sepsis3") -> pd.DataFrame:
    """Onset per stay from suspicion candidates and hourly SOFA.

    Returns ``stay_id, suspicion_time, sofa_time, onset_time, sofa_at_onset`` for the stays with an
    onset (one row each).
    """
    p = definition_params(definition)
    s = sofa.sort_values(["stay_id", "time"]).copy()
    if p["sofa_baseline"] == "zero":
        s["delta"] = s["sofa"]
    else:  # previous 24 h minimum (not including this hour)
        s["prev"] = s.groupby("stay_id", sort=False)["sofa"].shift()
        prev_min = (s.groupby("stay_id", sort=False)["prev"]
                    .rolling(int(p["sofa_window_rolling_h"]), min_periods=1).min()
                    .reset_index(level=0, drop=True).reindex(s.index))
        s["delta"] = s["sofa"] - prev_min.fillna(s["sofa"])
    hits = s.loc[s["delta"] >= p["sofa_threshold"], ["stay_id", "time", "sofa"]]
    out_cols = ["stay_id", "suspicion_time", "sofa_time", "onset_time", "sofa_at_onset"]
    if hits.empty or suspicion.empty:
        return pd.DataFrame({"stay_id": pd.Series([], dtype="int64"),
                             **{c: pd.Series([], dtype="datetime64[ns]") for c in out_cols[1:4]},
                             "sofa_at_onset": pd.Series([], dtype="int64")})
    sus = suspicion[["stay_id", "suspicion_time"]].drop_duplicates()
    m = sus.merge(hits, on="stay_id")
    lo, hi = p["sofa_window_h"]
    m = m.loc[(m["time"] >= m["suspicion_time"] + _hours(lo)) & (m["time"] <= m["suspicion_time"] + _hours(hi))]
    m = m.sort_values(["stay_id", "suspicion_time", "time"]).drop_duplicates("stay_id")
    m = m.rename(columns={"time": "sofa_time", "sofa": "sofa_at_onset"})
    if p["onset"] == "sofa_time":
        m["onset_time"] = m["sofa_time"]
    else:
        m["onset_time"] = m[["suspicion_time", "sofa_time"]].min(axis=1)
    return m[out_cols].reset_index(drop=True)


def label_stays(events: pd.DataFrame, stays: pd.DataFrame, definition: str = "sepsis3") -> pd.DataFrame:
    """Per-stay labels: ``stay_id, suspicion_time, sofa_time, onset_time, sofa_at_onset, sepsis``.

    ``suspicion_time`` is the first suspicion of infection of the stay (or of the onset, when
    there is one); stays without suspicion have nulls and ``sepsis=False``.
    """
    sus = suspected_infection(events, definition)
    sofa = sofa_hourly(events, stays, definition)
    onset = sofa_onset(sus, sofa, definition)
    first_sus = sus.groupby("stay_id")["suspicion_time"].min()
    out = pd.DataFrame({"stay_id": stays["stay_id"].to_numpy(dtype="int64")})
    out["suspicion_time"] = out["stay_id"].map(first_sus)
    o = onset.set_index("stay_id")
    for c in ("sofa_time", "onset_time"):
        out[c] = out["stay_id"].map(o[c]).astype("datetime64[ns]")
    has = out["stay_id"].isin(o.index)
    out.loc[has, "suspicion_time"] = out.loc[has, "stay_id"].map(o["suspicion_time"])
    out["suspicion_time"] = out["suspicion_time"].astype("datetime64[ns]")
    out["sofa_at_onset"] = out["stay_id"].map(o["sofa_at_onset"]).astype("float64")
    out["sepsis"] = has.to_numpy()
    return out
