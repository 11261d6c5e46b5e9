"""Data errors (exit code 1): tables, model folders, cohorts and run directories that exist but cannot be used."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np

from tests.badinput.conftest import Case

PREDICT = "predict {tmp}/m --screens {fx}/screens.parquet --out {tmp}/p.parquet --no-progress"


def _bytes(name, data):
    def setup(fx, tmp):
        (tmp / name).write_bytes(data)
    return setup


def _screens(change):
    """Write ``change(fx.screens)`` to tmp/s.parquet."""
    def setup(fx, tmp):
        change(fx.screens.copy()).to_parquet(tmp / "s.parquet")
    return setup


def _truncated_parquet(fx, tmp):
    raw = (fx.root / "screens.parquet").read_bytes()
    (tmp / "s.parquet").write_bytes(raw[: len(raw) // 2])


def _model(kind, change_meta=None, change_files=None):
    """Copy fx/<kind> to tmp/m, then edit its model.json and/or files."""
    def setup(fx, tmp):
        shutil.copytree(fx.root / kind, tmp / "m")
        if change_files is not None:
            change_files(fx, tmp / "m")
        if change_meta is not None:
            path = tmp / "m" / "model.json"
            text = change_meta(json.loads(path.read_text()))
            path.write_text(text if isinstance(text, str) else json.dumps(text))
    return setup


def _set(key, value):
    def change(meta):
        meta[key] = value
        return meta
    return change


def _drop(*keys):
    def change(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
        return meta
    return change


def _truncate(name):
    def change(fx, m):
        raw = (m / name).read_bytes()
        (m / name).write_bytes(raw[: len(raw) // 2])
    return change


def _replace_with(source):
    def change(fx, m):
        target = m / source[0]
        target.unlink()
        shutil.copyfile(fx.root / source[1], target)
    return change


def _symlink(name, target):
    def change(fx, m):
        (m / name).unlink()
        os.symlink(target if target.startswith("/") else fx.root / target, m / name)
    return change


def _resign(name, cut=0.5):
    """Truncate a model file and record the truncated file's sha256, as an edited model.json would."""
    def change(fx, m):
        raw = (m / name).read_bytes()[: int(len((m / name).read_bytes()) * cut)]
        (m / name).write_bytes(raw)
        meta = json.loads((m / "model.json").read_text())
        meta["files"][name] = hashlib.sha256(raw).hexdigest()
        (m / "model.json").write_text(json.dumps(meta))
    return change


def _cohort(change):
    def setup(fx, tmp):
        shutil.copytree(fx.root / "cohort", tmp / "c")
        change(tmp / "c")
    return setup


def _run_json(text):
    def setup(fx, tmp):
        (tmp / "r").mkdir()
        if text is not None:
            (tmp / "r" / "run.json").write_text(text)
    return setup


def _one_stay(s):
    return s[s["stay_id"] == s["stay_id"].iloc[0]]


def _no_onset(s):
    return s.assign(onset_in_h=np.nan, label=0)


TRAIN_CPN = "train cpn --screens {tmp}/s.parquet --out {tmp}/out --max-iter 1 --no-progress"
TRAIN_GBDT = "train gbdt --screens {tmp}/s.parquet --out {tmp}/out --grid none --no-progress"
PREDICT_S = "predict {fx}/gbdt --screens {tmp}/s.parquet --out {tmp}/p.parquet --no-progress"
PREDICT_CPN = "predict {fx}/cpn --screens {tmp}/s.parquet --out {tmp}/p.parquet --no-progress"

CASES = [
    # -- screens tables
    Case("screens-garbage", TRAIN_CPN, 1, "not a readable parquet table", _bytes("s.parquet", b"\x00garbage" * 9)),
    Case("screens-empty-file", TRAIN_GBDT, 1, "not a readable parquet table", _bytes("s.parquet", b"")),
    Case("screens-truncated", PREDICT_S, 1, "not a readable parquet table", _truncated_parquet),
    Case("screens-csv", PREDICT_S, 1, "not a readable parquet table", _bytes("s.parquet", b"stay_id,hr\n1,80\n")),
    Case("screens-no-stay-id", PREDICT_S, 1, "missing column(s) ['stay_id']",
         _screens(lambda s: s.drop(columns="stay_id"))),
    Case("screens-no-screen-time", TRAIN_CPN, 1, "missing column(s) ['screen_time']",
         _screens(lambda s: s.drop(columns="screen_time"))),
    Case("screens-zero-rows", PREDICT_S, 1, "0 screen(s) of 0 stay(s)", _screens(lambda s: s.iloc[:0])),
    Case("cpn-one-row", TRAIN_CPN, 1, "1 screen(s) of 1 stay(s)", _screens(lambda s: s.iloc[:1])),
    Case("gbdt-one-row", TRAIN_GBDT, 1, "1 screen(s) of 1 stay(s)", _screens(lambda s: s.iloc[:1])),
    Case("cpn-one-stay", TRAIN_CPN, 1, "of 1 stay(s); this needs at least 2", _screens(_one_stay)),
    Case("gbdt-single-class", TRAIN_GBDT, 1, "s.parquet", _screens(_no_onset)),
    Case("cpn-single-class", TRAIN_CPN, 1, "s.parquet", _screens(_no_onset)),
    Case("gbdt-no-onset-column", TRAIN_GBDT, 1, "onset_in_h", _screens(lambda s: s.drop(columns="onset_in_h"))),
    Case("gbdt-horizon-mismatch", TRAIN_GBDT + " --horizon-h 12", 1, "does not match onset within 12 h",
         _screens(lambda s: s)),
    Case("gbdt-missing-feature", TRAIN_GBDT, 1, "department", _screens(lambda s: s.drop(columns="department"))),
    Case("predict-gbdt-no-hr", PREDICT_S, 1, "missing column(s) hr", _screens(lambda s: s.drop(columns="hr"))),
    Case("predict-cpn-no-hr", PREDICT_CPN, 1, "missing column(s) hr", _screens(lambda s: s.drop(columns="hr"))),
    Case("predict-cpn-no-age-columns", PREDICT_CPN, 1, "missing column(s)",
         _screens(lambda s: s.drop(columns=[c for c in s.columns if c.endswith("_age_h")]))),
    Case("predict-screen-time-text", PREDICT_S, 1, "screen_time",
         _screens(lambda s: s.assign(screen_time=s["screen_time"].astype(str)))),
    # -- model folders
    Case("model-no-model-json", PREDICT, 1, "not a SepsisScope model directory",
         _model("gbdt", change_files=lambda fx, m: (m / "model.json").unlink())),
    Case("model-json-invalid", PREDICT, 1, "not valid JSON", _model("gbdt", lambda meta: "{not json")),
    Case("model-json-binary", PREDICT, 1, "not valid JSON",
         _model("gbdt", change_files=lambda fx, m: (m / "model.json").write_bytes(b"\xff\xfe\x00{"))),
    Case("model-json-list", PREDICT, 1, "expected a JSON object", _model("gbdt", lambda meta: "[1, 2]")),
    Case("model-no-kind", PREDICT, 1, "no 'kind' field", _model("gbdt", _drop("kind"))),
    Case("model-unknown-kind", PREDICT, 1, "no model kind 'forest'", _model("gbdt", _set("kind", "forest"))),
    Case("model-old-format", PREDICT, 1, "format_version 1", _model("gbdt", _set("format_version", 1))),
    Case("model-cpn-old-format", PREDICT, 1, "format_version 99", _model("cpn", _set("format_version", 99))),
    Case("model-files-not-dict", PREDICT, 1, "'files' must map", _model("gbdt", _set("files", ["booster.txt"]))),
    Case("model-booster-truncated", PREDICT, 1, "sha256 differs", _model("gbdt", change_files=_truncate("booster.txt"))),
    Case("model-booster-swapped", PREDICT, 1, "sha256 differs",
         _model("gbdt", change_files=_replace_with(("booster.txt", "cpn/network.xml")))),
    Case("model-booster-missing", PREDICT, 1, "booster.txt: not found",
         _model("gbdt", change_files=lambda fx, m: (m / "booster.txt").unlink())),
    Case("model-booster-not-listed", PREDICT, 1, "not listed in 'files'", _model("gbdt", _set("files", {}))),
    Case("model-booster-symlink-passwd", PREDICT, 1, "resolves outside the model directory",
         _model("gbdt", change_files=_symlink("booster.txt", "/etc/passwd"))),
    Case("model-network-symlink-other-model", PREDICT, 1, "resolves outside the model directory",
         _model("cpn", change_files=_symlink("network.xml", "cpn/network.xml"))),
    Case("model-network-truncated", PREDICT, 1, "sha256 differs", _model("cpn", change_files=_truncate("network.xml"))),
    Case("model-network-truncated-resigned", PREDICT, 1, "network.xml", _model("cpn", change_files=_resign("network.xml"))),
    Case("model-network-passwd-resigned", PREDICT, 1, "network.xml",
         _model("cpn", change_files=lambda fx, m: (_replace_with(("network.xml", "notes/mine.txt"))(fx, m),
                                                   _resign("network.xml", 1.0)(fx, m)))),
    Case("model-config-unknown-param", PREDICT, 1, "config does not fit",
         _model("gbdt", lambda meta: meta | {"config": meta["config"] | {"depth_of_forest": 3}})),
    Case("model-gbdt-state-missing", PREDICT, 1, "fitted state is incomplete", _model("gbdt", _drop("state", "feature_names"))),
    Case("model-cpn-state-missing", PREDICT, 1, "fitted state is incomplete", _model("cpn", _drop("state", "half_lives"))),
    Case("model-backend-unknown", PREDICT, 1, "unknown backend",
         _model("gbdt", lambda meta: meta | {"config": meta["config"] | {"backend": "catboost"}})),
    Case("model-dir-is-cohort", "predict {fx}/cohort --screens {fx}/screens.parquet --out {tmp}/p.parquet", 1,
         "not a SepsisScope model directory"),
    Case("explain-damaged-model", "explain 200000 --model {tmp}/m --screens {fx}/screens.parquet", 1,
         "sha256 differs", _model("gbdt", change_files=_truncate("booster.txt"))),
    Case("explain-screens-garbage", "explain 200000 --model {fx}/cpn --screens {tmp}/s.parquet", 1,
         "s.parquet", _bytes("s.parquet", b"not parquet")),
    Case("explain-image-wrong-kind", "explain-image {fx}/image.png --model {fx}/gbdt --finding f --out {tmp}/o.png",
         1, "kind is 'gbdt', expected 'imaging'"),
    Case("score-cxr-wrong-kind", "score-cxr {tmp}/c --model {fx}/cpn", 1, "kind is 'cpn', expected 'imaging'",
         _cohort(lambda c: None)),
    # -- cohorts
    Case("cohort-no-cohort-json", "screens {tmp}/c --out {tmp}/s.parquet", 1, "is not a cohort directory",
         _cohort(lambda c: (c / "cohort.json").unlink())),
    Case("cohort-json-invalid", "screens {tmp}/c --out {tmp}/s.parquet", 1, "cohort.json: not valid JSON",
         _cohort(lambda c: (c / "cohort.json").write_text("{"))),
    Case("cohort-format-version", "screens {tmp}/c --out {tmp}/s.parquet", 1, "cohort format_version 99",
         _cohort(lambda c: (c / "cohort.json").write_text('{"format_version": 99}'))),
    Case("cohort-events-missing", "screens {tmp}/c --out {tmp}/s.parquet", 1, "events.parquet: no such file",
         _cohort(lambda c: (c / "events.parquet").unlink())),
    Case("cohort-events-garbage", "screens {tmp}/c --out {tmp}/s.parquet", 1, "not a readable parquet file",
         _cohort(lambda c: (c / "events.parquet").write_bytes(b"PAR1 nonsense"))),
    Case("cohort-stays-missing-column", "screens {tmp}/c --out {tmp}/s.parquet", 1, "stays.parquet",
         _cohort(lambda c: __import__("pandas").read_parquet(c / "stays.parquet").drop(columns="admit_time")
                 .to_parquet(c / "stays.parquet"))),
    Case("cxr-images-no-cxr-table", "cxr-images {tmp}/c", 1, "cxr.parquet: no such file",
         _cohort(lambda c: (c / "cxr.parquet").unlink())),
    # -- run directories
    Case("report-incomplete-run", "report {fx}/partial_run -o {tmp}/r.html", 1, "the run is incomplete"),
    Case("report-no-run-json", "report {tmp}/r -o {tmp}/r.html", 1, "is not a run directory", _run_json(None)),
    Case("report-run-json-invalid", "report {tmp}/r -o {tmp}/r.html", 1, "run.json: not valid JSON", _run_json("{")),
    Case("report-run-json-list", "report {tmp}/r -o {tmp}/r.html", 1, "expected a JSON object", _run_json("[]")),
    Case("report-complete-as-text", "report {tmp}/r -o {tmp}/r.html", 1, "the run is incomplete",
         _run_json('{"complete": "yes"}')),
    Case("explain-run-incomplete", "explain 200000 --run {fx}/partial_run", 1, "the run is incomplete"),
    Case("serve-run-incomplete", "serve --run {fx}/partial_run", 1, "the run is incomplete"),
    Case("report-complete-false", "report {tmp}/r", 1, "the run is incomplete", _run_json('{"complete": false}')),
]
