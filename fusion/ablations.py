"""The fusion ablation (issue 14): EHR-only vs early / late / mid / MedFuse-style fusion, and robustness.

Shared by ``scripts/fusion_synthetic.py`` and ``notebooks/04_fusion_ablations.ipynb``:

:func:`synthetic_fusion_data`  the synthetic linked cohort split by patient (train + dev fit, test
                               scored), CXR embeddings from an encoder trained on train-split films
                               only, attached to every screen
:func:`fit_ablation_models`    the EHR-only sequence model and the fusion strategies, same settings
:func:`fusion_table`           AUROC/AUPRC with patient-level bootstrap CIs and paired differences
                               against the EHR-only model, overall and per group of stays
:func:`robustness_ci_table`    each model's AUROC with every film removed and 24 h / 72 h older, and
                               its change against the films as observed (paired bootstrap CI)
:func:`pneumonia_groups`       all test stays, and the non-septic plus pneumonia-associated septic ones

Examples
--------
>>> from fusion._demo import demo_screens
>>> s = demo_screens(n_stays=24, seed=0, hours=8, images=True)
>>> models, fits = fit_ablation_models(s, ["sequence", "late"], hidden=4, head_hidden=4, epochs=1)
>>> list(models), list(fits["model"])
(['sequence', 'fusion_late'], ['sequence', 'fusion_late'])
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evaluation.bootstrap import bootstrap_metrics
from fusion.models import FusionModel, SequenceModel
from fusion.robustness import CONDITIONS, robustness_predictions

__all__ = ["FusionData", "ABLATION_MODELS", "FINETUNED_MODELS", "synthetic_fusion_data", "fit_ablation_models", "pneumonia_groups",
           "fusion_table", "robustness_ci_table"]

#: the ablation's models: the EHR-only reference, then every fusion strategy
ABLATION_MODELS = ("sequence", "early", "late", "mid", "medfuse")
#: models that also fine-tune the imaging encoder's last block (``<strategy>_ft``; need the films)
FINETUNED_MODELS = ("mid_ft", "early_ft")


@dataclass
class FusionData:
    """Screens with attached embeddings, split by patient: ``train`` (train + dev) fits, ``test`` is scored."""

    train: pd.DataFrame
    test: pd.DataFrame
    stays_test: pd.DataFrame
    embeddings: pd.DataFrame
    encoder_info: dict
    #: the films' root, with the encoder under ``encoder/`` (what a ``<strategy>_ft`` model fine-tunes)
    cxr_dir: Path | None = None


def synthetic_fusion_data(n_stays: int, out_dir, *, seed: int = 0, image_size: int = 64,
                          encoder_epochs: int = 8, image_paths: bool = False) -> FusionData:
    """The synthetic cohort's screens with CXR embeddings, split by patient (``ehr.splits.split_patients``).

    The encoder learns from the films of the ``train`` split only; the models fit on train and dev
    (each holds out its own validation patients); test is scored. ``out_dir`` receives the films,
    the encoder and ``cxr_embeddings.parquet`` (:func:`fusion.embeddings.synthetic_cxr_embeddings`).
    ``image_paths``: the screens also carry each film's file (``emb_cxr_image``, relative to
    ``out_dir``), for the models that fine-tune the encoder.
    """
    from ehr.screens import build_screens
    from ehr.splits import split_patients
    from ehr.synthetic import generate_cohort
    from fusion.embeddings import attach_embeddings, synthetic_cxr_embeddings

    cohort = generate_cohort(n_stays, seed=seed)
    split = split_patients(cohort.stays, seed=seed)
    emb = synthetic_cxr_embeddings(cohort.cxr, split.index[split == "train"].to_numpy(), out_dir, seed=seed,
                                   image_size=image_size, epochs=encoder_epochs)
    info = json.loads((Path(out_dir) / "cxr_embeddings.json").read_text())
    screens = attach_embeddings(build_screens(cohort.events, cohort.stays, cohort.cxr), emb, image_paths=image_paths)
    test_stays = split.index[split == "test"].to_numpy()
    test = screens["stay_id"].isin(test_stays)
    return FusionData(train=screens[~test].reset_index(drop=True), test=screens[test].reset_index(drop=True),
                      stays_test=cohort.stays[cohort.stays.stay_id.isin(test_stays)].reset_index(drop=True),
                      embeddings=emb, encoder_info=info, cxr_dir=Path(out_dir))


def fit_ablation_models(train: pd.DataFrame, names=ABLATION_MODELS, *, save_dir=None, progress=None,
                        cxr_dir=None, encoder_lr: float = 2e-4, **params) -> tuple[dict, pd.DataFrame]:
    """Fit ``names`` (``"sequence"``, a fusion strategy or ``<strategy>_ft``) with the same ``params``.

    ``<strategy>_ft`` (:data:`FINETUNED_MODELS`) fine-tunes the last block of the encoder
    ``cxr_dir/encoder`` at ``encoder_lr``, reading the films under ``cxr_dir`` (``train`` needs
    ``emb_cxr_image``: ``synthetic_fusion_data(..., image_paths=True)``).

    Returns ``({model_name: fitted model}, fit table)``: seconds, epochs over all training stages
    and temperature per model. ``save_dir``: each model is also saved under ``save_dir/<model_name>``;
    ``progress(text)`` is called after each fit (e.g. ``print``).
    """
    models, rows = {}, []
    for name in names:
        t0 = time.perf_counter()
        if name == "sequence":
            model = SequenceModel(**params)
        elif name.endswith("_ft"):
            if cxr_dir is None:
                raise ValueError(f"{name} fine-tunes the encoder: pass cxr_dir (the films and encoder/)")
            model = FusionModel(name[:-3], finetune="last_block", encoder=str(Path(cxr_dir) / "encoder"),
                                image_root=str(cxr_dir), encoder_lr=encoder_lr, **params)
        else:
            model = FusionModel(name, **params)
        model.fit(train)
        seconds = time.perf_counter() - t0
        rows.append({"model": model.model_name, "fit_s": round(seconds, 1), "epochs": len(model.history_),
                     "temperature": model.temperature_})
        models[model.model_name] = model
        if save_dir is not None:
            model.save(Path(save_dir) / model.model_name)
        if progress is not None:
            progress(f"{model.model_name}: fitted in {seconds:.0f} s ({len(model.history_)} epochs over its stages)")
    return models, pd.DataFrame(rows)


def pneumonia_groups(stays: pd.DataFrame) -> dict:
    """``{"all": stays, "pneumonia-associated": non-septic stays and septic stays whose source is pneumonia}``."""
    pneumonia = stays["pneumonia"].eq(True).to_numpy()  # missing: not pneumonia
    return {"all": stays, "pneumonia-associated": stays[~stays["sepsis"].astype(bool) | pneumonia]}


def _ci_table(pred, screens, stays, n_boot, seed, reference):
    res = bootstrap_metrics(pred, screens, stays, reference=reference, n_resamples=n_boot, seed=seed)
    t = res.table[res.table.metric.isin(["auroc", "auprc"])]
    d = res.differences[res.differences.metric.isin(["auroc", "auprc"])]
    return (t[["model", "metric", "estimate", "ci_low", "ci_high"]],
            d[["model", "metric", "difference", "ci_low", "ci_high", "p_value"]])


def fusion_table(predictions: pd.DataFrame, screens: pd.DataFrame, groups: dict, *, n_boot: int = 1000,
                 seed: int = 0, reference: str = "sequence") -> tuple[pd.DataFrame, pd.DataFrame]:
    """AUROC/AUPRC with 95 % patient-level bootstrap CIs, and paired differences against ``reference``.

    ``groups`` maps a group name to its stays (:func:`pneumonia_groups`); screens with new data are
    scored, as in the protocol. Returns ``(metrics, differences)``, each with a ``group`` column.
    """
    tables, diffs = [], []
    for group, stays in groups.items():
        keep_s = screens["stay_id"].isin(stays["stay_id"])
        keep_p = predictions["stay_id"].isin(stays["stay_id"])
        t, d = _ci_table(predictions[keep_p], screens[keep_s], stays, n_boot, seed, reference)
        tables.append(t.assign(group=group))
        diffs.append(d.assign(group=group))
    return pd.concat(tables, ignore_index=True), pd.concat(diffs, ignore_index=True)


def robustness_ci_table(models: dict, screens: pd.DataFrame, groups: dict, *, n_boot: int = 1000, seed: int = 0,
                        conditions: dict | None = None) -> pd.DataFrame:
    """Each model's AUROC under each condition (:data:`fusion.robustness.CONDITIONS`) and its change.

    ``delta_auroc`` is against the model's own score with the films as observed (the first
    condition), with a paired patient-level bootstrap CI (same resamples, same screens with new data).
    Columns: ``group, model, condition, auroc, delta_auroc, ci_low, ci_high``.
    """
    conditions = dict(CONDITIONS if conditions is None else conditions)
    observed = next(iter(conditions))
    pred = robustness_predictions(models, screens, conditions=conditions, split="test")
    rows = []
    for group, stays in groups.items():
        keep_s = screens["stay_id"].isin(stays["stay_id"])
        for name in models:
            mine = pred[pred["stay_id"].isin(stays["stay_id"]) & pred["model"].str.startswith(f"{name}@")]
            t, d = _ci_table(mine, screens[keep_s], stays, n_boot, seed, reference=f"{name}@{observed}")
            auroc = t[t.metric == "auroc"].set_index("model")
            d = d[d.metric == "auroc"].set_index("model")
            for cond in conditions:
                key = f"{name}@{cond}"
                rows.append({"group": group, "model": name, "condition": cond, "auroc": auroc.loc[key, "estimate"],
                             "delta_auroc": d["difference"].get(key, 0.0), "ci_low": d["ci_low"].get(key),
                             "ci_high": d["ci_high"].get(key)})
    return pd.DataFrame(rows)
