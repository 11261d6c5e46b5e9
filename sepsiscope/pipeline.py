"""The main job: source -> screens -> patient split -> CPN, GBDT, NEWS2 -> evaluation -> report.

Run directory layout (what :func:`evaluation.report.write_report` reads):

``run.json``             resolved config, seeds, versions, git commit, input hashes, timings
``stays.parquet``        the stays table (+ ``split``)
``screens.parquet``      label columns of the screens: stay_id, screen_time, hours_since_admit,
                         new_data, onset_in_h, label, split (+ sepsis_label for PhysioNet)
``predictions.parquet``  every model on the dev and test splits (contract ``predictions``)
``alarms.parquet``       test-split alarms of every model at every operating point
``explanations.parquet`` CPN Bayes factors and GBDT contributions for the test alarms
``main_table.csv``       the headline table (see :mod:`evaluation.summary`)
``operating_points.json`` thresholds chosen on dev, applied unchanged to test
``models/cpn``, ``models/gbdt``  saved models
``report.html``          the self-contained report
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.screens import build_screens
from ehr.splits import split_patients

__all__ = ["RunConfig", "load_source", "run_main_job"]

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("stay_id", "subject_id", "screen_time", "hours_since_admit", "new_data", "onset_in_h",
                 "label", "sepsis_label", "department", "age", "sex")


@dataclass
class RunConfig:
    """Everything that defines a run (stored in ``run.json``)."""

    source: str = "synthetic"          # synthetic | physionet | mimic
    path: str | None = None            # data path for physionet / mimic
    n_stays: int = 2000                # synthetic cohort size
    seed: int = 0
    horizon_h: float = 48.0
    dev_fraction: float = 0.2
    test_fraction: float = 0.25
    window_h: float = 48.0
    silencing_h: float = 48.0
    n_boot: int = 200
    cpn_network: str = "auto"          # auto: full for synthetic, physionet for PhysioNet/MIMIC
    cpn_max_rows: int = 200_000
    cpn_half_lives: str = "learn"      # learn | prior
    cpn_max_iter: int = 30
    gbdt_backend: str = "lightgbm"
    gbdt_n_estimators: int = 300
    definition: str = "sepsis3"        # MIMIC onset definition
    models: tuple = ("cpn", "gbdt")
    explain_alarms: bool = True
    timings: dict = field(default_factory=dict)


def load_source(cfg: RunConfig):
    """Return (events, stays, cxr or None, ingest info dict) for the configured source."""
    if cfg.source == "synthetic":
        from ehr.synthetic import generate_cohort

        c = generate_cohort(cfg.n_stays, seed=cfg.seed)
        return c.events, c.stays, c.cxr, {"source": "synthetic", "n_stays": cfg.n_stays}
    if cfg.source == "physionet":
        from ehr.sources.physionet import read_physionet

        c = read_physionet(cfg.path)
        return c.events, c.stays, None, {"source": "physionet2019", "ingest": c.report.to_dict()["counts"]}
    if cfg.source == "mimic":
        from ehr.sources.mimic import read_mimic

        c = read_mimic(cfg.path, definition=cfg.definition)
        info = {"source": "mimic", "definition": cfg.definition, "definition_params": c.report.definition,
                "ingest": c.report.to_dict()["counts"]}
        return c.events, c.stays, None, info
    raise ValueError(f"unknown source {cfg.source!r}; expected synthetic, physionet or mimic")


class _Timer:
    def __init__(self, cfg, progress):
        self.cfg, self.progress = cfg, progress

    def __call__(self, label):
        from sepsiscope.progress import step

        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()
                self.inner = step(label, timer.progress)
                self.inner.__enter__()

            def __exit__(self, *exc):
                self.inner.__exit__(*exc)
                timer.cfg.timings[label] = round(time.perf_counter() - self.t0, 2)
                return False

        return _Ctx()


def run_main_job(out, cfg: RunConfig | None = None, *, progress: bool = False) -> Path:
    """Run the whole study on one source and write the run directory (+ ``report.html``)."""
    from evaluation.news2 import news2_predictions
    from sepsiscope.models import predict_table
    from sepsiscope.runinfo import write_run_json

    cfg = cfg or RunConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timed = _Timer(cfg, progress)

    with timed("load source"):
        events, stays, cxr, source_info = load_source(cfg)
    with timed("build screens"):
        # PhysioNet: every challenge row is kept for the utility; the protocol screens stop at onset
        all_rows = build_screens(events, stays, cxr, horizon_h=cfg.horizon_h, until_onset=False)
        screens = all_rows[~(all_rows["onset_in_h"] <= 0)].reset_index(drop=True)
    split = split_patients(stays, seed=cfg.seed, dev_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction)
    stays = stays.assign(split=split.reindex(stays["stay_id"]).to_numpy())
    screens["split"] = split.reindex(screens["stay_id"]).to_numpy()
    all_rows["split"] = split.reindex(all_rows["stay_id"]).to_numpy()
    parts = {s: screens[screens["split"] == s] for s in ("train", "dev", "test")}
    if parts["train"]["label"].nunique() < 2:
        raise ValueError("the training split has a single class; use more stays")

    preds, models = [], {}
    if "cpn" in cfg.models:
        from cpn import SepsisCPN

        network = cfg.cpn_network if cfg.cpn_network != "auto" else (
            "full" if cfg.source == "synthetic" else "physionet")
        with timed("train CPN"):
            cpn = SepsisCPN(network=network, max_rows=cfg.cpn_max_rows, random_state=cfg.seed,
                            half_lives=cfg.cpn_half_lives, max_iter=cfg.cpn_max_iter)
            cpn.fit(parts["train"])
        cpn.save(out / "models" / "cpn")
        models["cpn"] = cpn
    if "gbdt" in cfg.models:
        from gbdt import GBDTClassifier

        with timed("train GBDT"):
            gb = GBDTClassifier(backend=cfg.gbdt_backend, n_estimators=cfg.gbdt_n_estimators,
                                random_state=cfg.seed, n_jobs=2)
            gb.fit(parts["train"], groups=parts["train"]["subject_id"])  # early stopping split by patient
        gb.save(out / "models" / "gbdt")
        models[cfg.gbdt_backend] = gb
    with timed("score dev and test"):
        for name, m in models.items():
            for s in ("dev", "test"):
                preds.append(predict_table(m, parts[s], name=name, split=s))
        for s in ("dev", "test"):
            p, _ = news2_predictions(events, stays, parts[s], split=s)
            preds.append(p)
    predictions = pd.concat(preds, ignore_index=True)
    utility_tables = None
    if cfg.source == "physionet":
        with timed("score every test row for the PhysioNet utility"):
            rows = all_rows[all_rows["split"] == "test"]
            up = [predict_table(m, rows, name=name, split="test") for name, m in models.items()]
            up.append(news2_predictions(events, stays, rows, split="test")[0])
            utility_tables = (pd.concat(up, ignore_index=True), rows)
    del all_rows

    with timed("evaluate"):
        from evaluation.summary import evaluate_run

        ev = evaluate_run(predictions, screens, stays, reference="news2", window_h=cfg.window_h,
                          silencing_h=cfg.silencing_h, n_boot=cfg.n_boot, seed=cfg.seed,
                          utility_tables=utility_tables)
    explanations = None
    if cfg.explain_alarms and models:
        with timed("explain test alarms"):
            explanations = _explain_alarms(models, ev.alarms, parts["test"])

    with timed("write run directory"):
        keep = [c for c in LABEL_COLUMNS if c in screens.columns] + ["split"]
        screens[keep].to_parquet(out / "screens.parquet", index=False)
        stays.to_parquet(out / "stays.parquet", index=False)
        predictions.to_parquet(out / "predictions.parquet", index=False)
        ev.alarms.to_parquet(out / "alarms.parquet", index=False)
        if explanations is not None:
            explanations.to_parquet(out / "explanations.parquet", index=False)
        ev.write(out)
    extra = {"source_info": source_info, "results": ev.headline(),
             "n": {"stays": int(len(stays)), "screens": int(len(screens)),
                   "septic_stays": int(stays["sepsis"].sum()),
                   **{f"screens_{k}": int(len(v)) for k, v in parts.items()}}}
    if "cpn" in models:
        extra["cpn_half_lives_h"] = models["cpn"].half_lives_
    cfg_dict = asdict(cfg)
    inputs = {"source": cfg.path} if cfg.path else None
    write_run_json(out, cfg_dict, inputs=inputs, seeds={"split": cfg.seed, "cohort": cfg.seed,
                                                      "models": cfg.seed, "bootstrap": cfg.seed}, extra=extra)
    with timed("write report"):
        from evaluation.report import write_report

        write_report(out)
    # run.json again so that it records the report's time too
    write_run_json(out, asdict(cfg), inputs=inputs, seeds={"split": cfg.seed, "cohort": cfg.seed,
                                                          "models": cfg.seed, "bootstrap": cfg.seed}, extra=extra)
    return out / "report.html"


def _explain_alarms(models: dict, alarms: pd.DataFrame, test_screens: pd.DataFrame) -> pd.DataFrame:
    """Explanations of every model at every fired test alarm of any model.

    Each model explains the union of alarm screens, so an alarm view can show the CPN's Bayes
    factors next to the GBDT's contributions for the same screen.
    """
    fired = alarms[alarms["fired"]][["stay_id", "screen_time"]].drop_duplicates()
    if fired.empty:
        return None
    rows = fired.merge(test_screens, on=["stay_id", "screen_time"], how="inner")
    parts = []
    for name, m in models.items():
        if name == "cpn":
            parts.append(m.explain(rows, model_name="cpn"))
        else:
            from gbdt import explanations_table

            parts.append(explanations_table(m, rows, model_name=name))
    return pd.concat(parts, ignore_index=True) if parts else None
