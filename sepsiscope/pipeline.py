"""The main job: source -> screens -> patient split -> every model, NEWS2 -> evaluation -> report.

The models come from :data:`PIPELINE_MODELS` (a ``--models`` name -> its kind and the
:class:`RunConfig` fields it takes); the job fits, saves, scores and explains each one through
the :class:`ehr.estimator.SepsisEstimator` interface and never asks which kind it is.

Sources (:mod:`sepsiscope.sources`): the synthetic cohort, PhysioNet or MIMIC files, or an
ingested cohort directory (``--cohort``). With an external source (``--external-physionet``,
``--external-mimic``, ``--external-cohort``) the models and thresholds come from the first
source only; the second is screened, scored and evaluated unchanged as the ``external`` split,
next to the internal ``test`` split.

Run directory layout (what :func:`evaluation.report.write_report` reads):

``run.json``             resolved config, seeds, versions, git commit, input hashes, timings;
                         written once, after every table and model, with ``"complete": true``
``stays.parquet``        the stays table (+ ``split``: train/dev/test, ``external`` for a second source)
``screens.parquet``      label columns of the screens: stay_id, screen_time, hours_since_admit,
                         new_data, onset_in_h, label, split (+ sepsis_label for PhysioNet)
``test_screens.parquet`` the test split's screens with the columns the models read, by stay (what
                         ``sepsiscope explain --run`` reads one stay of, see :mod:`sepsiscope.stay_screens`)
``predictions.parquet``  every model on the dev and test splits (contract ``predictions``); with
                         ``oof_folds`` (or a stacking model) also every model's patient-grouped
                         out-of-fold predictions on train (``split="train"``, ``fold`` filled)
``alarms.parquet``       test-split alarms of every model at every operating point
``explanations.parquet`` CPN Bayes factors, GBDT contributions (and a stack's per-member log-odds) at test alarms
``cohort_flow.csv``      where every stay went (:mod:`ehr.flow`): read, excluded, screened, split
``main_table.csv``       the headline table, and every table of :mod:`evaluation.summary`
``operating_points.json`` thresholds chosen on dev, applied unchanged to test
``models/cpn``, ``models/gbdt``  saved models (``models/<name>`` for every other ``--models`` name)
``cxr/``                 with ``--models ...,fusion`` (synthetic source): the rendered films, the encoder
                         trained on train-split films only, ``cxr_embeddings.parquet`` (see
                         :mod:`sepsiscope.cxr_embeddings`)
``tables/stack_coefficients.csv`` the meta-learner's coefficients (shown under "Further tables")
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
from ehr.splits import split_patients
from sepsiscope.alarm_explanations import explain_alarms
from sepsiscope.progress import step
from sepsiscope.runinfo import write_run_json
from sepsiscope.sources import cohort_source_name, exclude, external_split, read_source, screen_rows, utility_tables
from sepsiscope.stacking import fit_stackers, oof_member_predictions, stacker_predictions
from sepsiscope.stay_screens import write_stay_screens

__all__ = ["RunConfig", "PipelineModel", "PIPELINE_MODELS", "load_source", "run_main_job", "finish_run"]

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("stay_id", "subject_id", "screen_time", "hours_since_admit", "new_data", "onset_in_h",
                 "label", "sepsis_label", "department", "age", "sex")


@dataclass
class RunConfig:
    """Everything that defines a run (stored in ``run.json``)."""

    source: str = "synthetic"          # synthetic | physionet | mimic | cohort
    path: str | None = None            # data path for physionet / mimic; cohort directory
    n_stays: int = 2000                # synthetic cohort size
    site: str = "A"                    # synthetic hospital (ehr.synthetic.plan.SITES)
    external_source: str | None = None  # physionet | mimic | cohort: evaluated unchanged as split "external"
    external_path: str | None = None
    exclusions: str | None = None      # cohort exclusions (ehr.exclusions), e.g. johnson2018
    seed: int = 0
    horizon_h: float = 48.0
    dev_fraction: float = 0.2
    test_fraction: float = 0.25
    window_h: float = 48.0
    silencing_h: float = 48.0
    n_boot: int = 200
    subgroup_n_boot: int = 200         # bootstrap resamples per subgroup level
    cpn_network: str = "auto"          # auto: full for synthetic, physionet for PhysioNet/MIMIC
    cpn_max_rows: int | None = None    # CPN: fit on at most this many screens (None: every training screen)
    cpn_half_lives: str = "learn"      # learn | prior
    cpn_max_iter: int = 30
    cpn_discriminative_iter: int = 40  # CPN refinement steps after EM (0: EM only)
    gbdt_backend: str = "lightgbm"
    gbdt_n_estimators: int = 300
    definition: str = "sepsis3"        # MIMIC onset definition
    allow_missing: tuple = ()          # MIMIC tables allowed to be missing (the report names them)
    models: tuple = ("cpn", "gbdt")
    oof_folds: int = 0                 # K-fold out-of-fold predictions on train (0: only for stacking, 5)
    stack_meta: str = "logistic"       # logistic | lightgbm
    deep_epochs: int = 10              # sequence and fusion models: most training epochs (early stopping)
    deep_hidden: int = 32              # sequence and fusion models: recurrent encoder size (CPU-sized)
    fusion_strategy: str = "mid"       # mid | early | late | medfuse (fusion.models.STRATEGIES)
    cxr_image_size: int = 64           # synthetic films: rendered size and the small encoder's input
    cxr_encoder_epochs: int = 4        # synthetic films: epochs of the small encoder (train-split films only)
    explain_alarms: bool = True
    partitions: int = 16               # --dask: parts of the cohort written from the source
    dask_evaluation: str = "counts"    # --dask: counts (per-part sums, evaluation.counts) | gather (exact tables)
    timings: dict = field(default_factory=dict)


def load_source(cfg: RunConfig):
    """Return (events, stays, cxr or None, ingest info dict) for the configured source."""
    return read_source(cfg.source, cfg.path, n_stays=cfg.n_stays, seed=cfg.seed, definition=cfg.definition,
                       site=cfg.site, allow_missing=cfg.allow_missing)


def _no_fit_params(train: pd.DataFrame) -> dict:
    return {}


def _no_run_info(model) -> dict:
    return {}


@dataclass(frozen=True)
class PipelineModel:
    """How the main job makes one model: its kind (``sepsiscope.models.MODEL_CLASSES``), the
    ``__init__`` arguments it takes from the :class:`RunConfig`, extra ``fit`` keywords drawn from
    the training screens, fitted values worth recording in ``run.json``, and whether it stacks
    the others (:mod:`sepsiscope.stacking`)."""

    kind: str
    params: Callable[[RunConfig], dict]
    fit_params: Callable[[pd.DataFrame], dict] = _no_fit_params
    run_info: Callable[[object], dict] = _no_run_info
    #: fitted on the other models' out-of-fold predictions on train, not on screens (the stack)
    stacks: bool = False
    #: reads CXR study embeddings (``emb_cxr_*``) attached to the screens (:mod:`sepsiscope.cxr_embeddings`)
    reads_cxr_embeddings: bool = False


def _cpn_params(cfg: RunConfig) -> dict:
    synthetic = cfg.source == "synthetic" or (cfg.source == "cohort" and cohort_source_name(cfg.path) == "synthetic")
    network = cfg.cpn_network if cfg.cpn_network != "auto" else ("full" if synthetic else "physionet")
    return {"network": network, "max_rows": cfg.cpn_max_rows, "random_state": cfg.seed,
            "half_lives": cfg.cpn_half_lives, "max_iter": cfg.cpn_max_iter,
            "discriminative_iter": cfg.cpn_discriminative_iter}


def _gbdt_params(cfg: RunConfig) -> dict:
    return {"backend": cfg.gbdt_backend, "n_estimators": cfg.gbdt_n_estimators, "random_state": cfg.seed,
            "n_jobs": 2}


def _stack_params(cfg: RunConfig) -> dict:
    return {"meta": cfg.stack_meta, "random_state": cfg.seed}


def _deep_params(cfg: RunConfig) -> dict:
    return {"epochs": cfg.deep_epochs, "hidden": cfg.deep_hidden, "head_hidden": cfg.deep_hidden,
            "random_state": cfg.seed}


def _fusion_params(cfg: RunConfig) -> dict:
    return {"strategy": cfg.fusion_strategy, **_deep_params(cfg)}


def _deep_info(model) -> dict:
    return {f"{model.model_name}_epochs": len(model.history_), f"{model.model_name}_temperature": model.temperature_}


def _stack_info(model) -> dict:
    return {"stack_coefficients": model.coefficients_.round(4).to_dict(orient="records")}


#: ``--models`` name -> how the main job makes that model
PIPELINE_MODELS: dict[str, PipelineModel] = {
    "cpn": PipelineModel("cpn", _cpn_params, run_info=lambda m: {"cpn_half_lives_h": m.half_lives_,
                                                                 "cpn_n_train_rows": m.n_train_rows_}),
    # early stopping holds out whole patients
    "gbdt": PipelineModel("gbdt", _gbdt_params, fit_params=lambda train: {"groups": train["subject_id"]}),
    "sequence": PipelineModel("sequence", _deep_params, run_info=_deep_info),
    # only where the source has chest X-ray studies (embedded by an encoder trained on train-split films)
    "fusion": PipelineModel("fusion", _fusion_params, run_info=_deep_info, reads_cxr_embeddings=True),
    "stack": PipelineModel("stack", _stack_params, run_info=_stack_info, stacks=True),
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
    """Run the whole study on one source (and evaluate on a second) and write the run directory (+ ``report.html``).

    The directory is written under a temporary name (:func:`ehr.artefacts.atomic_dir`) and renamed
    into place when everything, the report included, is written: an existing ``out`` is replaced as
    a whole, and a failed or interrupted job leaves it as it was. Returns ``out / "report.html"``.
    """
    from ehr.artefacts import atomic_dir

    out = Path(out)
    with atomic_dir(out, keep_name=True) as stage:
        _run_into(stage, cfg or RunConfig(), progress)
    return out / "report.html"


def _run_into(out: Path, cfg: RunConfig, progress: bool) -> None:
    """The main job, writing into the (staging) directory ``out``."""
    from evaluation.news2 import news2_predictions

    out.mkdir(parents=True, exist_ok=True)
    timed = partial(step, enabled=progress, timings=cfg.timings)
    estimators = _make_models(cfg)
    fitted_info: dict = {}
    if any(PIPELINE_MODELS[n].reads_cxr_embeddings for n in estimators):
        from sepsiscope.cxr_embeddings import cxr_source_problem

        problem = cxr_source_problem(cfg.source, cfg.path, cfg.external_source)
        if problem:
            raise ValueError(problem)

    with timed("load source"):
        events, stays_read, cxr, source_info = load_source(cfg)
        events, stays, cxr, excluded = exclude(events, stays_read, cxr, cfg.exclusions, source_info)
    with timed("build screens"):
        # PhysioNet: every challenge row is kept for the utility; the protocol screens stop at onset
        all_rows, screens = screen_rows(events, stays, cxr, cfg.horizon_h)
    split = split_patients(stays, seed=cfg.seed, dev_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction)
    stays = stays.assign(split=split.reindex(stays["stay_id"]).to_numpy())
    if any(PIPELINE_MODELS[n].reads_cxr_embeddings for n in estimators):
        from sepsiscope.cxr_embeddings import run_cxr_embeddings

        with timed("embed chest X-rays (encoder trained on train-split films)"):
            all_rows, screens = run_cxr_embeddings(cfg, cxr, split, out / "cxr", all_rows, screens, fitted_info)
    screens["split"] = split.reindex(screens["stay_id"]).to_numpy()
    all_rows["split"] = split.reindex(all_rows["stay_id"]).to_numpy()
    parts = {s: screens[screens["split"] == s] for s in ("train", "dev", "test")}
    if parts["train"]["label"].nunique() < 2:
        raise ValueError("the training split has a single class; use more stays")
    flows = {"internal": _cohort_flow(stays_read, all_rows, excluded, split, source_info)}

    models, member_fit_params = {}, {}
    labels = Labels.from_screens(parts["train"], horizon_h=cfg.horizon_h)
    stackers = {n: m for n, m in estimators.items() if PIPELINE_MODELS[n].stacks}
    for name, model in estimators.items():
        spec = PIPELINE_MODELS[name]
        if spec.stacks:
            continue
        with timed(f"train {name.upper()}"):
            model.fit(parts["train"], labels, **spec.fit_params(parts["train"]))
        model.save(out / "models" / name)
        models[model.model_name] = model
        member_fit_params[model.model_name] = spec.fit_params
        fitted_info.update(spec.run_info(model))
    preds = []
    with timed("score dev and test"):
        for name, m in models.items():
            for s in ("dev", "test"):
                preds.append(m.predictions(parts[s], name=name, split=s))
        for s in ("dev", "test"):
            p, _ = news2_predictions(events, stays, parts[s], split=s)
            preds.append(p)
    if cfg.oof_folds or stackers:
        members = {name: (m, member_fit_params[name]) for name, m in models.items()}
        preds += _oof_and_stack(cfg, members, stackers, parts, labels, preds, (events, stays), out, timed,
                                fitted_info)
    # one fold dtype (NEWS2 gives float NaN, out-of-fold rows integers)
    predictions = pd.concat([p.astype({"fold": "Int64"}) for p in preds], ignore_index=True)
    with timed("score every test row for the PhysioNet utility"):
        utility = {"test": utility_tables(models, events, stays, all_rows, "test", stackers)}
    evaluated = {"test": {"source": source_info["source"], "path": cfg.path}}
    del all_rows
    explain_screens = parts["test"]
    if cfg.external_source:
        with timed("score the external source"):
            ext = external_split(cfg.external_source, cfg.external_path, models, stays, horizon_h=cfg.horizon_h,
                                 definition=cfg.definition, exclusions=cfg.exclusions, stackers=stackers)
        predictions, screens, stays = (pd.concat([a, b], ignore_index=True) for a, b in (
            (predictions, ext.predictions.astype({"fold": "Int64"})), (screens, ext.screens), (stays, ext.stays)))
        utility["external"] = ext.utility_tables
        evaluated["external"] = {"source": ext.info["source"], "path": cfg.external_path}
        flows["external"] = _cohort_flow(ext.stays_read, ext.all_rows, ext.reasons, None, ext.info)
        source_info = {"internal": source_info, "external": ext.info}
        explain_screens = pd.concat([explain_screens, ext.screens], ignore_index=True)
        del ext

    finish_run(out, cfg, predictions=predictions, screens=screens, stays=stays,
               n_split={k: len(v) for k, v in parts.items()}, utility_tables=utility,
               explain=lambda alarms: explain_alarms(models, alarms, explain_screens, stackers, predictions),
               source_info=source_info, fitted_info=fitted_info, test_screens=lambda: parts["test"],
               model_columns=[c for m in models.values() for c in m.required_columns], flow=_flow_table(flows),
               evaluated=evaluated, progress=progress)


def finish_run(out: Path, cfg: RunConfig, *, predictions: pd.DataFrame, screens: pd.DataFrame,
               stays: pd.DataFrame, n_split: dict, utility_tables: dict, explain: Callable, source_info: dict,
               fitted_info: dict, test_screens: Callable, model_columns: list, flow: pd.DataFrame | None = None,
               evaluated: dict | None = None, progress: bool = False) -> Path:
    """Evaluate the dev/test predictions, explain the test alarms, write the run directory and report.

    The part of the main job after scoring, shared by the single-process and the partitioned
    (Dask) paths: ``screens`` needs the label columns (:data:`LABEL_COLUMNS`, ``split``), and
    ``explain(alarms)`` returns the explanations of the fired test alarms (or None);
    ``test_screens()`` the test split's screens, of which ``model_columns`` go to ``test_screens.parquet``.
    ``utility_tables`` maps a split to its PhysioNet utility rows (or None); ``flow`` is the
    cohort-flow table and ``evaluated`` the source of each evaluated split, when known.
    """
    timed = partial(step, enabled=progress, timings=cfg.timings)
    with timed("evaluate"):
        from evaluation.summary import evaluate_run

        ev = evaluate_run(predictions, screens, stays, reference="news2", window_h=cfg.window_h,
                          silencing_h=cfg.silencing_h, n_boot=cfg.n_boot, subgroup_n_boot=cfg.subgroup_n_boot,
                          seed=cfg.seed, utility_tables={k: v for k, v in utility_tables.items() if v is not None})
    explanations = None
    if cfg.explain_alarms and cfg.models:
        with timed("explain test alarms"):
            explanations = explain(ev.alarms)
            if explanations is not None:
                ev.add_explanations(explanations, predictions, stays, window_h=cfg.window_h)

    with timed("write run directory"):
        keep = [c for c in LABEL_COLUMNS if c in screens.columns] + ["split"]
        screens[keep].to_parquet(out / "screens.parquet", index=False)
        write_stay_screens(test_screens(), out / "test_screens.parquet", columns=model_columns)
        stays.to_parquet(out / "stays.parquet", index=False)
        predictions.to_parquet(out / "predictions.parquet", index=False)
        ev.alarms.to_parquet(out / "alarms.parquet", index=False)
        if explanations is not None:
            explanations.to_parquet(out / "explanations.parquet", index=False)
        ev.write(out)
        if flow is not None:
            flow.to_csv(out / "cohort_flow.csv", index=False)
    extra = {"source_info": source_info, **({"evaluated": evaluated} if evaluated else {}),
             "results": ev.headline(),
             "n": {"stays": int(len(stays)), "screens": int(len(screens)),
                   "septic_stays": int(stays["sepsis"].sum()),
                   **{f"screens_{k}": int(v) for k, v in n_split.items()}},
             **fitted_info, "complete": True}
    # once, after every table and model: its "complete" marks a whole run. The report reads it
    # (evaluation.report needs run.json), so it comes before the report, which is a view of the
    # run that `sepsiscope report` can rewrite.
    inputs = {k: v for k, v in (("source", cfg.path), ("external", cfg.external_path)) if v}
    write_run_json(out, asdict(cfg), inputs=inputs or None,
                   seeds={"split": cfg.seed, "cohort": cfg.seed, "models": cfg.seed, "bootstrap": cfg.seed},
                   extra=extra)
    with step("write report", progress):
        from evaluation.report import write_report

        write_report(out)
    return out / "report.html"


def _cohort_flow(stays_read, all_rows, excluded, split, info) -> pd.DataFrame:
    """Every stay of one source: the reader's stages, exclusions, screening, split (:mod:`ehr.flow`)."""
    from ehr.flow import cohort_flow

    return cohort_flow(stays_read, all_rows, excluded=excluded, split=split, reader_stages=info.get("flow"))


def _flow_table(flows: dict) -> pd.DataFrame:
    """``cohort_flow.csv``: one source as is; with an external source, a ``source`` column first."""
    if len(flows) == 1:
        return next(iter(flows.values()))
    return pd.concat([f.assign(source=k)[["source", *f.columns]] for k, f in flows.items()], ignore_index=True)


def _oof_and_stack(cfg: RunConfig, members: dict, stackers: dict, parts: dict, labels: Labels, scored: list,
                   news2_source: tuple, out: Path, timed, fitted_info: dict) -> list:
    """Out-of-fold predictions of every member (``{name: (fitted model, fit keywords)}``) and NEWS2 on
    train; the stacking models fitted on them, saved, and scoring dev and test from the members'
    rows in ``scored``. Returns the new prediction tables."""
    from evaluation.news2 import news2_predictions

    oof = oof_member_predictions(members, parts["train"], labels, n_splits=cfg.oof_folds or 5, seed=cfg.seed,
                                 timed=timed)
    found = [oof, news2_predictions(*news2_source, parts["train"], split="train")[0].astype({"fold": "Int64"})]
    if not stackers:
        return found
    with timed(f"train {', '.join(stackers).upper()} on out-of-fold predictions"):
        fitted = fit_stackers(stackers, pd.concat(found, ignore_index=True), parts["train"],
                              horizon_h=labels.horizon_h)
    for name, model in fitted.items():
        model.save(out / "models" / name)
        fitted_info.update(PIPELINE_MODELS[name].run_info(model))
        (out / "tables").mkdir(parents=True, exist_ok=True)
        model.coefficients_.to_csv(out / "tables" / f"{name}_coefficients.csv", index=False)
    member_rows = pd.concat(scored, ignore_index=True)
    for s in ("dev", "test"):
        found += stacker_predictions(fitted, member_rows, parts[s], s)
    return found
