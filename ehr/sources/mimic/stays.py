"""MIMIC ICU stays: the ``stays`` table, giving hospital-level rows to a stay, outcome fields.

``age`` is age at ICU admission; MIMIC shifts the date of birth of patients older than 89 by
about 300 years (MIMIC-IV caps ``anchor_age`` at 91): these ages are set to :data:`AGE_OVER_89`
= 91.4, the median age of that group reported by the MIMIC-III documentation (each counted as
repaired). Hospital-level rows (labs, prescriptions, cultures, and ICU rows without a stay id)
belong to the subject's ICU stay whose window ``[intime - LOOKBACK_H, outtime]`` holds their
time (the later stay when windows overlap); rows outside every window are counted and left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehr.schema import columns
from ehr.sources.mimic.tables import LAYOUT, MimicTables
from ehr.sources.report import IngestReport

__all__ = ["AGE_OVER_89", "LOOKBACK_H", "ONSET_SETTING_DAYS", "read_stays", "assign_stays", "finish_stays"]

AGE_OVER_89 = 91.4
LOOKBACK_H = 24.0  # hospital-level rows up to 24 h before ICU admission belong to the stay
ONSET_SETTING_DAYS = 4.0


def read_stays(tb: MimicTables) -> pd.DataFrame:
    """ICU stays with admission, demographics and death; ``hadm_id`` kept for joins."""
    v, report, sid_col = tb.version, tb.report, tb.stay_col
    icu = tb.read("icustays", ["subject_id", "hadm_id", sid_col, "first_careunit", "intime", "outtime"],
                  ["subject_id", "hadm_id", sid_col, "intime", "outtime"])
    adm = tb.read("admissions", ["hadm_id", "admittime", "hospital_expire_flag"], ["hadm_id", "admittime"])
    pat_cols = ["subject_id", "gender", "dob"] if v == "iii" else ["subject_id", "gender", "anchor_age", "anchor_year"]
    pat = tb.read("patients", pat_cols, pat_cols[:1])
    st = pd.DataFrame({
        "subject_id": tb.ints(icu, "subject_id"), "hadm_id": tb.ints(icu, "hadm_id"),
        "stay_id": tb.ints(icu, sid_col), "department": icu.get("first_careunit"),
        "admit_time": tb.times(icu, "intime"), "discharge_time": tb.times(icu, "outtime"),
    })
    excluded = {}
    bad = st[["subject_id", "stay_id", "admit_time", "discharge_time"]].isna().any(axis=1)
    backwards = ~bad & (st["discharge_time"] < st["admit_time"])
    dup = ~bad & ~backwards & st["stay_id"].duplicated()
    for mask, field, problem in ((bad, None, "ICU stay without id, intime or outtime"),
                                 (backwards, "outtime", "ICU stay with outtime before intime"),
                                 (dup, sid_col, "duplicate stay id")):
        if mask.any():
            ex = icu.loc[mask[mask].index[0]]
            report.add(icu.attrs["file"], int(ex["_row"]), field, problem, "rejected_row", n=int(mask.sum()))
            excluded[problem] = int(mask.sum())
    st = st.loc[~(bad | backwards | dup)]
    st = st.astype({"subject_id": "int64", "stay_id": "int64"})
    adm = adm.assign(hadm_id=pd.to_numeric(adm["hadm_id"], errors="coerce"),
                     admittime=tb.times(adm, "admittime", required=False))
    adm = adm.dropna(subset=["hadm_id"]).drop_duplicates("hadm_id").set_index("hadm_id")
    st["hospital_admit_time"] = st["hadm_id"].map(adm["admittime"]).astype("datetime64[ns]")
    if "hospital_expire_flag" in adm:
        flag = pd.to_numeric(st["hadm_id"].map(adm["hospital_expire_flag"]), errors="coerce")
        st["death"] = flag.map({1.0: True, 0.0: False}).astype("object")
    else:
        st["death"] = None
    pat = pat.assign(subject_id=pd.to_numeric(pat["subject_id"], errors="coerce")).dropna(subset=["subject_id"])
    pat = pat.drop_duplicates("subject_id").set_index("subject_id")
    sex = st["subject_id"].map(pat["gender"])
    odd = sex.notna() & ~sex.isin(["F", "M"])
    if odd.any():
        report.add(tb.files[LAYOUT[v]["patients"]].name, None, "gender", "sex not F or M", "rejected_value",
                   f"e.g. {sex[odd].iloc[0]!r}", n=int(odd.sum()))
    st["sex"] = sex.where(sex.isin(["F", "M"]))
    st["age"] = _age(st, pat, tb)
    st["source"] = {"iii": "mimic3", "iv": "mimic4"}[v]
    tb.stay_flow = {"read": len(icu), "excluded": excluded}
    return st.reset_index(drop=True)


def _age(st: pd.DataFrame, pat: pd.DataFrame, tb: MimicTables) -> pd.Series:
    """Age in years at ICU admission; de-identified ages over 89 set to :data:`AGE_OVER_89`."""
    if tb.version == "iii":
        dob = st["subject_id"].map(tb.times(pat.reset_index(), "dob", required=False).set_axis(pat.index))
        age = (st["admit_time"].dt.year - dob.dt.year) + (st["admit_time"].dt.dayofyear - dob.dt.dayofyear) / 365.25
    else:
        anchor_age = pd.to_numeric(st["subject_id"].map(pat["anchor_age"]), errors="coerce")
        anchor_year = pd.to_numeric(st["subject_id"].map(pat["anchor_year"]), errors="coerce")
        age = anchor_age + (st["admit_time"].dt.year - anchor_year)
        age = age.where(anchor_age < 91, 999.0)  # MIMIC-IV marks > 89 as anchor_age 91
    old = age > 89
    if old.any():
        tb.report.add(tb.files[LAYOUT[tb.version]["patients"]].name, None,
                      "dob" if tb.version == "iii" else "anchor_age",
                      "age over 89 (shifted by de-identification)", "repaired", f"set to {AGE_OVER_89}",
                      n=int(old.sum()))
    negative = age < 0
    if negative.any():
        tb.report.add(tb.files[LAYOUT[tb.version]["patients"]].name, None, "dob" if tb.version == "iii" else "anchor_age",
                      "age below 0 at ICU admission", "rejected_value", n=int(negative.sum()))
    return age.where(~old, AGE_OVER_89).where(~negative).astype("float64")


def assign_stays(df: pd.DataFrame, stays: pd.DataFrame, report: IngestReport, file: str,
                 stay_col: str | None) -> pd.DataFrame:
    """Give each row (subject_id, time[, stay col]) a stay_id; count rows left out."""
    # rows without a time were counted when their timestamp was parsed
    no_subject = df["subject_id"].isna() & df["time"].notna()
    if no_subject.any():
        report.add(file, int(df.loc[no_subject, "_row"].iloc[0]), "subject_id", "missing or unparseable subject id",
                   "rejected_row", n=int(no_subject.sum()))
    df = df.loc[df["time"].notna() & df["subject_id"].notna()].copy()
    df["subject_id"] = df["subject_id"].astype("int64")
    known = set(stays["stay_id"].tolist())
    sid = pd.to_numeric(df[stay_col], errors="coerce") if stay_col and stay_col in df else pd.Series(np.nan, index=df.index)
    unknown = sid.notna() & ~sid.isin(known)
    if unknown.any():
        ex = df.loc[unknown].iloc[0]
        report.add(file, int(ex["_row"]), stay_col, "stay id not in ICU stays", "rejected_row",
                   f"e.g. {ex[stay_col]}", n=int(unknown.sum()))
    df["stay_id"] = sid.where(~unknown)
    todo = df["stay_id"].isna() & ~unknown
    if todo.any():
        win = stays[["subject_id", "stay_id", "admit_time", "discharge_time"]].copy()
        win["start"] = win["admit_time"] - pd.Timedelta(hours=LOOKBACK_H)
        win = win.sort_values("start")
        q = df.loc[todo, ["subject_id", "time"]].reset_index().sort_values("time")
        m = pd.merge_asof(q, win[["subject_id", "start", "stay_id", "discharge_time"]], left_on="time",
                          right_on="start", by="subject_id", direction="backward")
        m.loc[m["time"] > m["discharge_time"], "stay_id"] = np.nan
        df.loc[m["index"].to_numpy(), "stay_id"] = m["stay_id"].to_numpy()
        outside = todo & df["stay_id"].isna()
        if outside.any():
            report.add(file, int(df.loc[outside, "_row"].iloc[0]), "time", "row outside every ICU stay window",
                       "skipped", n=int(outside.sum()))
    df = df.loc[df["stay_id"].notna()]
    return df.assign(stay_id=df["stay_id"].astype("int64"))


def finish_stays(stays: pd.DataFrame, events: pd.DataFrame, lab: pd.DataFrame, ns: str) -> pd.DataFrame:
    """Contract ``stays`` (+ ``suspicion_time``): labels from ``lab``, antibiotics, BSI, onset setting.

    ``bsi`` = a positive blood culture during the stay window; ``onset_setting`` = ``"community"``
    when onset is < :data:`ONSET_SETTING_DAYS` after hospital admission, else ``"hospital"``.
    """
    st = stays.copy()
    st["sepsis"] = st["stay_id"].map(lab["sepsis"]).fillna(False).astype(bool)
    st["onset_time"] = st["stay_id"].map(lab["onset_time"]).astype("datetime64[ns]")
    st["suspicion_time"] = st["stay_id"].map(lab["suspicion_time"]).astype("datetime64[ns]")
    code = events["code"]
    st["antibiotic_time"] = st["stay_id"].map(events.loc[code == ns + "/abx"].groupby("stay_id")["time"].min())
    st["antibiotic_time"] = st["antibiotic_time"].astype("datetime64[ns]")
    cul = events.loc[code == ns + "/culture"]
    blood = cul.loc[cul["text_value"].fillna("").str.upper().str.contains("BLOOD CULTURE")]
    pos = blood.groupby("stay_id")["numeric_value"].max() > 0
    st["bsi"] = st["stay_id"].map(pos).where(st["stay_id"].isin(cul["stay_id"])).astype("object")
    st.loc[st["bsi"].isna() & st["stay_id"].isin(cul["stay_id"]), "bsi"] = False
    st["bsi"] = st["bsi"].where(st["bsi"].notna(), None)  # null is None in object columns, as parquet gives it back
    days = (st["onset_time"] - st["hospital_admit_time"]) / pd.Timedelta("1D")
    st["onset_setting"] = np.where(st["onset_time"].isna() | days.isna(), None,
                                   np.where(days < ONSET_SETTING_DAYS, "community", "hospital"))
    for c in ("sepsis_label_time", "surgery_time"):
        st[c] = pd.Series(pd.NaT, index=st.index, dtype="datetime64[ns]")
    for c in ("pneumonia", "hypercapnic"):
        st[c] = None
    cols = columns("stays") + ["suspicion_time"]
    return st[cols].sort_values("stay_id").reset_index(drop=True)
