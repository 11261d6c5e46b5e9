"""The report's further sections on counts (evaluation/count_sections.py) against the exact single-process tables.

Tolerances, measured on this cohort (120 stays, 2 models): protocol counts, alarm burden, sensitivity
analyses, decision curves and the utility equal to rounding; Platt parameters fitted on score-bin cells
within 1e-6 of the fit on the screens (measured 7e-10); hours-band AUROC and DeLong exactly those of the
binned scores; rank metrics against the raw scores within the share of pairs binning ties
(RankCounts.auroc_tie_bound; subgroup AUPRC within 2e-4, measured 7e-5).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evaluation.bootstrap import normalise_thresholds
from evaluation.calibration import PlattScaler
from evaluation.counts import ScoreGrid, evaluate_run_counts, grid_for
from evaluation.delong import delong_test
from evaluation.explained_alarms import alarm_explanations, merge_alarm_explanations
from evaluation.operating_points import apply_thresholds
from evaluation.protocol import prepare_screens
from evaluation.stratified import context_top_share, merge_context_top_share
from evaluation.summary import TRACE_FILES, evaluate_run

sys.path.insert(0, str(Path(__file__).parent))
from test_counts import T0, _tables  # noqa: E402

N_BOOT = 40
#: RunEvaluation tables an exact evaluation writes without explanations (those come from add_explanations)
SECTIONS = ("summary", "bootstrap", "paired", "main_table", "timeliness", "bands", "burden", "decision",
            "calibration", "subgroups", "sensitivity", "hours_bands", "reliability",
            "true_alarm_lead_times")


def _with_fields(pred, screens, stays):
    stays = stays.assign(sex=np.where(stays["stay_id"] % 3, "F", "M"), age=30 + (stays["stay_id"] * 7) % 60)
    screens = screens.assign(hours_since_admit=(screens["screen_time"] - T0).dt.total_seconds() / 3600)
    return pred, screens, stays


def _utility_tables(pred, stays):
    """Every hourly test row (also after onset) with the challenge label, and every model's risk there."""
    rng = np.random.default_rng(5)
    keys = pred.loc[pred["split"] == "test", ["stay_id", "screen_time"]].drop_duplicates()
    onset = stays.set_index("stay_id")["onset_time"]
    after = [pd.DataFrame({"stay_id": s, "screen_time": [o, o + pd.Timedelta(hours=1)]})
             for s, o in onset.dropna().items() if s in set(keys["stay_id"])]
    rows = pd.concat([keys, *after], ignore_index=True).sort_values(["stay_id", "screen_time"]).reset_index(drop=True)
    h_to_onset = (rows["stay_id"].map(onset) - rows["screen_time"]).dt.total_seconds() / 3600
    rows["sepsis_label"] = (h_to_onset <= 6).astype(int)
    up = []
    for m in ("cpn", "news2"):
        p = rows[["stay_id", "screen_time"]].merge(pred[pred["model"] == m], how="left")
        missing = p["risk"].isna().to_numpy()
        p.loc[missing, "risk"] = rng.random(missing.sum()) if m == "cpn" else rng.integers(0, 12, missing.sum())
        up.append(p.assign(model=m, fold=0, split="test"))
    return pd.concat(up, ignore_index=True), rows


@pytest.fixture(scope="module")
def run():
    # about 30% of the screens without new data: the decision curve, its Platt scaler, the reliability
    # diagram and the risk traces use only the screens with new data, the rest every screen
    pred, screens, stays = _with_fields(*_tables(stale=0.3))
    assert 0.2 < 1 - screens["new_data"].mean() < 0.4
    ut = _utility_tables(pred, stays)
    exact = evaluate_run(pred, screens, stays, n_boot=N_BOOT, seed=0, utility_tables=ut)
    counted = evaluate_run_counts(pred, screens, stays, n_boot=N_BOOT, seed=0, parts=3, utility_tables=ut)
    return pred, screens, stays, exact, counted


def _num(t):
    return [c for c in t.columns if pd.api.types.is_numeric_dtype(t[c])]


def test_counts_write_every_section_the_exact_evaluation_writes(run, tmp_path):
    """Fails when a section goes missing from the count-based evaluation (it did: before #19's last
    step only the main tables were written)."""
    *_, exact, counted = run
    have = {n for n in SECTIONS if getattr(exact, n) is not None}
    assert have == set(SECTIONS)  # the fixture exercises every section
    assert {n for n in SECTIONS if getattr(counted, n) is not None} == have
    assert counted.utility is not None and exact.utility is not None
    exact.write(tmp_path / "exact")
    counted.write(tmp_path / "counted")
    files = [sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in (tmp_path / "exact", tmp_path / "counted")]
    # and the risk traces' rows, which one process reads from predictions.parquet and alarms.parquet
    assert files[0] == sorted(set(files[1]) - set(TRACE_FILES)) and set(TRACE_FILES) <= set(files[1])
    for n in SECTIONS:
        assert list(getattr(exact, n).columns) == list(getattr(counted, n).columns), n


@pytest.mark.parametrize("name", ["burden", "sensitivity", "decision"])
def test_protocol_and_decision_sections_equal_the_exact_tables(run, name):
    *_, exact, counted = run
    a, b = getattr(exact, name), getattr(counted, name)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-9)


def test_calibration_on_bin_cells_within_1e_6_of_the_fit_on_the_screens(run):
    *_, exact, counted = run
    a, b = exact.calibration, counted.calibration
    assert list(a["model"]) == list(b["model"]) == ["cpn"] and (a["n"] == b["n"]).all()
    assert np.allclose(a[["coef", "intercept"]], b[["coef", "intercept"]], rtol=0, atol=1e-6)
    # before recalibration the sums are exact; after, as close as the scaler
    assert np.allclose(a[["prevalence", "brier_before", "ece_before"]], b[["prevalence", "brier_before", "ece_before"]],
                       rtol=0, atol=1e-12)
    assert np.allclose(a[["brier_after", "ece_after"]], b[["brier_after", "ece_after"]], rtol=0, atol=1e-7)


def test_reliability_bins_from_summed_bins(run):
    """The report's reliability diagram: probabilities' bins exact, NEWS2's after Platt on dev cells within 1e-6."""
    *_, exact, counted = run
    a, b = exact.reliability, counted.reliability
    assert list(a["model"]) == list(b["model"]) and "news2 (Platt on dev)" in set(a["model"])
    assert (a["n"] == b["n"]).all()
    prob = (a["model"] == "cpn").to_numpy()
    assert np.allclose(a.loc[prob, _num(a)], b.loc[prob, _num(b)], rtol=0, atol=1e-12)
    assert np.allclose(a.loc[~prob, _num(a)], b.loc[~prob, _num(b)], rtol=0, atol=1e-6)


@pytest.mark.parametrize("silencing_h", [48.0, 2.0])
def test_true_alarm_lead_times_from_the_parts_are_the_single_process_rows(run, silencing_h):
    """Every true alarm (the report's timing figure), gathered from three parts in one process's order;
    with 2 h silencing a stay raises several true alarms at one operating point (not only its first)."""
    pred, screens, stays, exact, counted = run
    if silencing_h != 48.0:
        kw = dict(silencing_h=silencing_h, n_boot=5, seed=0, subgroups=False, sensitivity=False)
        exact = evaluate_run(pred, screens, stays, **kw)
        counted = evaluate_run_counts(pred, screens, stays, parts=3, **kw)
        assert exact.true_alarm_lead_times.duplicated(["model", "operating_point", "stay_id"]).any()
    pd.testing.assert_frame_equal(exact.true_alarm_lead_times, counted.true_alarm_lead_times)


def test_trace_rows_are_the_stays_the_single_process_report_draws(run):
    """The primary model's septic test stays, fired at its first operating point first, then by stay_id;
    their predictions at screens with new data and their alarms, whatever the parts."""
    from evaluation.recalibration import with_new_data

    pred, screens, stays, exact, counted = run
    preds, alarms = counted.trace_rows
    thr = exact.thresholds[exact.thresholds["model"] == "cpn"]["threshold"].iloc[0]
    test = with_new_data(pred[(pred["split"] == "test") & (pred["model"] == "cpn")], screens)
    septic = sorted(set(test["stay_id"]) & set(stays.loc[stays["onset_time"].notna(), "stay_id"]))
    a = exact.alarms[exact.alarms["model"] == "cpn"]
    fired = set(a.loc[a["fired"] & np.isclose(a["threshold"], thr), "stay_id"])
    want = ([i for i in septic if i in fired] + [i for i in septic if i not in fired])[:3]
    assert len(fired & set(septic)) and list(dict.fromkeys(preds["stay_id"])) == sorted(want)
    pd.testing.assert_frame_equal(preds.reset_index(drop=True),
                                  test[test["stay_id"].isin(want)].sort_values(["stay_id", "screen_time"])
                                  .reset_index(drop=True), check_like=True)
    mine = a[a["stay_id"].isin(want)]
    assert len(alarms) == len(mine) and set(alarms["stay_id"]) <= set(want)
    assert set(alarms["model"]) == {"cpn"}


def test_weighted_platt_fit_equals_the_fit_on_repeated_rows():
    rng = np.random.default_rng(2)
    x = rng.random(300)
    y = (rng.random(300) < x).astype(int)
    w = rng.integers(1, 5, 300)
    a = PlattScaler().fit(x, y, sample_weight=w)
    b = PlattScaler().fit(np.repeat(x, w), np.repeat(y, w))
    assert a.coef_ == pytest.approx(b.coef_, abs=1e-5) and a.intercept_ == pytest.approx(b.intercept_, abs=1e-5)


def _binned(pred, screens, stays, model):
    """The test screens of ``model`` (protocol frame), with their score bins and window label."""
    p, s = pred[pred["split"] == "test"], screens[screens["split"] == "test"]
    st = stays[stays["stay_id"].isin(s["stay_id"])]
    f = prepare_screens(p, st, s, model=model).frame.merge(
        s[["stay_id", "screen_time", "hours_since_admit"]], on=["stay_id", "screen_time"], how="left")
    return f.assign(bin=grid_for(model).bins(f["risk"].to_numpy()), y=(f["onset_in_h"] <= 48).to_numpy())


def test_hours_bands_are_the_auroc_of_the_binned_scores_and_within_the_tie_bound(run):
    """Each band's AUROC equals that of the scores rounded to their bins (exactly), and differs from
    the raw scores' by at most the share of tied pairs binning adds (RankCounts.auroc_tie_bound)."""
    from sklearn.metrics import roc_auc_score

    from evaluation.counts import RankCounts
    from evaluation.stratified import band_index, band_labels

    pred, screens, stays, exact, counted = run
    a, b = exact.hours_bands, counted.hours_bands
    assert (a[["model", "band", "n_screens", "n_positive"]] == b[["model", "band", "n_screens", "n_positive"]]).all().all()
    labels = band_labels()
    checked = 0
    for m in ("cpn", "news2"):
        f = _binned(pred, screens, stays, m)
        band = band_index(f["hours_since_admit"].to_numpy())
        bounds = []
        for k, label in enumerate(labels):
            sel = band == k
            y, bins = f["y"].to_numpy()[sel], f["bin"].to_numpy()[sel]
            row = (b["model"] == m) & (b["band"] == label)
            if not row.any():  # no screens in this band
                assert not sel.any()
                continue
            got, raw = float(b.loc[row, "auroc"].iloc[0]), float(a.loc[row, "auroc"].iloc[0])
            assert got == pytest.approx(roc_auc_score(y, bins), abs=1e-12), (m, label)
            bound = RankCounts.from_scores(y, bins, grid_for(m).n_bins).auroc_tie_bound()
            assert abs(got - raw) <= bound + 1e-12, (m, label)
            bounds.append(bound)
            checked += 1
        mean = (a["model"] == m) & ~a["band"].isin(labels)
        assert np.allclose(a.loc[mean, "auroc"], b.loc[mean, "auroc"], rtol=0, atol=max(bounds) + 1e-12)
    assert checked >= 6


def test_subgroup_rank_metrics_within_the_tie_bound_of_each_level(run):
    """Protocol metrics exact; each level's AUROC within the tied-pair share binning adds on its
    screens (RankCounts.auroc_tie_bound), AUPRC within 2e-4 (measured 7e-5)."""
    from evaluation.counts import RankCounts
    from evaluation.subgroup_metrics import REPORT_SUBGROUPS
    from evaluation.subgroups import define_subgroups, subgroup_jobs

    pred, screens, stays, exact, counted = run
    a, b = exact.subgroups, counted.subgroups
    key = ["subgroup", "level", "model", "operating_point", "metric"]
    assert (a[key + ["n_stays", "n_septic", "n_screens"]].fillna("") ==
            b[key + ["n_stays", "n_septic", "n_screens"]].fillna("")).all().all()
    rank = a["metric"].isin(["auroc", "auprc"]).to_numpy()
    assert np.allclose(a.loc[~rank, "estimate"], b.loc[~rank, "estimate"], rtol=0, atol=1e-12, equal_nan=True)
    auprc = (a["metric"] == "auprc").to_numpy()
    assert np.allclose(a.loc[auprc, "estimate"], b.loc[auprc, "estimate"], rtol=0, atol=2e-4, equal_nan=True)
    st = stays[stays["stay_id"].isin(screens.loc[screens["split"] == "test", "stay_id"])]
    defs = define_subgroups(st)
    jobs = subgroup_jobs({k: defs[k] for k in REPORT_SUBGROUPS if k in defs and defs[k].kind != "screen"}, st)
    frames = {m: _binned(pred, screens, stays, m) for m in ("cpn", "news2")}
    checked = 0
    for name, level, ids, _ in jobs:
        for m, f in frames.items():
            row = ((a["subgroup"] == name) & (a["level"] == level) & (a["model"] == m)
                   & (a["metric"] == "auroc")).to_numpy()
            if not row.any() or np.isnan(a.loc[row, "estimate"]).all():
                continue
            g = f[f["stay_id"].isin(ids)]
            bound = RankCounts.from_scores(g["y"].to_numpy(), g["bin"].to_numpy(), grid_for(m).n_bins).auroc_tie_bound()
            assert np.all(np.abs(a.loc[row, "estimate"].to_numpy() - b.loc[row, "estimate"].to_numpy())
                          <= bound + 1e-12), (name, level, m)
            checked += 1
    assert checked >= 6


def test_delong_on_counts_is_delong_on_the_binned_scores(run):
    pred, screens, stays, exact, counted = run
    row = counted.paired[counted.paired["metric"] == "auroc"].iloc[0]
    ref = exact.paired[exact.paired["metric"] == "auroc"].iloc[0]
    # against the raw scores: the ties binning adds
    assert abs(row["delong_difference"] - ref["delong_difference"]) < 1e-3
    assert abs(row["delong_se"] - ref["delong_se"]) < 1e-3
    # against DeLong of the scores rounded to their bins: exact
    p, s = pred[pred["split"] == "test"], screens[screens["split"] == "test"]
    st = stays[stays["stay_id"].isin(s["stay_id"])]
    f = {m: prepare_screens(p, st, s, model=m).frame for m in ("cpn", "news2")}
    both = f["cpn"].merge(f["news2"][["stay_id", "screen_time", "risk"]], on=["stay_id", "screen_time"])
    y = ((both["onset_in_h"] > 0) & (both["onset_in_h"] <= 48)).to_numpy().astype(int)
    ba, bb = grid_for("cpn").bins(both["risk_x"]), grid_for("news2").bins(both["risk_y"])
    clustered = delong_test(y, ba, bb, groups=both["stay_id"].to_numpy())
    iid = delong_test(y, ba, bb)
    assert row["delong_difference"] == pytest.approx(clustered.difference, abs=1e-12)
    assert row["delong_se"] == pytest.approx(clustered.se, abs=1e-12)
    assert row["delong_p"] == pytest.approx(clustered.p_value, abs=1e-12)
    assert row["delong_p_iid"] == pytest.approx(iid.p_value, abs=1e-12)


def test_utility_from_part_sums_equals_the_whole(run):
    *_, exact, counted = run
    assert exact.utility == counted.utility


def test_sections_do_not_depend_on_the_partitioning(run):
    pred, screens, stays, _, counted = run
    one = evaluate_run_counts(pred, screens, stays, n_boot=N_BOOT, seed=0, parts=1)
    for n in SECTIONS:
        a, b = getattr(one, n), getattr(counted, n)
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-12, obj=n)


def test_alarm_examples_and_context_share_merged_from_parts_equal_the_whole():
    pred, screens, stays = _tables(n_stays=200, seed=3)
    p, s = pred[pred["split"] == "test"], screens[screens["split"] == "test"]
    st = stays[stays["stay_id"].isin(s["stay_id"])]
    alarms = apply_thresholds({"cpn": {"a": 0.3}, "news2": {"a": 6.0}}, p, s, st, check_range=False).alarms
    alarms = alarms.assign(split="test")
    fired = alarms[alarms["fired"]]
    rng = np.random.default_rng(0)
    ex = []
    for r in fired.drop_duplicates(["stay_id", "screen_time", "model"]).itertuples():
        c = rng.normal(size=3)
        ex.append(pd.DataFrame({"stay_id": r.stay_id, "screen_time": r.screen_time, "model": r.model,
                                "feature": ["hr", "hours_band", "total"], "contribution": [c[0], c[1], c[0] + c[1]],
                                "baseline": np.nan, "value": [90.0, np.nan, np.nan], "state": ["high", "late", ""],
                                "age_h": 0.0, "weight": 1.0}))
    ex = pd.concat(ex, ignore_index=True)
    whole = alarm_explanations(ex, alarms, p, st)
    share = context_top_share(ex, alarms)
    cut = st["stay_id"].to_numpy() % 3
    parts_ex, parts_share = [], []
    for k in range(3):
        ids = st["stay_id"].to_numpy()[cut == k]
        sel = [t[t["stay_id"].isin(ids)] for t in (ex, alarms, p, st)]
        parts_ex.append(alarm_explanations(*sel))
        parts_share.append(context_top_share(sel[0], sel[1]))
    assert len(whole) and whole["stay_id"].nunique() > 3
    pd.testing.assert_frame_equal(whole, merge_alarm_explanations(parts_ex))
    pd.testing.assert_frame_equal(share, merge_context_top_share(parts_share), check_dtype=False)


def test_burden_and_operating_point_thresholds_are_exact_where_bins_hold_several_scores():
    """Scores crowded several into one logit bin: the sweep's thresholds still equal the exact order
    statistics, and the operating points the exact search's (its candidates, every distinct dev score,
    are merged over the parts while they number at most EXACT_CANDIDATES_MAX)."""
    pred, screens, stays = _tables(n_stays=150, seed=7)
    cpn = pred["model"] == "cpn"
    pred.loc[cpn, "risk"] = (pred.loc[cpn, "risk"] * 200).round() / 200  # 201 values over 2^16 bins: ties galore
    g = ScoreGrid()
    assert len(np.unique(g.bins(pred.loc[cpn, "risk"]))) == pred.loc[cpn, "risk"].nunique()
    pred.loc[cpn, "risk"] = np.clip(pred.loc[cpn, "risk"] + np.random.default_rng(0).normal(0, 1e-5, cpn.sum()), 0, 1)
    exact = evaluate_run(pred, screens, stays, n_boot=5, subgroups=False, sensitivity=False)
    counted = evaluate_run_counts(pred, screens, stays, n_boot=5, parts=2, subgroups=False, sensitivity=False)
    pd.testing.assert_frame_equal(exact.burden, counted.burden, check_exact=False, rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(exact.thresholds, counted.thresholds)
    # over bin maxima (what a run falls back to beyond EXACT_CANDIDATES_MAX) the search lands elsewhere here
    import evaluation.count_sections as cs

    old, cs.EXACT_CANDIDATES_MAX = cs.EXACT_CANDIDATES_MAX, 10
    try:
        binned = evaluate_run_counts(pred, screens, stays, n_boot=5, parts=2, subgroups=False, sensitivity=False)
    finally:
        cs.EXACT_CANDIDATES_MAX = old
    assert not binned.thresholds["threshold"].equals(exact.thresholds["threshold"])
    assert set(binned.threshold_candidates.values()) == {"the highest dev score of each score bin"}


def test_alarm_examples_of_parts_at_the_plans_first_point_in_any_order_equal_the_whole():
    """Every part explains each model's first operating point of the plan (a part whose alarms list
    another point first, or none at it, once explained that one), with the plan's per_kind, and the
    merged table does not depend on the order of the parts."""
    from evaluation.count_sections import SectionPlan, merge_sections, section_counts, tables_from_sections

    pred, screens, stays = _tables(n_stays=240, seed=3)
    p, s = pred[pred["split"] == "test"], screens[screens["split"] == "test"]
    st = stays[stays["stay_id"].isin(s["stay_id"])]
    thr = {"cpn": {"high": 0.5, "low": 0.2}, "news2": {"high": 9.0, "low": 5.0}}
    alarms = apply_thresholds(thr, p, s, st, check_range=False).alarms.assign(split="test")
    fired = alarms[alarms["fired"]].drop_duplicates(["stay_id", "screen_time", "model"])
    c = np.random.default_rng(0).normal(size=(len(fired), 2))
    ex = pd.concat([pd.DataFrame({"stay_id": r.stay_id, "screen_time": r.screen_time, "model": r.model,
                                  "feature": ["hr", "total"], "contribution": [c[i, 0], c[i, 0] + c[i, 1]],
                                  "baseline": np.nan, "value": [90.0, np.nan], "state": ["high", ""],
                                  "age_h": 0.0, "weight": 1.0}) for i, r in enumerate(fired.itertuples())],
                   ignore_index=True)
    per_kind = 5
    whole = alarm_explanations(ex, alarms, p, st, per_kind=per_kind)
    assert set(whole["operating_point"]) == {"high"} and list(dict.fromkeys(whole["model"])) == ["cpn", "news2"]
    assert (whole.drop_duplicates(["model", "stay_id"]).groupby(["model", "true_alarm"]).size() == per_kind).all()
    plan = SectionPlan(normalise_thresholds(thr), ["cpn", "news2"], sensitivity=False, explain_per_kind=per_kind)
    cut = st["stay_id"].to_numpy() % 4
    parts = []
    for k in range(4):
        ids = st["stay_id"].to_numpy()[cut == k]
        pk, sk, stk, ak, ek = (t[t["stay_id"].isin(ids)] for t in (p, s, st, alarms, ex))
        if k == 0:  # this part's alarms list the other point first; and it explains no cpn alarm
            ak = ak.iloc[::-1]
            ek = ek[ek["model"] != "cpn"]
            assert (ak.drop_duplicates("model")["operating_point"] == "low").all()
        parts.append(section_counts(pk, sk, stk, plan, explanations=ek, alarms=ak))
    ex_whole = alarm_explanations(ex[~(ex["stay_id"].isin(st["stay_id"][cut == 0]) & (ex["model"] == "cpn"))],
                                  alarms, p, st, per_kind=per_kind)
    for order in (parts, parts[::-1]):
        got = tables_from_sections(plan, merge_sections(order), None)["explained"]
        pd.testing.assert_frame_equal(ex_whole, got)


def test_burden_thresholds_exact_on_heavily_tied_scores_from_distinct_values_and_counts():
    """Scores on 11 values: one bin holds hundreds of test screens. Each part sends back the distinct
    scores in the ranks' bins with their counts (not every score), and the sweep stays exact."""
    import evaluation.count_sections as cs

    pred, screens, stays = _tables(n_stays=150, seed=11)
    cpn = pred["model"] == "cpn"
    pred.loc[cpn, "risk"] = (pred.loc[cpn, "risk"] * 10).round() / 10
    kw = dict(n_boot=5, subgroups=False, sensitivity=False)
    exact = evaluate_run(pred, screens, stays, **kw)
    counted = evaluate_run_counts(pred, screens, stays, parts=3, **kw)
    pd.testing.assert_frame_equal(exact.burden, counted.burden, check_exact=False, rtol=0, atol=1e-12)
    p, s = pred[pred["split"] == "test"], screens[screens["split"] == "test"]
    risk = prepare_screens(p, stays, s, model="cpn").frame["risk"].to_numpy()
    g = grid_for("cpn")
    got = cs._values_in(p, s, stays, wanted={"cpn": np.unique(g.bins(risk))}, reference="news2")["cpn"]
    assert len(risk) > 500 and len(got) == len(np.unique(risk)) <= 11 and got["n"].sum() == len(risk)
    halves = [cs._values_in(p[p["stay_id"] % 2 == k], s[s["stay_id"] % 2 == k], stays,
                            wanted={"cpn": np.unique(g.bins(risk))}, reference="news2") for k in (0, 1)]
    pd.testing.assert_frame_equal(cs._merge_values(halves)["cpn"], got)
