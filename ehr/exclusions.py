"""Cohort exclusions applied before screening; each excluded stay is counted under its first reason.

``johnson2018``: the Sepsis-3 cohort of Johnson et al., "A comparative analysis of sepsis
identification methods in an electronic database" (Crit Care Med 2018), as its code
(MIT-LCP ``sepsis3-mimic``, ``sepsis3_cohort``) applies it, in this order:

1. ``age <= 16`` (non-adults; the code's rule, the paper says adults).
2. ``not the first ICU stay`` of the patient (an earlier ``admit_time`` for the same ``subject_id``).
3. ``cardiac surgery unit (CSRU)``: the study excluded the cardiac, vascular and thoracic
   surgery services (CSURG, VSURG, TSURG); stays do not record the service, so the cardiac
   surgery recovery unit (``department == "CSRU"``) stands in for it.
4. ``no admission or discharge time`` (the study's "bad data").
5. ``suspicion of infection > 24 h before ICU admission`` and
6. ``suspicion of infection > 24 h after ICU admission`` (``stays.suspicion_time``, which the
   MIMIC reader records; skipped without it).

Not applied, because stays do not carry what it needs: the CareVue-era exclusion (the study kept
MetaVision stays only). A rule whose columns are absent is skipped and named in the result.

Examples
--------
>>> import pandas as pd
>>> T = pd.Timestamp("2150-01-01")
>>> stays = pd.DataFrame({"stay_id": [1, 2, 3, 4], "subject_id": [10, 10, 11, 12], "age": [70, 70, 15, 50],
...                       "admit_time": [T, T + pd.Timedelta(days=30), T, T], "department": "MICU"})
>>> reasons, skipped = exclusion_reasons(stays, "johnson2018")
>>> reasons.tolist()
[None, 'not the first ICU stay', 'age <= 16', None]
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

__all__ = ["EXCLUSIONS", "exclusion_reasons", "apply_exclusions"]

_DAY = pd.Timedelta(days=1)


def _not_first(st: pd.DataFrame) -> pd.Series:
    rank = st.sort_values(["subject_id", "admit_time", "stay_id"]).groupby("subject_id").cumcount()
    return rank.reindex(st.index) > 0


#: name -> [(reason, columns it needs, rule(stays) -> boolean Series)], applied in order
EXCLUSIONS: dict[str, list[tuple[str, tuple[str, ...], Callable[[pd.DataFrame], pd.Series]]]] = {
    "johnson2018": [
        ("age <= 16", ("age",), lambda st: st["age"] <= 16),
        ("not the first ICU stay", ("subject_id", "admit_time"), _not_first),
        ("cardiac surgery unit (CSRU)", ("department",), lambda st: st["department"] == "CSRU"),
        ("no admission or discharge time", ("admit_time", "discharge_time"),
         lambda st: st["admit_time"].isna() | st["discharge_time"].isna()),
        ("suspicion of infection > 24 h before ICU admission", ("suspicion_time", "admit_time"),
         lambda st: st["suspicion_time"] < st["admit_time"] - _DAY),
        ("suspicion of infection > 24 h after ICU admission", ("suspicion_time", "admit_time"),
         lambda st: st["suspicion_time"] > st["admit_time"] + _DAY),
    ],
}


def exclusion_reasons(stays: pd.DataFrame, name: str) -> tuple[pd.Series, list[str]]:
    """The first exclusion reason of each stay (``None`` when kept), and the rules skipped for lack of columns.

    Returns
    -------
    reasons : Series
        Aligned with ``stays`` rows.
    skipped : list of str
        ``"reason (needs column, ...)"`` for each rule whose columns are absent.
    """
    if name not in EXCLUSIONS:
        raise ValueError(f"unknown exclusions {name!r}; choose from {', '.join(EXCLUSIONS)}")
    reasons = pd.Series([None] * len(stays), index=stays.index, dtype=object)
    skipped = []
    for reason, cols, rule in EXCLUSIONS[name]:
        missing = [c for c in cols if c not in stays.columns]
        if missing:
            skipped.append(f"{reason} (needs {', '.join(missing)})")
            continue
        hit = rule(stays).fillna(False).astype(bool) & reasons.isna()
        reasons[hit.to_numpy()] = reason
    return reasons.where(reasons.notna(), None), skipped


def apply_exclusions(stays: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """``(kept stays, reason per stay_id of every stay (categorical, in rule order), skipped rules)``."""
    reasons, skipped = exclusion_reasons(stays, name)
    # categories in the rules' order, so that a cohort flow lists the reasons as they were applied
    by_id = pd.Series(pd.Categorical(reasons.to_numpy(), categories=[r for r, _, _ in EXCLUSIONS[name]]),
                      index=stays["stay_id"].to_numpy())
    by_id.index.name = "stay_id"
    return stays[reasons.isna().to_numpy()].reset_index(drop=True), by_id, skipped
