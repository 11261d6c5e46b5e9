"""SOFA points (Vincent et al., Intensive Care Med 1996): every cut-point in one place.

Used by the Sepsis-3 labels of real data (:func:`ehr.labels.sofa_hourly`) and by the synthetic
cohort's onset (:func:`ehr.synthetic.physiology.sofa`). Each organ score is 0-4; a missing value
(NaN) scores 0, as in mimic-code.

Cut-points are listed from 1 point to 4. Where lower values are worse (:data:`LOWER_IS_WORSE`) a
value below the k-th cut earns k points; elsewhere a value at or above the k-th cut does.

Examples
--------
>>> organ_score([450.0, 280.0, 90.0, float("nan")], "respiration").tolist()
[0, 2, 4, 0]
>>> organ_score([0.8, 1.2, 7.0], "liver").tolist()
[0, 1, 3]
"""

from __future__ import annotations

import numpy as np

__all__ = ["CUTS", "LOWER_IS_WORSE", "MAP_ONLY_CUTS", "organ_score", "score", "respiration_score", "cardiovascular_score",
           "urine_output_score"]

#: organ -> cut-points for 1, 2, 3, 4 points (the cardiovascular score's higher points need vasopressors)
CUTS: dict[str, tuple[float, ...]] = {
    "respiration": (400.0, 300.0, 200.0, 100.0),  # PaO2/FiO2, mmHg; 3 and 4 points need ventilation
    "coagulation": (150.0, 100.0, 50.0, 20.0),    # platelets, 10^3/uL
    "liver": (1.2, 2.0, 6.0, 12.0),               # bilirubin, mg/dL
    "cardiovascular": (70.0,),                    # MAP, mmHg
    "cns": (15.0, 13.0, 10.0, 6.0),               # Glasgow coma scale
    "renal": (1.2, 2.0, 3.5, 5.0),                # creatinine, mg/dL
}
LOWER_IS_WORSE = frozenset({"respiration", "coagulation", "cardiovascular", "cns"})
#: MAP-only cardiovascular proxy for data without vasopressor doses (the synthetic cohort): < 70 / 60 / 50
MAP_ONLY_CUTS: tuple[float, ...] = (70.0, 60.0, 50.0)
#: urine output over 24 h (mL): below 500 scores 3, below 200 scores 4
URINE_24H_CUTS: tuple[float, float] = (500.0, 200.0)
#: vasopressor rates (mcg/kg/min) above which the cardiovascular score is 3 or 4
DOPAMINE_3, DOPAMINE_4, CATECHOLAMINE_4 = 5.0, 15.0, 0.1


def score(x, cuts, *, lower_is_worse: bool) -> np.ndarray:
    """Points for values ``x``: one per cut-point passed (see the module docstring); NaN scores 0.

    >>> score([75.0, 65.0, 55.0, 45.0], MAP_ONLY_CUTS, lower_is_worse=True).tolist()
    [0, 1, 2, 3]
    """
    x = np.asarray(x, dtype="float64")
    points = np.zeros(x.shape, dtype=np.int64)
    for c in cuts:
        points += (x < c) if lower_is_worse else (x >= c)
    return points


def organ_score(x, organ: str) -> np.ndarray:
    """SOFA points of one organ from its value (``CUTS[organ]``)."""
    return score(x, CUTS[organ], lower_is_worse=organ in LOWER_IS_WORSE)


def respiration_score(pf_ventilated, pf_other) -> np.ndarray:
    """Respiration points: 1-2 from any P/F ratio, 3-4 only from a ratio measured on ventilation."""
    pf_any = np.fmin(np.asarray(pf_ventilated, dtype="float64"), np.asarray(pf_other, dtype="float64"))
    return np.maximum(np.minimum(organ_score(pf_any, "respiration"), 2), organ_score(pf_ventilated, "respiration"))


def cardiovascular_score(map_mmhg, dopamine, dobutamine, epinephrine, norepinephrine) -> np.ndarray:
    """Cardiovascular points from MAP and vasopressor rates (mcg/kg/min; NaN = none).

    1: MAP < 70; 2: any dopamine or dobutamine; 3: dopamine > 5 or any epinephrine or
    norepinephrine; 4: dopamine > 15 or epinephrine or norepinephrine > 0.1.
    """
    dop, dob, epi, nor = (np.nan_to_num(np.asarray(r, dtype="float64"), nan=0.0)
                          for r in (dopamine, dobutamine, epinephrine, norepinephrine))
    points = organ_score(map_mmhg, "cardiovascular")
    points = np.where((dop > 0) | (dob > 0), 2, points)
    points = np.where((dop > DOPAMINE_3) | (epi > 0) | (nor > 0), 3, points)
    return np.where((dop > DOPAMINE_4) | (epi > CATECHOLAMINE_4) | (nor > CATECHOLAMINE_4), 4, points)


def urine_output_score(urine_24h_ml, covered) -> np.ndarray:
    """Renal points from 24 h urine output, only where ``covered`` (the charting spans the window)."""
    uo = np.asarray(urine_24h_ml, dtype="float64")
    points = np.where(uo < URINE_24H_CUTS[1], 4, np.where(uo < URINE_24H_CUTS[0], 3, 0))
    return np.where(covered, points, 0)
