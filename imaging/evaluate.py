"""Scoring a saved CXR model on labelled images: discrimination with a CI, the stored operating point, calibration, shift proxies.

:func:`evaluate_model` gives, per finding, AUROC with a percentile bootstrap CI (resampling
patients/duplicate groups, not images, when groups are known), accuracy, sensitivity and
specificity at the model's stored threshold (``model.metrics["operating_points"]``; 0.5 when the
model has none), ECE (10 equal-width bins) and the reliability table. Metrics come from
:mod:`evaluation.metrics` and :mod:`evaluation.calibration`, their one home.

:func:`shift_report` scores the same images under the held-out acquisition shifts of
:mod:`imaging.augment` and with side markers painted over (:mod:`imaging.lungs`): the project's
proxies for a new site, reported beside the plain validation numbers.

Examples
--------
>>> import numpy as np
>>> from imaging.models import CXRFindingModel
>>> from imaging.evaluate import evaluate_model
>>> rng = np.random.default_rng(0)
>>> m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
>>> imgs = rng.integers(0, 256, (20, 32, 32), dtype=np.uint8)
>>> y = (np.arange(20) % 2).astype("float32")[:, None]
>>> r = evaluate_model(m, imgs, y, n_boot=50)["effusion"]
>>> sorted(r)[:4]
['accuracy', 'auroc', 'auroc_ci', 'ece']
"""

from __future__ import annotations

import numpy as np
import torch

from evaluation.calibration import expected_calibration_error, reliability_curve
from evaluation.metrics import SortedScores, threshold_metrics

__all__ = ["stored_thresholds", "evaluate_probabilities", "evaluate_model", "shift_report"]


def stored_thresholds(model) -> np.ndarray:
    """The model's stored decision threshold per finding (0.5 where none was stored)."""
    ops = (getattr(model, "metrics", None) or {}).get("operating_points", {})
    return np.array([float(ops.get(f, {}).get("threshold", 0.5)) for f in model.findings])


def _auroc_ci(y, p, groups, n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    scores = SortedScores(y, p)
    auroc = scores.roc_auc(np.ones(len(y)))
    if n_boot <= 0:
        return auroc, (float("nan"), float("nan"))
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    samples = np.empty(n_boot)
    for b in range(n_boot):
        # a resample draws whole groups with replacement; each image carries its group's count
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        samples[b] = scores.roc_auc(counts[inverse].astype(np.float64))
    samples = samples[np.isfinite(samples)]
    lo, hi = np.quantile(samples, [0.025, 0.975]) if len(samples) else (float("nan"),) * 2
    return auroc, (float(lo), float(hi))


def evaluate_probabilities(probs, labels, findings, thresholds, *, groups=None, n_boot: int = 1000,
                           seed: int = 0) -> dict:
    """Per finding: AUROC (+ bootstrap CI), accuracy/sensitivity/specificity at ``thresholds``, ECE, reliability."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    out = {}
    for k, f in enumerate(findings):
        y, p, t = labels[:, k], probs[:, k], float(thresholds[k])
        both = 0 < y.sum() < len(y)
        auroc, ci = _auroc_ci(y, p, groups, n_boot, seed) if both else (float("nan"), (float("nan"),) * 2)
        at = threshold_metrics(y, p, t)
        mean_p, observed, counts = reliability_curve(y, p, n_bins=10)
        out[f] = {"auroc": auroc, "auroc_ci": list(ci), "n_boot": int(n_boot) if both else 0,
                  "threshold": t, "accuracy": float(np.mean((p >= t) == (y == 1))) if len(y) else float("nan"),
                  "sensitivity": at["sensitivity"], "specificity": at["specificity"],
                  "ece": expected_calibration_error(y, p, n_bins=10), "mean_probability": float(p.mean()),
                  "prevalence": float(y.mean()), "n": int(len(y)), "n_positive": int(y.sum()),
                  "reliability": {"mean_predicted": np.round(mean_p, 6).tolist(),
                                  "observed": np.round(observed, 6).tolist(), "count": counts.tolist()}}
    return out


def evaluate_model(model, images, labels, *, groups=None, n_boot: int = 1000, seed: int = 0,
                   batch_size: int = 64) -> dict:
    """:func:`evaluate_probabilities` of ``model`` on ``images`` at its stored thresholds."""
    probs = model.predict_proba(images, batch_size=batch_size)
    return evaluate_probabilities(probs, labels, model.findings, stored_thresholds(model), groups=groups,
                                  n_boot=n_boot, seed=seed)


def shift_report(model, images, labels, *, masked_images=None, batch_size: int = 64) -> dict:
    """AUROC, sensitivity and specificity at the stored thresholds under each held-out shift.

    ``images``: uint8 ``(N, S, S)`` at the model's size; ``masked_images``: the same with markers
    painted over (:func:`imaging.lungs.mask_markers`), reported as ``markers_masked``.
    """
    from imaging.augment import SHIFTS, apply_shift

    thresholds = stored_thresholds(model)
    variants = {"none": None, **{name: name for name in SHIFTS}}
    if masked_images is not None:
        variants["markers_masked"] = "markers_masked"
    x = torch.from_numpy(np.ascontiguousarray(images))[:, None].float() / 255.0
    out = {}
    for name, shift in variants.items():
        if shift is None:
            xs = x
        elif shift == "markers_masked":
            xs = torch.from_numpy(np.ascontiguousarray(masked_images))[:, None].float() / 255.0
        else:
            xs = torch.cat([apply_shift(shift, x[i:i + 256]) for i in range(0, len(x), 256)])
        probs = model.predict_proba(xs, batch_size=batch_size)
        res = evaluate_probabilities(probs, labels, model.findings, thresholds, n_boot=0)
        out[name] = {f: {k: r[k] for k in ("auroc", "sensitivity", "specificity", "mean_probability")}
                     for f, r in res.items()}
    return out
