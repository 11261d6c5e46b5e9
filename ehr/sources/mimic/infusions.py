"""Interval signals from MIMIC: vasopressor infusion rates and ventilation procedures.

MetaVision rows are intervals ``[starttime, endtime)``: they become an event at the start and
every hour until the end, and a 0 at the end. CareVue infusions are charted rates (a "D/C'd" or
"Stopped" row without a rate gives 0). Rates are converted to mcg/kg/min (vasopressin: U/min);
mcg/min rates are divided by the patient weight (MetaVision ``patientweight``, else the stay's
first charted weight, else :data:`DEFAULT_WEIGHT_KG`, counted as repaired).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.sources.mimic.items import load_item_map, make_events
from ehr.sources.mimic.stays import assign_stays
from ehr.sources.mimic.tables import LAYOUT, MimicTables

__all__ = ["DEFAULT_WEIGHT_KG", "vasopressor_events", "ventilation_events", "expand_hourly"]

DEFAULT_WEIGHT_KG = 80.0
_RATE_UNITS = {  # rate unit (lower-case) -> (factor, divide by weight, canonical unit)
    "mcg/kg/min": (1.0, False, "ug/kg/min"), "mcgkgmin": (1.0, False, "ug/kg/min"),
    "mg/kg/min": (1000.0, False, "ug/kg/min"), "mcg/kg/hour": (1 / 60, False, "ug/kg/min"),
    "mcg/min": (1.0, True, "ug/kg/min"), "mcgmin": (1.0, True, "ug/kg/min"),
    "mg/min": (1000.0, True, "ug/kg/min"), "mg/hour": (1000 / 60, True, "ug/kg/min"),
    "units/min": (1.0, False, "U/min"), "umin": (1.0, False, "U/min"), "u/min": (1.0, False, "U/min"),
    "units/hour": (1 / 60, False, "U/min"), "uhr": (1 / 60, False, "U/min"), "u/hr": (1 / 60, False, "U/min"),
}
_AGENTS = ("norepinephrine", "epinephrine", "dopamine", "dobutamine", "vasopressin", "phenylephrine")


def expand_hourly(df: pd.DataFrame, value: np.ndarray, end: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with an interval [time, end) -> one row at the start and every hour until the end."""
    dur_h = ((end - df["time"]) / pd.Timedelta("1h")).fillna(0).clip(lower=0, upper=24 * 60)
    n = (np.ceil(dur_h.to_numpy()).astype("int64")).clip(min=1)
    rep = df.loc[df.index.repeat(n)].copy()
    offs = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    rep["time"] = rep["time"].to_numpy() + offs * np.timedelta64(1, "h")
    return rep, np.repeat(value, n)


def _interval_events(rows: pd.DataFrame, code, unit, value: np.ndarray, end: pd.Series, *,
                     drop_end_at_an_hour: bool) -> list[pd.DataFrame]:
    """``value`` at the start of each interval and every hour until its end, 0 at the end.

    With ``drop_end_at_an_hour`` an end that falls on one of the hourly events of the same stay
    and code is left out (the hourly event already says what the rate was).
    """
    tagged = rows.assign(_code=code, _unit=unit)
    rep, vals = expand_hourly(tagged, value, end)
    ev = make_events(rep, code=rep["_code"].to_numpy(), numeric=vals, text=rep["itemid"].astype(str).to_numpy(),
                     unit=rep["_unit"].to_numpy())
    ends = tagged.assign(time=end).dropna(subset=["time"])
    z = make_events(ends, code=ends["_code"].to_numpy(), numeric=0.0, unit=ends["_unit"].to_numpy())
    if drop_end_at_an_hour:
        key = ["stay_id", "code", "time"]
        z = z.loc[~pd.MultiIndex.from_frame(z[key]).isin(pd.MultiIndex.from_frame(ev[key]))]
    return [ev, z]


def _drop_rewritten(df: pd.DataFrame, tb: MimicTables, what: str) -> pd.DataFrame:
    """MetaVision rows marked "Rewritten" were superseded by a corrected row (mimic-code excludes them)."""
    if "statusdescription" not in df:
        return df
    rw = df["statusdescription"].fillna("").str.lower().eq("rewritten")
    if rw.any():
        tb.report.add(df.attrs["file"], int(df.loc[rw, "_row"].iloc[0]), "statusdescription",
                      f"rewritten {what} row", "skipped", "superseded by a corrected row (mimic-code excludes them)",
                      n=int(rw.sum()))
    return df.loc[~rw]


def vasopressor_events(tb: MimicTables, stays: pd.DataFrame, weights: pd.Series, ns: str) -> list[pd.DataFrame]:
    """Events ``<NS>/<agent>`` with the infusion rate from MetaVision and CareVue input events."""
    sig = load_item_map()["signals"]
    agent_of = {i: a for a in _AGENTS for i in sig[a]["inputevents"]}
    report = tb.report
    out = []
    for table, interval in (("inputevents_mv", True), ("inputevents_cv", False)):
        if table not in LAYOUT[tb.version]:
            continue
        tcol = "starttime" if interval else "charttime"
        want = ["subject_id", tb.stay_col, tcol, "endtime", "itemid", "rate", "rateuom", "patientweight",
                "statusdescription", "stopped"]
        df = tb.read(table, want, ["subject_id", tcol, "itemid"], itemids=set(agent_of), time_col=tcol,
                     numeric=("subject_id",))
        if df is None or df.empty:
            continue
        file = df.attrs["file"]
        df = _drop_rewritten(df, tb, "infusion")
        df = assign_stays(df, stays, report, file, tb.stay_col)
        rate = pd.to_numeric(df.get("rate"), errors="coerce") if "rate" in df else pd.Series(np.nan, index=df.index)
        uom = df.get("rateuom", pd.Series("", index=df.index)).fillna("").str.lower().str.strip()
        stopped = df.get("stopped", pd.Series("", index=df.index)).fillna("").str.lower()
        zero = rate.isna() & stopped.isin(["d/c'd", "stopped"]) if not interval else pd.Series(False, index=df.index)
        has = rate.notna()
        rule = uom.map(lambda u: _RATE_UNITS.get(u))
        unknown = has & rule.isna()
        if unknown.any():
            ex = df.loc[unknown].iloc[0]
            report.add(file, int(ex["_row"]), "rateuom", "unknown vasopressor rate unit", "rejected_row",
                       f"{ex.get('rateuom')!r}", n=int(unknown.sum()))
        ok = has & ~unknown
        factor = rule[ok].map(lambda r: r[0]).astype(float)
        per_kg = rule[ok].map(lambda r: r[1]).astype(bool)
        w = pd.to_numeric(df.loc[ok].get("patientweight"), errors="coerce") if "patientweight" in df else \
            pd.Series(np.nan, index=df.index[ok])
        w = w.where(w > 0).fillna(df.loc[ok, "stay_id"].map(weights))
        need_w = per_kg & w.isna()
        if need_w.any():
            report.add(file, int(df.loc[need_w[need_w].index[0], "_row"]), "rate", "no weight for a mcg/min rate",
                       "repaired", f"assumed {DEFAULT_WEIGHT_KG} kg", n=int(need_w.sum()))
        w = w.fillna(DEFAULT_WEIGHT_KG)
        val = rate[ok] * factor / np.where(per_kg, w, 1.0)
        unit = rule[ok].map(lambda r: r[2])
        g = df.loc[ok]
        code = ns + "/" + g["itemid"].map(agent_of)
        if interval:
            out += _interval_events(g, code, unit, val.to_numpy(), tb.optional_times(g, "endtime"),
                                    drop_end_at_an_hour=True)
        else:
            out.append(make_events(g, code=code.to_numpy(), numeric=val.to_numpy(),
                                   text=g["itemid"].astype(str).to_numpy(), unit=unit.to_numpy()))
            if zero.any():
                gz = df.loc[zero]
                out.append(make_events(gz, code=(ns + "/" + gz["itemid"].map(agent_of)).to_numpy(), numeric=0.0))
    return out


def ventilation_events(tb: MimicTables, stays: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    """``<NS>/vent``: 1 hourly during a MetaVision ventilation procedure, 0 at its end."""
    sig = load_item_map()["signals"]
    pe = tb.read("procedureevents", ["subject_id", tb.stay_col, "starttime", "endtime", "itemid", "statusdescription"],
                 ["subject_id", "starttime", "itemid"], itemids=set(sig["vent"]["procedureevents"]))
    if pe is None or not len(pe):
        return []
    file = pe.attrs["file"]
    pe = _drop_rewritten(pe, tb, "procedure")
    pe = pe.assign(subject_id=pd.to_numeric(pe["subject_id"], errors="coerce"), time=tb.times(pe, "starttime"))
    pe = assign_stays(pe, stays, tb.report, file, tb.stay_col)
    return _interval_events(pe, ns + "/vent", "1", np.ones(len(pe)), tb.optional_times(pe, "endtime"),
                            drop_end_at_an_hour=False)
