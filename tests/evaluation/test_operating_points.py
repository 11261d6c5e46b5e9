"""Operating points: matched sensitivity on dev, applied unchanged on test, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.operating_points import apply_thresholds, choose_thresholds, threshold_for_sensitivity
from evaluation.protocol import prepare_screens, run_protocol

T0 = pd.Timestamp("2023-02-01")


def _split(seed, n_stays=60):
    rng = np.random.default_rng(seed)
    rows, onsets = [], []
    for s in range(n_stays):
        n = int(rng.integers(5, 80))
        septic = rng.random() < 0.35
        onset = int(rng.integers(3, n + 3)) if septic else None
        onsets.append(T0 + pd.Timedelta(hours=onset) if septic else pd.NaT)
        for h in range(1, n + 1):
            near = septic and 0 < onset - h <= 24
            rows.append((s, T0 + pd.Timedelta(hours=h), float(rng.integers(0, 7) + 3 * near),
                         round(float(np.clip(rng.beta(2, 5) + 0.35 * near * rng.random(), 0, 1)), 2)))
    df = pd.DataFrame(rows, columns=["stay_id", "screen_time", "news2", "cpn"])
    pred = pd.concat([df[["stay_id", "screen_time"]].assign(model=m, risk=df[m], fold=0, split="dev")
                      for m in ("news2", "cpn")], ignore_index=True)
    screens = df[["stay_id", "screen_time"]].assign(new_data=True)
    stays = pd.DataFrame({"stay_id": np.arange(n_stays), "onset_time": onsets})
    return pred, screens, stays


def _brute(pred, screens, stays, model, target, silencing_h):
    ss = prepare_screens(pred, stays, screens, model=model)
    best = None
    for t in np.unique(ss.frame["risk"]):
        s = run_protocol(None, stays, threshold=t, silencing_h=silencing_h, prepared=ss).summary["sensitivity"]
        key = (abs(s - target), -t)
        if best is None or key < best[0]:
            best = (key, t, s)
    return best[1], best[2]


def test_news2_points_and_matched_sensitivity():
    pred, screens, stays = _split(0)
    th = choose_thresholds(pred, screens, stays)
    t = th.set_index(["model", "operating_point"])
    assert t.loc[("news2", "news2>=5"), "threshold"] == 5 and t.loc[("news2", "news2>=7"), "threshold"] == 7
    s5 = run_protocol(pred, stays, screens, threshold=5, model="news2").summary["sensitivity"]
    assert t.loc[("news2", "news2>=5"), "dev_sensitivity"] == pytest.approx(s5)
    assert t.loc[("cpn", "news2>=5"), "target_sensitivity"] == pytest.approx(s5)
    # the chosen cpn threshold really has the reported sensitivity on dev
    for op in ("news2>=5", "news2>=7", "sens85"):
        got = run_protocol(pred, stays, screens, threshold=t.loc[("cpn", op), "threshold"], model="cpn")
        assert got.summary["sensitivity"] == pytest.approx(t.loc[("cpn", op), "dev_sensitivity"])


@pytest.mark.parametrize("silencing_h,n_grid", [(0, 4), (0, 64), (48, 10_000)])
def test_search_matches_brute_force(silencing_h, n_grid):
    pred, screens, stays = _split(1, n_stays=40)
    ss = prepare_screens(pred, stays, screens, model="cpn")
    for target in (0.5, 0.7, 0.85):
        t, s = threshold_for_sensitivity(ss, target, silencing_h=silencing_h, n_grid=n_grid)
        bt, bs = _brute(pred, screens, stays, "cpn", target, silencing_h)
        # without silencing sensitivity is monotone, so coarse-to-fine finds the exact optimum
        assert abs(s - target) == pytest.approx(abs(bs - target))
        assert t == bt


def test_dev_thresholds_applied_unchanged_to_test():
    dev, test = _split(2), _split(3)
    th = choose_thresholds(*dev)
    res = apply_thresholds(th, *test)
    merged = res.summary.merge(th, on=["model", "operating_point"], suffixes=("", "_dev"))
    assert len(merged) == 6
    np.testing.assert_array_equal(merged["threshold"], merged["threshold_dev"])
    row = res.summary.query("model == 'cpn' and operating_point == 'sens85'").iloc[0]
    direct = run_protocol(test[0], test[2], test[1], threshold=row.threshold, model="cpn").summary
    assert row.sensitivity == pytest.approx(direct["sensitivity"])
    assert row.alarms_per_admission == pytest.approx(direct["alarms_per_admission"])
    assert 0 <= row.screen_specificity <= 1
    assert set(res.alarms["operating_point"]) == {"news2>=5", "news2>=7", "sens85"}


def test_errors():
    pred, screens, stays = _split(4)
    with pytest.raises(ValueError, match="news2"):
        choose_thresholds(pred[pred.model == "cpn"], screens, stays)              # reference missing
    with pytest.raises(ValueError, match="gbdt"):
        choose_thresholds(pred, screens, stays, models=["gbdt"])
    with pytest.raises(ValueError, match="outside the score range"):
        apply_thresholds({"cpn": {"x": 1.5}}, pred, screens, stays)
    with pytest.raises(ValueError, match="outside the score range"):
        choose_thresholds(pred, screens, stays, news2_cuts=(50,))
    with pytest.raises(ValueError, match="duplicate"):
        choose_thresholds(pd.concat([pred, pred.iloc[:1]]), screens, stays)
    with pytest.raises(ValueError, match="not in stays"):
        apply_thresholds({"cpn": {"x": 0.5}}, pred, screens, stays[stays.stay_id != 3])
    with pytest.raises(ValueError, match="not in predictions"):
        apply_thresholds({"gbdt": {"x": 0.5}}, pred, screens, stays)
    with pytest.raises(ValueError, match="n_grid"):
        threshold_for_sensitivity(prepare_screens(pred, stays, screens, model="cpn"), 0.8, n_grid=2)


def test_saved_thresholds_reproduce_dev_exactly(tmp_path):
    """operating_points.json keeps every digit: a threshold sits on a dev score, and 10 digits lose it."""
    import io
    import json

    from evaluation.rundir import operating_points_frame
    from evaluation.summary import write_thresholds

    pred, screens, stays = _split(11)
    # scores with 15 significant digits, all distinct, as a model's risks are
    cpn = pred["model"] == "cpn"
    rng = np.random.default_rng(0)
    pred.loc[cpn, "risk"] = np.clip(pred.loc[cpn, "risk"] + rng.uniform(0, 1e-3, cpn.sum()), 0, 1)
    th = choose_thresholds(pred, screens, stays)
    write_thresholds(th, tmp_path / "operating_points.json")
    back = operating_points_frame(json.loads((tmp_path / "operating_points.json").read_text()))
    assert back["threshold"].tolist() == th["threshold"].tolist()  # bit for bit
    again = apply_thresholds(back, pred, screens, stays).summary.set_index(["model", "operating_point"])
    for r in th.itertuples():
        assert again.loc[(r.model, r.operating_point), "sensitivity"] == r.dev_sensitivity
    # what pandas' default JSON (10 significant digits) does to the same thresholds
    rounded = pd.read_json(io.StringIO(th.to_json(orient="records")))
    lost = apply_thresholds(rounded, pred, screens, stays).summary
    assert (lost["sensitivity"].to_numpy() != th["dev_sensitivity"].to_numpy()).sum() == 2
