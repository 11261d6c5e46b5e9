"""The main job: source -> screens -> patient split -> CPN, GBDT, NEWS2 -> evaluation -> report.

The models come from :data:`PIPELINE_MODELS` (a ``--models`` name -> its kind and the
:class:`RunConfig` fields it takes); the job fits, saves, scores and explains each one through
the :class:`ehr.estimator.SepsisEstimator` interface and never asks which kind it is.

Run directory layout (what :func:`evaluation.report.write_report` reads):

``run.json``             resolved config, seeds, versions, git commit, input hashes, timings;
                         written once, after every table and model, with ``"complete": true``
``stays.parquet``        the stays table (+ ``split``)
``screens.parquet``      label columns of the screens: stay_id, screen_time, hours_since_admit,
                         new_data, onset_in_h, label, split (+ sepsis_label for PhysioNet)
``test_screens.parquet`` the test split's screens with the columns the models read, by stay (what
                         ``sepsiscope explain --run`` reads one stay of, see :mod:`sepsiscope.stay_screens`)
``predictions.parquet``  every model on the dev and test splits (contract ``predictions``)
``alarms.parquet``       test-split alarms of every model at every operating point
``explanations.parquet`` CPN Bayes factors and GBDT contributions for the test alarms
``main_table.csv``       the headline table (see :mod:`evaluation.summary`)
``operating_points.json`` thresholds chosen on dev, applied unchanged to test
``models/cpn``, ``models/gbdt``  saved models
``report.html``          the self-contained report
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from ehr.estimator import Labels
from ehr.screens import build_screens
from ehr.splits import split_patients
from sepsiscope.progress import step
from sepsiscope.stay_screens import write_stay_screens

__all__ = ["RunConfig", "PipelineModel", "PIPELINE_MODELS", "load_source", "run_main_job"]

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


def _no_fit_params(train: pd.DataFrame) -> dict:
    return {}


def _no_run_info(model) -> dict:
    return {}


@dataclass(frozen=True)
class PipelineModel:
    """How the main job makes one model: its kind (``sepsiscope.models.MODEL_CLASSES``), the
    ``__init__`` arguments it takes from the :class:`RunConfig`, extra ``fit`` keywords drawn from
    the training screens, and fitted values worth recording in ``run.json``."""

    kind: str
    params: Callable[[RunConfig], dict]
    fit_params: Callable[[pd.DataFrame], dict] = _no_fit_params
    run_info: Callable[[object], dict] = _no_run_info


def _cpn_params(cfg: RunConfig) -> dict:
    network = cfg.cpn_network if cfg.cpn_network != "auto" else (
        "full" if cfg.source == "synthetic" else "physionet")
    return {"network": network, "max_rows": cfg.cpn_max_rows, "random_state": cfg.seed,
            "half_lives": cfg.cpn_half_lives, "max_iter": cfg.cpn_max_iter}


def _gbdt_params(cfg: RunConfig) -> dict:
    return {"backend": cfg.gbdt_backend, "n_estimators": cfg.gbdt_n_estimators, "random_state": cfg.seed,
            "n_jobs": 2}


#: ``--models`` name -> how the main job makes that model
PIPELINE_MODELS: dict[str, PipelineModel] = {
    "cpn": PipelineModel("cpn", _cpn_params, run_info=lambda m: {"cpn_half_lives_h": m.half_lives_}),
    # early stopping holds out whole patients
    "gbdt": PipelineModel("gbdt", _gbdt_params, fit_params=lambda train: {"groups": train["subject_id"]}),
}


def _make_models(cfg: RunConfig) -> dict:
    """``--models`` name -> unfitted estimator, in the order of ``cfg.models``."""
    from sepsiscope.models import model_class

    unknown = [m for m in cfg.models if m not in PIPELINE_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))}; the main job runs "
                         f"{', '.join(PIPELINE_MODELS)} (NEWS2 always)")
    return {name: model_class(PIPELINE_MODELS[name].kind)(**PIPELINE_MODELS[name].params(cfg))
            for name in cfg.models}


def run_main_job(out, cfg: RunConfig | None = None, *, progress: bool = False) -> Path:
    """Run the whole study on one source and write the run directory (+ ``report.html``)."""
    from evaluation.news2 import news2_predictions
    from sepsiscope.runinfo import write_run_json

    cfg = cfg or RunConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timed = partial(step, enabled=progress, timings=cfg.timings)
    estimators = _make_models(cfg)

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

    models, fitted_info = {}, {}
    labels = Labels.from_screens(parts["train"], horizon_h=cfg.horizon_h)
    for name, model in estimators.items():
        spec = PIPELINE_MODELS[name]
        with timed(f"train {name.upper()}"):
            model.fit(parts["train"], labels, **spec.fit_params(parts["train"]))
        model.save(out / "models" / name)
        models[model.model_name] = model
        fitted_info.update(spec.run_info(model))
    preds = []
    with timed("score dev and test"):
        for name, m in models.items():
            for s in ("dev", "test"):
                preds.append(m.predictions(parts[s], name=name, split=s))
        for s in ("dev", "test"):
            p, _ = news2_predictions(events, stays, parts[s], split=s)
            preds.append(p)
    predictions = pd.concat(preds, ignore_index=True)
    utility_tables = None
    if cfg.source == "physionet":
        with timed("score every test row for the PhysioNet utility"):
            rows = all_rows[all_rows["split"] == "test"]
            up = [m.predictions(rows, name=name, split="test") for name, m in models.items()]
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
        write_stay_screens(parts["test"], out / "test_screens.parquet",
                           columns=[c for m in models.values() for c in m.required_columns])
        stays.to_parquet(out / "stays.parquet", index=False)
        predictions.to_parquet(out / "predictions.parquet", index=False)
        ev.alarms.to_parquet(out / "alarms.parquet", index=False)
        if explanations is not None:
            explanations.to_parquet(out / "explanations.parquet", index=False)
        ev.write(out)
    extra = {"source_info": source_info, "results": ev.headline(),
             "n": {"stays": int(len(stays)), "screens": int(len(screens)),
                   "septic_stays": int(stays["sepsis"].sum()),
                   **{f"screens_{k}": int(len(v)) for k, v in parts.items()}},
             **fitted_info, "complete": True}
    # once, after every table and model: its "complete" marks a whole run. The report reads it
    # (evaluation.report needs run.json), so it comes before the report, which is a view of the
    # run that `sepsiscope report` can rewrite.
    write_run_json(out, asdict(cfg), inputs={"source": cfg.path} if cfg.path else None,
                   seeds={"split": cfg.seed, "cohort": cfg.seed, "models": cfg.seed, "bootstrap": cfg.seed},
                   extra=extra)
    with step("write report", progress):
        from evaluation.report import write_report

        write_report(out)
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
    parts = [m.explain(rows, model_name=name) for name, m in models.items()]
    return pd.concat(parts, ignore_index=True) if parts else None
