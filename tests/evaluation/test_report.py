"""The HTML report: one self-contained file from a (small, hand-built) run directory."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from evaluation.report import write_report
from evaluation.rundir import RUN_FILES, load_run
from evaluation.summary import evaluate_run

T0 = pd.Timestamp("2024-03-01 08:00")
H = pd.Timedelta(hours=1)


def make_run_dir(path, *, seed: int = 0, n_stays: int = 24, full: bool = True, external: bool = False,
                 models=("cpn", "lightgbm", "news2")):
    """A small run directory following the layout in evaluation/rundir.py.

    Septic stays (every third) get onset at hour 30-50 and a risk ramp before it; cpn is a good
    probability model, lightgbm a noisier one, news2 an integer score. With ``full``, the tables
    come from ``evaluate_run`` (as in ``sepsiscope run``), plus explanations and a utility. With
    ``external``, every third stay of the second half is an ``external`` split from another source.
    """
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    stays, screens, preds = [], [], []
    for i in range(n_stays):
        sid = 100 + i
        septic = i % 3 == 0
        n_h = int(rng.integers(30, 60))
        onset_h = float(rng.integers(30, min(n_h, 50) + 1)) if septic else None
        admit = T0 + pd.Timedelta(days=i)
        stays.append({"subject_id": sid, "stay_id": sid, "source": "synthetic", "admit_time": admit,
                      "discharge_time": admit + n_h * H, "hospital_admit_time": admit - pd.Timedelta(days=i % 7),
                      "age": 60.0 + i, "sex": "FM"[i % 2], "department": ["MICU", "SICU", "ward"][i % 3 - 1],
                      "sepsis": septic, "onset_time": admit + onset_h * H if septic else pd.NaT,
                      "sepsis_label_time": admit + (onset_h - 6) * H if septic else pd.NaT,
                      "antibiotic_time": admit + (onset_h + 2) * H if septic else pd.NaT,
                      "surgery_time": admit + 5 * H if i % 4 == 0 else pd.NaT, "death": i % 5 == 0,
                      "bsi": septic and i % 2 == 0})
        last = int(onset_h) - 1 if septic else n_h
        hours = np.arange(1, last + 1, dtype=float)
        onset_in_h = onset_h - hours if septic else np.full(len(hours), np.nan)
        label = ((onset_in_h > 0) & (onset_in_h <= 48)).astype(int) if septic else np.zeros(len(hours), int)
        times = [admit + h * H for h in hours]
        screens.append(pd.DataFrame({"subject_id": sid, "stay_id": sid, "screen_time": times,
                                     "hours_since_admit": hours, "new_data": True, "onset_in_h": onset_in_h,
                                     "label": label}))
        ramp = np.clip(1 - np.nan_to_num(onset_in_h, nan=99) / 24, 0, 1)
        split = "test" if i % 2 else "dev"
        if external and i >= n_stays // 2 and i % 3 != 2:
            split = "external"
        stays[-1]["source"] = "site-b" if split == "external" else "synthetic"
        screens[-1]["split"] = split
        cpn = np.clip(0.05 + 0.8 * ramp + rng.normal(0, 0.05, len(hours)), 0.001, 0.999)
        lgb = np.clip(0.1 + 0.5 * ramp + rng.normal(0, 0.15, len(hours)), 0.001, 0.999)
        news = np.clip(np.round(1 + 7 * ramp + rng.normal(0, 1.2, len(hours))), 0, 20)
        if not septic and i % 3 == 1 and len(hours) > 10:  # one spike: a false alarm for every model
            cpn[9], lgb[9], news[9] = 0.97, 0.97, 12
        for m, r in zip(models, (cpn, lgb, news)):
            preds.append(pd.DataFrame({"stay_id": sid, "screen_time": times, "model": m, "risk": r,
                                       "fold": 0, "split": split}))
    stays = pd.DataFrame(stays)
    screens = pd.concat(screens, ignore_index=True)
    preds = pd.concat(preds, ignore_index=True)
    run = {"config": {"evaluation": {"window_h": 48, "silencing_h": 48}, "seed": seed},
           "git_commit": "abc123", "created": "2024-03-01T00:00:00Z", "versions": {"numpy": np.__version__},
           "evaluated": {"test": {"source": "synthetic"}, **({"external": {"source": "site-b"}} if external else {})}}
    (path / "run.json").write_text(json.dumps(run, indent=2))
    stays.to_parquet(path / "stays.parquet")
    screens.to_parquet(path / "screens.parquet")
    preds.to_parquet(path / "predictions.parquet")
    if full:
        ev = evaluate_run(preds, screens, stays, n_boot=20, reference=models[-1])
        alarms = ev.alarms
        fired = alarms[alarms["fired"]].drop_duplicates(["stay_id", "screen_time"])  # as the pipeline explains
        ex = []
        for row in fired.itertuples():
            for m, feats in ((models[0], {"crp": (0.9, 0.7, "ge100"), "hr": (0.4, 0.1, "91to111"),
                                          "alb": (-0.3, -0.2, "lt2p5"), "total": (1.0, None, None)}),
                             (models[1], {"crp": (0.5, -1.1, None), "resp": (0.2, -1.1, None),
                                          "temp": (-0.1, -1.1, None), "total": (0.6, -1.1, None)})):
                for f, (c, b, state) in feats.items():
                    ex.append({"stay_id": row.stay_id, "screen_time": row.screen_time, "model": m, "feature": f,
                               "value": None if f == "total" else 1.0, "state": state, "age_h": 1.0,
                               "weight": 0.9, "contribution": c, "baseline": b})
        ex = pd.DataFrame(ex)
        ex.to_parquet(path / "explanations.parquet")
        ev.add_explanations(ex, preds, stays)
        ev.write(path)
        alarms.to_parquet(path / "alarms.parquet")
        (path / "utility.json").write_text(json.dumps({"cpn": 0.31, "news2": 0.12}))
    return path


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    run_dir = make_run_dir(tmp_path_factory.mktemp("run") / "run_full")
    figs = run_dir / "figures"
    path = write_report(run_dir, figures_dir=figs)
    return run_dir, path, path.read_text(encoding="utf-8"), figs


def test_report_exists_and_is_self_contained(full_report):
    run_dir, path, text, _ = full_report
    assert path == run_dir / "report.html" and path.is_file()
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""src=["'](?!data:)""", text), "every src must be an inline data: URI"
    assert "<link" not in text and "<script" not in text and "@import" not in text


def test_report_embeds_run_json(full_report):
    run_dir, _, text, _ = full_report
    m = re.search(r'<pre id="run-json">(.*?)</pre>', text, re.S)
    import html as _html
    assert json.loads(_html.unescape(m.group(1))) == json.loads((run_dir / "run.json").read_text())


def test_report_embeds_all_images_as_valid_png(full_report):
    run_dir, _, text, figs = full_report
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    explained = pd.read_csv(run_dir / "alarm_explanations.csv")
    per_kind = explained.drop_duplicates(["model", "true_alarm", "stay_id"]).groupby(["model", "true_alarm"]).size()
    n_explained = int(per_kind.clip(upper=3).sum())
    assert n_explained >= 4 and explained["true_alarm"].nunique() == 2  # true and false alarms
    # roc, pr, alarm burden, reliability, decision curve, timing, 3 traces, the explained alarms
    assert len(imgs) == 9 + n_explained
    for b64 in imgs:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"http" not in png
    assert len(list(figs.glob("*.png"))) == len(imgs)
    before = text.split("<h2>Sensitivity analyses")[0].split("<h2>Main table")[1]
    assert "not available" not in before


def test_report_tables_present(full_report):
    _, _, text, _ = full_report
    assert "news2&gt;=5" in text  # operating points (escaped)
    assert "median_onset_h" in text  # timeliness.csv
    assert "brier_before" in text  # calibration.csv
    assert "p_value_vs_reference" in text and "alarms_per_admission" in text  # timeliness, sensitivity
    assert "0.31" in text  # utility
    assert "Platt scaling fitted on the dev split" in text  # news2 drawn on a probability scale


def _section(text: str, title: str) -> str:
    return text.split(f"<h2>{title}</h2>")[1].split("</section>")[0]


def test_report_renders_what_evaluate_run_wrote(full_report):
    """Every cell of the written main table is in the report, as written (nothing recomputed)."""
    run_dir, _, text, _ = full_report
    main = pd.read_csv(run_dir / "main_table.csv")
    section = _section(text, "Main table")
    assert section.count("<tr>") == len(main)  # body rows (the header row has a style)
    for cell in main[["auroc", "auprc", "sensitivity", "alarms_per_admission"]].to_numpy().ravel():
        assert cell in section
    sub = pd.read_csv(run_dir / "subgroups.csv")
    section = _section(text, "Subgroups")
    auc = sub[sub["metric"] == "auroc"]
    assert section.count("<tr>") >= auc[["subgroup", "level"]].drop_duplicates().shape[0]
    for r in auc.dropna(subset=["estimate", "ci_low", "ci_high"]).itertuples():
        assert f"{r.estimate:.3f} ({r.ci_low:.3f} to {r.ci_high:.3f})" in section


def test_report_degrades_gracefully(tmp_path):
    run_dir = make_run_dir(tmp_path / "run_min", full=False)
    path = write_report(run_dir, out=tmp_path / "elsewhere" / "r.html")
    text = path.read_text()
    assert path.parent.name == "elsewhere"
    assert "alarms.parquet not found" in text
    assert "alarm_explanations.csv not found" in text
    assert "utility.json not found" in text
    for name in ("main_table.csv", "timeliness.csv", "calibration.csv", "subgroups.csv", "sensitivity.csv"):
        assert f"{name} not found (written by evaluate_run)" in text  # shown, never recomputed
    assert len(re.findall(r"data:image/png;base64,", text)) >= 3  # roc, pr, reliability
    # only run.json: every section says why it is missing
    only = tmp_path / "only"
    only.mkdir()
    (only / "run.json").write_text('{"seed": 1}')
    text = write_report(only).read_text()
    assert text.count("not available") >= 8
    assert "data:image/png" not in text


def test_report_bad_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        write_report(tmp_path)


def test_corrupt_optional_file_is_reported(tmp_path):
    run_dir = make_run_dir(tmp_path / "r", full=False)
    (run_dir / "alarms.parquet").write_text("not parquet")
    run = load_run(run_dir)
    assert "could not be read" in run.problems["alarms.parquet"]
    text = write_report(run_dir).read_text()
    assert "alarms.parquet could not be read" in text


def test_layout_documented():
    import evaluation.rundir as rundir
    for name in RUN_FILES:
        assert f"``{name}``" in rundir.__doc__


def test_contract_violations_are_reported(tmp_path):
    run_dir = make_run_dir(tmp_path / "r")
    alarms = pd.read_parquet(run_dir / "alarms.parquet")
    alarms.assign(fired=alarms["fired"].astype(object).where(alarms.index != 3, None)).to_parquet(
        run_dir / "alarms.parquet")
    ex = pd.read_parquet(run_dir / "explanations.parquet")
    ex.drop(columns="contribution").to_parquet(run_dir / "explanations.parquet")
    run = load_run(run_dir)
    assert "fired" in run.problems["alarms.parquet"] and "data contract" in run.problems["alarms.parquet"]
    assert "['contribution']" in run.problems["explanations.parquet"]
    text = write_report(run_dir).read_text()
    assert "explanations.parquet does not follow the data contract" in _section(text, "Run overview")
