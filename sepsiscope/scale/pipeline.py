"""The main job on a partitioned cohort: every pass over screens runs per part (on Dask with ``--dask``).

Steps (what :func:`sepsiscope.pipeline.run_main_job` does on one table):

1. the cohort, partitioned (``run --cohort DIR`` or the source written with ``cfg.partitions`` parts);
2. screens per part, every hour (``until_onset=False``, for the PhysioNet utility), into
   ``RUN/parts/screens``;
3. the stays gathered here and split by patient (:func:`ehr.splits.split_patients`, as on one table);
4. the CPN by map-reduce EM (:func:`cpn.partitioned.fit_partitioned`), GBDT through LightGBM's or
   XGBoost's Dask estimators (:mod:`sepsiscope.scale.gbdt_fit`), both saved under ``RUN/models``;
5. per part: dev and test screens scored by every model and NEWS2 (NEWS2 from the part's events);
   the predictions and the label columns come back here (a few numbers per screen);
6. evaluation and report as on one table (:func:`sepsiscope.pipeline.finish_run`), the test alarms
   explained per part.

Loaders (``functools.partial`` of :func:`_load_screens`) carry a part's number and its stays' splits
to the worker, which reads the part from disk: no worker holds more than a part's screens at a time,
plus the part's CPN training rows (all of them, or the stays drawn for ``cpn_max_rows``) and the GBDT
feature matrix.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort, cohort_partitions
from ehr.flow import FLOW_COLUMNS, add_flows
from ehr.partitions import PartitionedTable, bucket_of, parts_directory, write_part
from ehr.splits import split_patients
from sepsiscope.alarm_explanations import explain_at
from sepsiscope.pipeline import LABEL_COLUMNS, PIPELINE_MODELS, RunConfig, _make_models, finish_run
from sepsiscope.progress import step
from sepsiscope.scale.tasks import build_screens_partitioned, cached_model
from sepsiscope.stay_screens import KEY_COLUMNS

__all__ = ["run_partitioned", "partitioned_cohort"]


def _has_challenge_rows(cfg: RunConfig) -> bool:
    """PhysioNet 2019 data, read now or ingested earlier: the challenge utility can be scored."""
    from sepsiscope.sources import cohort_source_name

    return cfg.source == "physionet" or (cfg.source == "cohort" and cohort_source_name(cfg.path) == "physionet2019")


def partitioned_cohort(cfg: RunConfig, out: Path) -> tuple[Path, dict]:
    """The partitioned cohort of a run: a ``cohort`` source as it is, or the source written under ``RUN/parts``."""
    if cfg.source == "cohort":
        if cohort_partitions(cfg.path) is None:
            raise ValueError(f"{cfg.path}: not a partitioned cohort (write it with --partitions N)")
        return Path(cfg.path), {"source": "cohort", "path": str(cfg.path)}
    target = out / "parts" / "cohort"
    if cfg.source == "synthetic":
        from ehr.synthetic import write_synthetic
        from ehr.synthetic.stream import DEFAULT_CHUNK_STAYS

        write_synthetic(target, cfg.n_stays, cfg.seed, partitions=cfg.partitions, chunk_stays=DEFAULT_CHUNK_STAYS)
        return target, {"source": "synthetic", "n_stays": cfg.n_stays, "chunk_stays": DEFAULT_CHUNK_STAYS}
    from sepsiscope.pipeline import load_source

    events, stays, cxr, info = load_source(cfg)
    Cohort(events, stays, cxr, meta={"source": info["source"]}).save(target, partitions=cfg.partitions)
    return target, info


def _load_screens(k: int, screens_dir: str, split: pd.Series, splits: tuple, protocol: bool) -> pd.DataFrame:
    """Part ``k`` of the screens with its ``split`` column, of the given splits; ``protocol``: before onset."""
    s = PartitionedTable(screens_dir, "screens").read(k)
    s["split"] = split.reindex(s["stay_id"]).to_numpy()
    keep = s["split"].isin(splits).to_numpy()
    if protocol:
        keep &= ~(s["onset_in_h"] <= 0).to_numpy()
    return s.loc[keep].reset_index(drop=True)


def _score_part(k: int, screens_dir: str, cohort_dir: str, split: pd.Series, model_dirs: dict,
                utility: bool, write_to: str | None = None) -> dict:
    """Predictions of every model and NEWS2 on part ``k``'s dev/test screens, and its label columns.

    With ``write_to`` the predictions are written there as part ``k`` (a partitioned table) and
    only their row count comes back.
    """
    from evaluation.news2 import news2_predictions

    all_rows = _load_screens(k, screens_dir, split, ("train", "dev", "test"), protocol=False)
    screens = all_rows.loc[~(all_rows["onset_in_h"] <= 0).to_numpy()]
    part = Cohort.load_partition(cohort_dir, k)
    models = [cached_model(d) for d in model_dirs.values()]
    preds = []
    for s in ("dev", "test"):
        rows = screens.loc[screens["split"].to_numpy() == s]
        preds += [m.predictions(rows, name=m.model_name, split=s) for m in models]
        preds.append(news2_predictions(part.events, part.stays, rows, split=s)[0])
    keep = _label_columns(screens)
    if write_to is not None:
        table = pd.concat([p.astype({"fold": "Int64"}) for p in preds], ignore_index=True)
        write_part(table, write_to, "predictions", k)
        return {"rows": len(table)}
    out = {"predictions": pd.concat(preds, ignore_index=True)}
    if utility:
        rows = all_rows.loc[all_rows["split"].to_numpy() == "test"]
        up = [m.predictions(rows, name=m.model_name, split="test") for m in models]
        up.append(news2_predictions(part.events, part.stays, rows, split="test")[0])
        out["utility"] = (pd.concat(up, ignore_index=True), rows[keep])
    return out


def _label_columns(screens: pd.DataFrame) -> list[str]:
    return [c for c in LABEL_COLUMNS if c in screens.columns] + ["split"]


def _flow_part(k: int, screens_dir: str, cohort_dir: str, split: pd.Series) -> pd.DataFrame:
    """The cohort flow of part ``k``'s stays (:func:`ehr.flow.cohort_flow`); the parts add up (:func:`ehr.flow.add_flows`)."""
    from ehr.flow import cohort_flow

    stays = PartitionedTable(Path(cohort_dir) / "stays", "stays").read(k)
    rows = PartitionedTable(screens_dir, "screens").read(k, columns=["stay_id", "onset_in_h", "new_data"])
    return cohort_flow(stays, rows, split=split)


def _tally_part(k: int, screens_dir: str, split: pd.Series) -> dict:
    """Protocol screens per split of part ``k``, and the training labels present."""
    s = _load_screens(k, screens_dir, split, ("train", "dev", "test"), protocol=True)
    out = {name: int((s["split"] == name).sum()) for name in ("train", "dev", "test")}
    out["train_labels"] = set(s.loc[s["split"] == "train", "label"].unique())
    return out


def _labels_part(k: int, screens_dir: str, split: pd.Series) -> pd.DataFrame:
    """The label columns of part ``k``'s protocol screens (what evaluation reads), with ``split``."""
    screens = _load_screens(k, screens_dir, split, ("train", "dev", "test"), protocol=True)
    return screens[_label_columns(screens)]


def _in_order(table: pd.DataFrame, models: list | None = None) -> pd.DataFrame:
    """Rows in the single-process path's order: by model (fit order, NEWS2 last), split, stay, time."""
    keys = ["stay_id", "screen_time"]
    if models is not None:
        table = table.assign(_m=table["model"].map({m: i for i, m in enumerate(models)}),
                             _s=table["split"].map({"dev": 0, "test": 1}))
        keys = ["_m", "_s", *keys]
    table = table.sort_values(keys, kind="stable").reset_index(drop=True)
    return table.drop(columns=["_m", "_s"]) if models is not None else table


def _call(job, **kwargs):
    """Run a per-part job (a ``partial`` carrying the part's own arguments) with the shared ones."""
    return job(**kwargs)


def _explain_part(k: int, screens_dir: str, split: pd.Series, fired: pd.DataFrame, model_dirs: dict):
    test = _load_screens(k, screens_dir, split, ("test",), protocol=True)
    rows = fired.merge(test, on=["stay_id", "screen_time"], how="inner")
    if not len(rows):
        return None
    parts = [cached_model(d) for d in model_dirs.values()]
    return pd.concat([explain_at(m, m.model_name, rows, test) for m in parts], ignore_index=True)


def _test_part(k: int, screens_dir: str, split: pd.Series, columns: list) -> pd.DataFrame:
    test = _load_screens(k, screens_dir, split, ("test",), protocol=True)
    return test[[c for c in dict.fromkeys([*KEY_COLUMNS, *columns]) if c in test.columns]]


def _stays_part(k: int, cohort_dir: str) -> pd.DataFrame:
    return Cohort.load_partition(cohort_dir, k).stays


def _fit_cpn(model, parts, mapper, cfg):
    from cpn.partitioned import fit_partitioned

    fit_partitioned(model, parts, mapper)


def _fit_gbdt(model, parts, mapper, cfg):
    from sepsiscope.scale.gbdt_fit import fit_gbdt_partitioned

    fit_gbdt_partitioned(model, parts, mapper, horizon_h=cfg.horizon_h)


#: model kind -> how it trains on the training screens of every partition (map-reduce EM for the
#: CPN, Dask LightGBM/XGBoost for the GBDT); the partitioned run offers exactly these kinds
PARTITIONED_FIT = {"cpn": _fit_cpn, "gbdt": _fit_gbdt}


def run_partitioned(out, cfg: RunConfig, mapper, *, progress: bool = False) -> Path:
    """The main job per partition (see the module docstring); returns the report's path.

    As in :func:`sepsiscope.pipeline.run_main_job`, the run directory is written under a temporary
    name and replaces ``out`` as a whole when everything is written: never mixed with an old run.
    """
    from ehr.artefacts import atomic_dir

    out = Path(out)
    with atomic_dir(out, keep_name=True) as stage:
        _run_partitioned_into(stage, cfg, mapper, progress)
    return out / "report.html"


def _run_partitioned_into(out: Path, cfg: RunConfig, mapper, progress: bool) -> None:
    """The partitioned main job, writing into the (staging) directory ``out``."""
    timed = partial(step, enabled=progress, timings=cfg.timings)
    estimators = _make_models(cfg)
    with timed("load source"):
        cohort_dir, source_info = partitioned_cohort(cfg, out)
    n = cohort_partitions(cohort_dir)
    with timed("build screens per partition"):
        screens_dir, _ = build_screens_partitioned(cohort_dir, out / "parts" / "screens", mapper,
                                                   horizon_h=cfg.horizon_h, until_onset=False)
    stays = pd.concat(mapper.gather(mapper.map(_stays_part, range(n), cohort_dir=str(cohort_dir))),
                      ignore_index=True).sort_values("stay_id", kind="stable").reset_index(drop=True)
    split = split_patients(stays, seed=cfg.seed, dev_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction)
    stays = stays.assign(split=split.reindex(stays["stay_id"]).to_numpy())
    bucket = bucket_of(split.index.to_numpy(), n)
    split_of = [split[bucket == k] for k in range(n)]
    train = [partial(_load_screens, k, str(screens_dir), split_of[k], ("train",), True) for k in range(n)]
    # the reader's own stages first (as the single-process flow has them), then every part's, added up
    reader = pd.DataFrame(source_info.get("flow") or [], columns=list(FLOW_COLUMNS))
    flow = add_flows([reader] + mapper.gather(mapper.map(
        _call, [partial(_flow_part, k, split=split_of[k]) for k in range(n)], screens_dir=str(screens_dir),
        cohort_dir=str(cohort_dir))))
    counts_mode = cfg.dask_evaluation == "counts"
    if counts_mode:  # the label columns stay where they are: per part, the counts evaluation needs
        screens = None
        tallies = mapper.gather(mapper.map(_call, [partial(_tally_part, k, split=split_of[k]) for k in range(n)],
                                           screens_dir=str(screens_dir)))
        n_split = {s: int(sum(t[s] for t in tallies)) for s in ("train", "dev", "test")}
        train_classes = set().union(*(t["train_labels"] for t in tallies))
    else:
        labels = [partial(_labels_part, k, split=split_of[k]) for k in range(n)]
        screens = _in_order(pd.concat(mapper.gather(mapper.map(_call, labels, screens_dir=str(screens_dir))),
                                      ignore_index=True))
        n_split = {s: int((screens["split"] == s).sum()) for s in ("train", "dev", "test")}
        train_classes = set(screens.loc[screens["split"] == "train", "label"].unique())
    if len(train_classes) < 2:
        raise ValueError("the training split has a single class; use more stays")

    model_dirs, fitted_info = {}, {}
    for name, model in estimators.items():
        with timed(f"train {name.upper()}"):
            PARTITIONED_FIT[model.kind](model, train, mapper, cfg)
        model_dirs[model.model_name] = str(model.save(out / "models" / name))
        fitted_info.update(PIPELINE_MODELS[name].run_info(model))
    if counts_mode:
        from sepsiscope.scale.evaluate import finish_counts

        source_info = {**source_info, "partitions": n, "distributed": type(mapper).__name__}
        with timed("score dev and test per partition"), \
                parts_directory(out / "parts" / "predictions", "predictions", n) as tmp:
            jobs = [partial(_score_part, k, split=split_of[k]) for k in range(n)]
            mapper.gather(mapper.map(_call, jobs, screens_dir=str(screens_dir), cohort_dir=str(cohort_dir),
                                     model_dirs=model_dirs, utility=False, write_to=str(tmp)))
        return finish_counts(out, cfg, mapper, n=n, split_of=split_of, screens_dir=screens_dir,
                             cohort_dir=cohort_dir, model_dirs=model_dirs, stays=stays, n_split=n_split, flow=flow,
                             source_info=source_info, fitted_info=fitted_info, progress=progress)
    with timed("score dev and test per partition"):
        jobs = [partial(_score_part, k, split=split_of[k]) for k in range(n)]
        scored = mapper.gather(mapper.map(_call, jobs, screens_dir=str(screens_dir), cohort_dir=str(cohort_dir),
                                          model_dirs=model_dirs, utility=_has_challenge_rows(cfg)))
    order = [*model_dirs, "news2"]
    predictions = _in_order(pd.concat([s["predictions"] for s in scored], ignore_index=True), order)
    utility_tables = None
    if cfg.source == "physionet":
        utility_tables = (_in_order(pd.concat([s["utility"][0] for s in scored], ignore_index=True), order),
                          _in_order(pd.concat([s["utility"][1] for s in scored], ignore_index=True)))

    def explain(alarms):
        fired = alarms.loc[alarms["fired"], ["stay_id", "screen_time"]].drop_duplicates()
        if fired.empty:
            return None
        where = bucket_of(fired["stay_id"].to_numpy(), n)
        jobs = [partial(_explain_part, k, split=split_of[k], fired=fired.loc[where == k]) for k in np.unique(where)]
        parts = mapper.gather(mapper.map(_call, jobs, screens_dir=str(screens_dir), model_dirs=model_dirs))
        parts = [p for p in parts if p is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    model_columns = [c for d in model_dirs.values() for c in cached_model(d).required_columns]

    def test_screens():
        jobs = [partial(_test_part, k, split=split_of[k]) for k in range(n)]
        return pd.concat(mapper.gather(mapper.map(_call, jobs, screens_dir=str(screens_dir),
                                                  columns=model_columns)), ignore_index=True)

    source_info = {**source_info, "partitions": n, "distributed": type(mapper).__name__}
    return finish_run(out, cfg, predictions=predictions, screens=screens, stays=stays, n_split=n_split,
                      utility_tables={"test": utility_tables}, explain=explain, source_info=source_info,
                      fitted_info=fitted_info, test_screens=test_screens, model_columns=model_columns,
                      flow=flow, progress=progress)
