"""The HTML report: one self-contained file from a (small, hand-built) run directory."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from evaluation.report import RUN_FILES, load_run, write_report

T0 = pd.Timestamp("2024-03-01 08:00")
H = pd.Timedelta(hours=1)


def _alarms(preds: pd.DataFrame, model: str, threshold: float, silencing_h: float, op: str) -> pd.DataFrame:
    """Alarms by the protocol rule, written out longhand so the test does not lean on evaluation.protocol."""
    rows = []
    p = preds[(preds["model"] == model) & (preds["risk"] >= threshold)].sort_values(["stay_id", "screen_time"])
    for sid, g in p.groupby("stay_id"):
        last = None
        for t in g["screen_time"]:
            silenced = last is not None and (t - last) < pd.Timedelta(hours=silencing_h)
            rows.append({"stay_id": sid, "screen_time": t, "model": model, "threshold": threshold,
                         "fired": not silenced, "silenced": silenced, "operating_point": op})
            if not silenced:
                last = t
    return pd.DataFrame(rows)


def make_run_dir(path, *, seed: int = 0, n_stays: int = 24, full: bool = True):
    """A fake run directory following the layout in evaluation/report.py.

    Septic stays (every third) get onset at hour 30-50 and a risk ramp before it; cpn is a good
    probability model, lightgbm a noisier one, news2 an integer score.
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
        cpn = np.clip(0.05 + 0.8 * ramp + rng.normal(0, 0.05, len(hours)), 0.001, 0.999)
        lgb = np.clip(0.1 + 0.5 * ramp + rng.normal(0, 0.15, len(hours)), 0.001, 0.999)
        news = np.clip(np.round(1 + 7 * ramp + rng.normal(0, 1.2, len(hours))), 0, 20)
        for m, r in (("cpn", cpn), ("lightgbm", lgb), ("news2", news)):
            preds.append(pd.DataFrame({"stay_id": sid, "screen_time": times, "model": m, "risk": r,
                                       "fold": 0, "split": split}))
    stays = pd.DataFrame(stays)
    screens = pd.concat(screens, ignore_index=True)
    preds = pd.concat(preds, ignore_index=True)
    run = {"config": {"evaluation": {"window_h": 48, "silencing_h": 48}, "seed": seed},
           "git_commit": "abc123", "created": "2024-03-01T00:00:00Z", "versions": {"numpy": np.__version__}}
    (path / "run.json").write_text(json.dumps(run, indent=2))
    stays.to_parquet(path / "stays.parquet")
    screens.to_parquet(path / "screens.parquet")
    preds.to_parquet(path / "predictions.parquet")
    if full:
        ops = {"cpn": {"news2>=5": 0.5}, "lightgbm": {"news2>=5": 0.4}, "news2": {"news2>=5": 5.0}}
        (path / "operating_points.json").write_text(json.dumps(ops))
        alarms = pd.concat([_alarms(preds, m, t["news2>=5"], 48, "news2>=5") for m, t in ops.items()],
                           ignore_index=True)
        alarms.to_parquet(path / "alarms.parquet")
        test_ids = preds.loc[preds["split"] == "test", "stay_id"].unique()
        fired = alarms[alarms["fired"] & (alarms["model"] == "cpn") & alarms["stay_id"].isin(test_ids)].head(2)
        ex = []
        for row in fired.itertuples():
            for m, feats in (("cpn", {"crp": 0.9, "hr": 0.4, "alb": -0.3, "total": 1.0}),
                             ("lightgbm", {"crp": 0.5, "resp": 0.2, "temp": -0.1})):
                for f, c in feats.items():
                    ex.append({"stay_id": row.stay_id, "screen_time": row.screen_time, "model": m, "feature": f,
                               "value": None if f == "total" else 1.0, "state": None, "age_h": 1.0,
                               "weight": 0.9, "contribution": c, "baseline": c / 2})
        pd.DataFrame(ex).to_parquet(path / "explanations.parquet")
        pd.DataFrame({"model": ["cpn", "news2"], "auroc": [0.9, 0.8], "auroc_lo": [0.85, 0.7],
                      "auroc_hi": [0.95, 0.86]}).to_csv(path / "main_table.csv", index=False)
        pd.DataFrame({"subgroup": ["department"], "level": ["ICU"], "value": [0.7]}).to_csv(
            path / "subgroups.csv", index=False)
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
    m = re.search(r"<pre id='run-json'>(.*?)</pre>", text, re.S)
    import html as _html
    assert json.loads(_html.unescape(m.group(1))) == json.loads((run_dir / "run.json").read_text())


def test_report_embeds_all_images_as_valid_png(full_report):
    _, _, text, figs = full_report
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # roc, pr, reliability, decision curve, timing, 3 traces, 2 explanations
    assert len(imgs) == 10
    for b64 in imgs:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"http" not in png
    assert len(list(figs.glob("*.png"))) == 10
    assert "not available" not in text.split("Sensitivity analyses")[0].split("Run overview")[1] \
        .replace("calibration.csv not found", "")


def test_report_tables_present(full_report):
    _, _, text, _ = full_report
    assert "auroc_lo" in text  # main_table.csv shown as written
    assert "news2&gt;=5" in text  # operating points (escaped)
    assert "median_onset_h" in text  # timeliness computed from alarms
    assert "brier_before" in text  # recalibration computed from dev/test
    assert "0.31" in text  # utility
    assert "Platt scaling fitted on the dev split" in text  # news2 drawn on a probability scale


def test_report_degrades_gracefully(tmp_path):
    run_dir = make_run_dir(tmp_path / "run_min", full=False)
    path = write_report(run_dir, out=tmp_path / "elsewhere" / "r.html")
    text = path.read_text()
    assert path.parent.name == "elsewhere"
    assert "alarms.parquet not found" in text
    assert "explanations.parquet not found" in text
    assert "utility.json not found" in text
    assert "without confidence intervals" in text  # main table computed
    assert len(re.findall(r"data:image/png;base64,", text)) >= 4  # roc, pr, reliability, decision
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
    import evaluation.report as rep
    for name in RUN_FILES:
        assert f"``{name}``" in rep.__doc__


def test_report_computes_missing_tables(tmp_path):
    run_dir = make_run_dir(tmp_path / "r")
    (run_dir / "subgroups.csv").unlink()
    (run_dir / "main_table.csv").unlink()
    text = write_report(run_dir).read_text()
    sub = text.split("<h2>Subgroups</h2>")[1].split("</section>")[0]
    assert "computed by the report" in sub and "department" in sub and "auroc" in sub
    sens = text.split("<h2>Sensitivity analyses (window and silencing)</h2>")[1].split("</section>")[0]
    assert "alarms_per_admission" in sens and sens.count("<tr>") == 9 * 3  # body rows: 3x3 grid x 3 models
    off = write_report(run_dir, out=tmp_path / "off.html", compute_missing=False).read_text()
    assert "subgroups.csv not found" in off and "main_table.csv not found" in off
