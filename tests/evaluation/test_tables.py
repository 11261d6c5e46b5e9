"""Evaluation checks its contract tables with ehr.schema: predictions, alarms, explanations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ehr.schema import SchemaError
from evaluation.displays import BayesFactorDisplay
from evaluation.operating_points import apply_thresholds
from evaluation.protocol import run_protocol, validate_predictions
from evaluation.tables import join_labels, validate_alarms

T = pd.Timestamp("2022-01-01")
H = pd.Timedelta(hours=1)


def _tables():
    stays = pd.DataFrame({"stay_id": [1, 2], "onset_time": [T + 20 * H, pd.NaT]})
    hours = np.arange(1, 11)
    pred = pd.DataFrame({"stay_id": np.repeat([1, 2], 10), "screen_time": np.tile(T + hours * H, 2),
                         "model": "news2", "risk": np.r_[hours % 8, hours % 5].astype(float),
                         "fold": 0, "split": "test"})
    return pred, stays


def test_predictions_follow_the_contract():
    pred, stays = _tables()
    assert validate_predictions(pred, stays, models=["news2"]) is pred
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['fold'\]"):
        validate_predictions(pred.drop(columns="fold"))
    with pytest.raises(SchemaError, match="'screen_time' has dtype"):
        validate_predictions(pred.assign(screen_time=1.0))
    with pytest.raises(SchemaError, match="'risk' is not finite at row 3"):
        run_protocol(pred.assign(risk=np.where(np.arange(20) == 3, np.inf, pred["risk"])), stays, threshold=5)
    with pytest.raises(SchemaError, match="duplicate key"):
        validate_predictions(pd.concat([pred, pred.head(1)], ignore_index=True))
    with pytest.raises(ValueError, match=r"model\(s\) \['cpn'\] not in predictions"):
        validate_predictions(pred, models=["cpn"])
    with pytest.raises(ValueError, match="stay_id 2 at row 10 is not in stays"):
        validate_predictions(pred, stays.head(1))


def test_alarms_are_produced_valid_and_checked_per_operating_point():
    pred, stays = _tables()
    # two operating points with one threshold list the same alarms twice: valid, one key per point
    res = apply_thresholds({"news2": {"news2>=5": 5.0, "sens85": 5.0}}, pred, None, stays)
    alarms = res.alarms
    assert alarms.duplicated(["stay_id", "screen_time", "model", "threshold"]).any()
    assert validate_alarms(alarms) is alarms
    with pytest.raises(SchemaError, match="duplicate key"):
        validate_alarms(alarms.drop(columns="operating_point"))
    broken = alarms.assign(fired=alarms["fired"].astype(object).where(alarms.index != 2, None))
    with pytest.raises(SchemaError, match=r"alarms \(operating point 'news2>=5'\): column 'fired' is null"):
        validate_alarms(broken)


def test_explanations_and_labels_are_checked():
    ex = pd.DataFrame({"stay_id": 1, "screen_time": T, "model": "cpn", "feature": ["crp", "total"],
                       "value": [1.0, None], "state": None, "age_h": 1.0, "weight": 1.0,
                       "contribution": [0.5, 0.5], "baseline": [0.4, None]})
    BayesFactorDisplay.from_explanations(ex, stay_id=1, screen_time=T)
    with pytest.raises(SchemaError, match=r"explanations: missing column\(s\) \['baseline'\]"):
        BayesFactorDisplay.from_explanations(ex.drop(columns="baseline"), stay_id=1, screen_time=T)
    with pytest.raises(SchemaError, match="'contribution' is null at row 1"):
        BayesFactorDisplay.from_explanations(ex.assign(contribution=[0.5, None]), stay_id=1, screen_time=T)
    pred, _ = _tables()
    with pytest.raises(SchemaError, match=r"screens: missing column\(s\) \['label'\] to label predictions"):
        join_labels(pred, pred[["stay_id", "screen_time"]])
