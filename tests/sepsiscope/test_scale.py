"""The pipeline per partition (sepsiscope/scale): serial and Dask paths, atomic outputs, lost workers."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cpn import SepsisCPN
from ehr.cohort import Cohort
from ehr.partitions import PartitionedTable, PartitionError, bucket_of, part_name, write_part
from ehr.screens import build_screens
from ehr.synthetic import write_synthetic
from sepsiscope.cli import app, dask_argv
from sepsiscope.scale import DaskMapper, SerialMapper, build_screens_partitioned, dask_client, predict_partitioned

pytest.importorskip("distributed")
runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    write_synthetic(d / "cohort", 120, seed=5, partitions=6, chunk_stays=50)
    whole = Cohort.load(d / "cohort")
    screens = build_screens(whole.events, whole.stays, whole.cxr)
    model = SepsisCPN("full", half_lives="prior", max_iter=3).fit(screens)
    model.save(d / "cpn")
    return d, screens, model


@pytest.fixture(scope="module")
def threads_client():
    with dask_client(n_workers=2, processes=False) as client:
        yield client


def _sorted(df):
    return df.sort_values(["stay_id", "screen_time"], kind="stable").reset_index(drop=True)


def test_screens_per_partition_equal_the_whole_table(cohort, threads_client, tmp_path):
    d, screens, _ = cohort
    for name, mapper in (("serial", SerialMapper()), ("dask", DaskMapper(threads_client))):
        out, report = build_screens_partitioned(d / "cohort", tmp_path / name, mapper)
        assert report["screens"] == len(screens) and report["stays"] == 120
        got = _sorted(PartitionedTable(out, "screens").read_all())
        pd.testing.assert_frame_equal(got[screens.columns], screens, obj=name)
        assert list(got.columns) == list(screens.columns)


def test_scores_and_explanations_per_partition(cohort, threads_client, tmp_path):
    d, screens, model = cohort
    sdir, _ = build_screens_partitioned(d / "cohort", tmp_path / "screens", SerialMapper())
    counts = predict_partitioned(d / "cpn", sdir, tmp_path / "pred", DaskMapper(threads_client),
                                 explain_out=tmp_path / "ex", explain_threshold=0.3)
    pred = _sorted(PartitionedTable(tmp_path / "pred", "predictions").read_all())
    np.testing.assert_allclose(pred["risk"], model.predict_proba(screens)[:, 1], rtol=0, atol=1e-12)
    at = np.flatnonzero(model.predict_proba(screens)[:, 1] >= 0.3)
    risky = screens.iloc[at]
    assert counts == {"screens": len(screens), "explained": len(risky)}
    ex = PartitionedTable(tmp_path / "ex", "explanations").read_all()
    want = model.explain(screens, rows=at)  # with their stays' earlier screens (the CPN's trend leaves)
    assert len(ex) == len(want) and set(ex.stay_id) == set(risky.stay_id)
    np.testing.assert_allclose(_sorted(ex)["contribution"], _sorted(want)["contribution"], rtol=0, atol=1e-12)


def test_a_bad_part_fails_the_run_and_writes_no_table(cohort, threads_client, tmp_path):
    d, _, _ = cohort
    sdir, _ = build_screens_partitioned(d / "cohort", tmp_path / "screens", SerialMapper())
    part0 = PartitionedTable(sdir, "screens").read(0)
    write_part(PartitionedTable(sdir, "screens").read(1), sdir, "screens", 0)  # a stay in two buckets
    with pytest.raises(PartitionError, match="belongs to part 1 of 6, not 0"):
        predict_partitioned(d / "cpn", sdir, tmp_path / "pred", DaskMapper(threads_client, retries=0))
    assert not (tmp_path / "pred").exists()
    write_part(part0, sdir, "screens", 0)
    (sdir / part_name(4)).unlink()
    with pytest.raises(PartitionError, match="part-00004.parquet"):
        predict_partitioned(d / "cpn", sdir, tmp_path / "pred")
    assert not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_a_worker_killed_while_scoring_is_replaced_and_the_table_is_complete(cohort, tmp_path):
    d, screens, model = cohort
    sdir, _ = build_screens_partitioned(d / "cohort", tmp_path / "screens", SerialMapper())
    with dask_client(n_workers=2, memory_limit="2GB") as client:
        pids = client.run(os.getpid)
        result, errors = {}, []

        def score():
            try:
                result["counts"] = predict_partitioned(d / "cpn", sdir, tmp_path / "pred", DaskMapper(client))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        worker = threading.Thread(target=score)
        worker.start()
        deadline = time.time() + 60
        while time.time() < deadline and not any(client.processing().values()):
            time.sleep(0.01)
        victim, pid = next(iter(pids.items()))
        os.kill(pid, signal.SIGKILL)  # mid-scoring: the nanny restarts it, the scheduler reruns its tasks
        worker.join(120)
        assert not errors and result["counts"]["screens"] == len(screens)
        assert client.run(os.getpid).get(victim) != pid
    pred = _sorted(PartitionedTable(tmp_path / "pred", "predictions").read_all())
    np.testing.assert_allclose(pred["risk"], model.predict_proba(screens)[:, 1], rtol=0, atol=1e-12)


def test_cli_partitioned_simulate_screens_and_predict(cohort, tmp_path):
    d, _, _ = cohort
    r = runner.invoke(app, ["simulate", "--n-stays", "30", "--partitions", "3", "--chunk-stays", "20",
                            "--out", str(tmp_path / "c"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert Cohort.load(tmp_path / "c").meta["chunk_stays"] == 20
    r = runner.invoke(app, ["screens", str(tmp_path / "c"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert PartitionedTable(tmp_path / "c" / "screens").partitions == 3
    r = runner.invoke(app, ["predict", str(d / "cpn"), "--screens", str(tmp_path / "c" / "screens"),
                            "--out", str(tmp_path / "p"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert PartitionedTable(tmp_path / "p", "predictions").rows == PartitionedTable(tmp_path / "c" / "screens").rows
    # screens again (a new horizon): the partitioned table of the first build is replaced
    r = runner.invoke(app, ["screens", str(tmp_path / "c"), "--horizon-h", "24", "--no-progress"])
    assert r.exit_code == 0, r.output
    # a partitioned --out replaces a folder as a whole: never the cohort that holds the screens
    r = runner.invoke(app, ["predict", str(d / "cpn"), "--screens", str(tmp_path / "c" / "screens"),
                            "--out", str(tmp_path / "c"), "--no-progress"])
    assert r.exit_code == 2 and "holds the input --screens" in " ".join(r.output.split()), r.output
    assert PartitionedTable(tmp_path / "c" / "screens").partitions == 3
    runner.invoke(app, ["simulate", "--n-stays", "20", "--out", str(tmp_path / "u"), "--no-progress"])
    r = runner.invoke(app, ["screens", str(tmp_path / "u"), "--dask", "local", "--no-progress"])
    assert r.exit_code == 2 and "--partitions N" in r.output
    r = runner.invoke(app, ["run", "--cohort", str(tmp_path / "c"), "--dask-evaluation", "all", "--out",
                            str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 2 and "--dask-evaluation" in r.output and not (tmp_path / "r").exists()


def _total(xs):
    return sum(xs)


def test_reduce_sums_on_the_workers_in_a_tree(threads_client):
    mapper = DaskMapper(threads_client)
    assert mapper.workers == 2
    assert mapper.reduce(_total, mapper.map(lambda k, add: k + add, range(11), add=1)) == 66
    assert SerialMapper().reduce(_total, SerialMapper().map(lambda k: k, range(11))) == 55
    assert mapper.reduce(_total, []) == 0


def test_bare_dask_option_means_a_local_cluster():
    assert dask_argv(["run", "--dask"]) == ["run", "--dask", "local"]
    assert dask_argv(["screens", "--dask", "10.0.0.5:8786", "c"]) == ["screens", "--dask", "10.0.0.5:8786", "c"]
    assert dask_argv(["screens", "c", "--dask", "--no-progress"]) == ["screens", "c", "--dask", "local",
                                                                       "--no-progress"]


def test_buckets_route_fired_alarms_to_their_part(cohort):
    _, screens, _ = cohort
    b = bucket_of(screens["stay_id"], 6)
    assert (pd.Series(b).groupby(screens["stay_id"].to_numpy()).nunique() == 1).all()


def test_gbdt_cut_where_early_stopping_stops(cohort):
    """The Dask GBDT trains every round, then is cut where fit()'s early stopping would have stopped."""
    from ehr.splits import holdout_groups
    from gbdt import GBDTClassifier
    from sepsiscope.scale.gbdt_fit import _early_stopping_iteration

    _, screens, _ = cohort
    stopped = GBDTClassifier(n_estimators=80, early_stopping_rounds=5, random_state=2).fit(screens)
    assert stopped.n_estimators_ < 80
    tr, va = holdout_groups(screens["stay_id"].to_numpy(), 0.1, y=screens["label"].to_numpy(), random_state=2)
    full = GBDTClassifier(n_estimators=80, early_stopping_rounds=None, random_state=2).fit(screens.iloc[tr])
    X_va = full.features_.transform(screens.iloc[va])[full.feature_names_].to_numpy(dtype="float32")
    assert _early_stopping_iteration(stopped, full.booster_, X_va, screens["label"].to_numpy()[va]) == \
        stopped.n_estimators_


_RUN = dict(n_stays=200, seed=4, n_boot=20, cpn_half_lives="prior", cpn_max_iter=3, models=("cpn",), partitions=3)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The single-process main job of :data:`_RUN`, the reference of the partitioned runs."""
    from sepsiscope.pipeline import RunConfig, run_main_job

    out = tmp_path_factory.mktemp("single") / "run"
    run_main_job(out, RunConfig(**_RUN))
    return out


@pytest.mark.slow
def test_partitioned_main_job_reports_what_the_single_process_job_reports(single_run, tmp_path):
    """Up to one generator chunk the partitioned source is generate_cohort's cohort: same run, same tables
    (``dask_evaluation="gather"``: the predictions gathered and evaluated as on one table)."""
    from sepsiscope.pipeline import RunConfig
    from sepsiscope.scale.pipeline import run_partitioned

    (tmp_path / "parts" / "models" / "stack").mkdir(parents=True)  # an older run's model: replaced, not kept
    (tmp_path / "parts" / "models" / "stack" / "model.json").write_text("{}")
    run_partitioned(tmp_path / "parts", RunConfig(**_RUN, dask_evaluation="gather"), SerialMapper())
    assert not (tmp_path / "parts" / "models" / "stack").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]
    a, b = (pd.read_csv(d / "main_table.csv") for d in (single_run, tmp_path / "parts"))
    pd.testing.assert_frame_equal(a, b)
    pa, pb = (pd.read_parquet(d / "predictions.parquet") for d in (single_run, tmp_path / "parts"))
    assert (pa[["stay_id", "screen_time", "model", "split"]] == pb[["stay_id", "screen_time", "model", "split"]]).all().all()
    np.testing.assert_allclose(pa["risk"], pb["risk"], rtol=0, atol=1e-12)
    assert (tmp_path / "parts" / "test_screens.parquet").exists()
    assert json.loads((tmp_path / "parts" / "run.json").read_text())["complete"] is True
    # the cohort flow, from per-part counts (it was not written by the partitioned run before)
    pd.testing.assert_frame_equal(pd.read_csv(single_run / "cohort_flow.csv"),
                                  pd.read_csv(tmp_path / "parts" / "cohort_flow.csv"))


@pytest.mark.slow
def test_dask_run_evaluated_on_counts_matches_the_count_evaluation_of_the_single_process_tables(
        single_run, threads_client, tmp_path):
    """The default partitioned run (counts per part, on Dask) against :func:`evaluation.counts.evaluate_run_counts`
    of the single-process run's gathered tables: every table equal (1e-12), and no process held every
    prediction (the run directory has no one-file predictions, only parts)."""
    from evaluation.counts import evaluate_run_counts
    from sepsiscope.pipeline import RunConfig
    from sepsiscope.scale.pipeline import run_partitioned

    out = tmp_path / "parts"
    run_partitioned(out, RunConfig(**_RUN), DaskMapper(threads_client))
    pred, screens, stays = (pd.read_parquet(single_run / f) for f in ("predictions.parquet", "screens.parquet",
                                                                        "stays.parquet"))
    ref = evaluate_run_counts(pred, screens, stays, n_boot=_RUN["n_boot"], seed=_RUN["seed"], subgroup_n_boot=200)
    files = {"main_table": "main_table.csv", "bootstrap": "tables/bootstrap_metrics.csv", "paired":
             "paired_differences.csv", "bands": "curve_bands.csv", "timeliness": "timeliness.csv",
             "summary": "tables/protocol_summary.csv", "burden": "alarm_burden.csv",
             "decision": "decision_curve.csv", "calibration": "calibration.csv", "subgroups": "subgroups.csv",
             "sensitivity": "sensitivity.csv", "hours_bands": "tables/auroc_by_hours_band.csv",
             "reliability": "tables/reliability.csv", "true_alarm_lead_times": "tables/true_alarm_lead_times.csv"}
    for name, f in files.items():
        getattr(ref, name).to_csv(tmp_path / "ref.csv", index=False)
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref.csv"), pd.read_csv(out / f), check_exact=False,
                                      rtol=0, atol=1e-12, obj=f)
    # against the single-process (exact, multinomial bootstrap) run: same thresholds, same point estimates
    single, counted = (pd.read_csv(d / "main_table.csv") for d in (single_run, out))
    assert (single["threshold"] == counted["threshold"]).all()
    for col in ("auroc", "auprc", "sensitivity", "alarms_per_admission"):
        assert (single[col].str.split(" ").str[0] == counted[col].str.split(" ").str[0]).all(), col
    pd.testing.assert_frame_equal(pd.read_csv(single_run / "cohort_flow.csv"), pd.read_csv(out / "cohort_flow.csv"))
    # every file of the single-process run directory but the one-file tables whose parts are under parts/
    from sepsiscope.scale.evaluate import NOT_AVAILABLE

    def written(d):
        return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.relative_to(d).parts[0]
                not in ("parts", "models")}

    from evaluation.summary import TRACE_FILES

    assert written(single_run) - set(NOT_AVAILABLE) == written(out) - set(TRACE_FILES), \
        written(single_run) ^ written(out)
    # the alarm examples are the very alarms of the single-process run (top-k per part, merged)
    pd.testing.assert_frame_equal(pd.read_csv(single_run / "alarm_explanations.csv"),
                                  pd.read_csv(out / "alarm_explanations.csv"), check_exact=False, rtol=0, atol=1e-12)
    pd.testing.assert_frame_equal(pd.read_csv(single_run / "tables" / "context_top_share.csv"),
                                  pd.read_csv(out / "tables" / "context_top_share.csv"))
    assert not (out / "predictions.parquet").exists()
    assert PartitionedTable(out / "parts" / "predictions").partitions == _RUN["partitions"]
    assert PartitionedTable(out / "parts" / "alarms").partitions == _RUN["partitions"]
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is True and run["evaluation"]["method"] == "counts"
    assert (out / "report.html").exists()
    # every report section renders, every figure with it (ROC/PR from curve_bands.csv, the reliability
    # diagram from tables/reliability.csv, the risk traces from trace_predictions/trace_alarms.parquet)
    html, single_html = ((d / "report.html").read_text() for d in (out, single_run))
    assert html.count("not available:") == single_html.count("not available:")
    assert "Risk traces" in html and "Drawn from curve_bands.csv" in html
    # the risk traces: the stays the single-process report draws, drawn from the same rows
    traces = [re.findall(r'alt="\d+_risk_trace_stay_(\d+)" src="data:image/png;base64,([^"]+)"', h)
              for h in (html, single_html)]
    assert len(traces[1]) == 3 and traces[0] == traces[1]
    assert len(pd.read_parquet(out / "trace_predictions.parquet")["stay_id"].unique()) == 3
    # the true-alarm timing figure: every true alarm's lead time gathered from the parts, the very
    # rows (and so the very figure) of the single-process run's alarms.parquet
    pd.testing.assert_frame_equal(pd.read_csv(single_run / "tables" / "true_alarm_lead_times.csv"),
                                  pd.read_csv(out / "tables" / "true_alarm_lead_times.csv"))
    timing = [re.findall(r'alt="\d+_true_alarm_timing_test" src="data:image/png;base64,([^"]+)"', h)
              for h in (html, single_html)]
    assert len(timing[1]) == 1 and timing[0] == timing[1]
