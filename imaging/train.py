"""Training the CXR finding model: class-weighted BCE, CXR augmentation, AdamW, early stopping.

Two augmentations: ``"basic"`` (:func:`augment_batch`, the original) and ``"shift"``
(:func:`imaging.augment.augment_cxr`: wider exposure ranges, blur, noise, zoom). With
``marker_mask_p`` and a marker-masked copy of the training images passed to :meth:`fit`, each
training image is shown with its side markers painted over with that probability, so the
markers stop predicting the label. Optional cosine learning-rate decay (after a linear warm-up),
label smoothing and an exponential moving average (EMA) of the weights, which is what is
validated and kept when ``ema_decay`` is set.

After training, the class weighting is undone (:mod:`imaging.operating_points`: ``-log
pos_weight`` added to the head's bias) before per-finding temperatures are fitted, and a
threshold per finding is chosen on validation for ``target_sensitivity`` and stored in
``model.metrics["operating_points"]``.

Augmentation (:func:`augment_batch`) is chosen for radiographs: small rotations (+-7 deg), shifts
(+-6 %), zoom (0.95-1.05), contrast/brightness/gamma jitter. **No horizontal flips by default**:
a flipped chest puts the heart on the right (dextrocardia) and mirrors the side markers, so a flip
is not a label-preserving transform for findings with laterality; pass ``horizontal_flip=True`` to
opt in.

Loss: binary cross-entropy per finding with ``pos_weight = n_negative / n_positive`` from the
training labels (class weighting), so a rare finding is not ignored. Early stopping on the mean
validation AUROC over findings; the best epoch's weights are restored, then per-finding
temperatures are fitted on the validation logits. On CUDA: mixed precision (bfloat16 autocast)
and ``channels_last``. Checkpoints (``checkpoint.pt``, tensors and plain numbers only, read back
with ``weights_only=True``) are written after every epoch and resumed with ``resume=True``.

Examples
--------
>>> import numpy as np
>>> from imaging.datasets import ImageSet
>>> from imaging.models import CXRFindingModel
>>> from imaging.train import FindingTrainer
>>> rng = np.random.default_rng(0)
>>> imgs = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8)
>>> data = ImageSet(imgs, (rng.random((16, 1)) < 0.5).astype("float32"), ("effusion",), np.arange(16))
>>> model = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
>>> tr = FindingTrainer(epochs=1, batch_size=8).fit(model, data, data)
>>> len(tr.history_)
1
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from evaluation.calibration import apply_temperature, correct_for_class_weight, fit_temperature
from imaging.augment import augment_cxr
from imaging.datasets import ImageSet
from imaging.models import CXRFindingModel, default_device
from imaging.operating_points import class_pos_weight, threshold_for_sensitivity

__all__ = ["FindingTrainer", "augment_batch", "classification_metrics", "outside_lung_share"]

log = logging.getLogger(__name__)


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, max_rotation_deg: float = 7.0,
                  max_shift: float = 0.06, zoom: tuple[float, float] = (0.95, 1.05), contrast: float = 0.15,
                  brightness: float = 0.05, gamma: float = 0.15, horizontal_flip: bool = False) -> torch.Tensor:
    """Random CXR-suitable augmentation of a batch ``(N, 1, S, S)`` in [0, 1] (see module docstring)."""
    n = x.shape[0]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = u(-max_rotation_deg, max_rotation_deg) * (math.pi / 180.0)
    scale = u(*zoom)
    flip = torch.ones(n)
    if horizontal_flip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-max_shift, max_shift) * 2], 1),
                         torch.stack([sin * flip, cos, u(-max_shift, max_shift) * 2], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    c = u(1 - contrast, 1 + contrast).to(x.device).view(n, 1, 1, 1)
    b = u(-brightness, brightness).to(x.device).view(n, 1, 1, 1)
    g = torch.exp(u(-gamma, gamma)).to(x.device).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean + b).clamp(0.0, 1.0)
    return x.pow(g)


def classification_metrics(probs, labels, findings, threshold=0.5) -> dict:
    """AUROC, accuracy, sensitivity, specificity (at ``threshold``, one or one per finding) per finding, plus their means."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(findings),))
    out: dict = {}
    for k, f in enumerate(findings):
        y, p = labels[:, k], probs[:, k]
        pred = p >= thresholds[k]
        pos, neg = y == 1, y == 0
        out[f] = {
            "auroc": float(roc_auc_score(y, p)) if pos.any() and neg.any() else float("nan"),
            "accuracy": float((pred == pos).mean()) if len(y) else float("nan"),
            "sensitivity": float(pred[pos].mean()) if pos.any() else float("nan"),
            "specificity": float((~pred[neg]).mean()) if neg.any() else float("nan"),
            "n": int(len(y)), "n_positive": int(pos.sum()), "threshold": float(thresholds[k]),
        }
    aucs = [m["auroc"] for m in out.values() if not math.isnan(m["auroc"])]
    out["mean_auroc"] = float(np.mean(aucs)) if aucs else float("nan")
    out["threshold"] = float(thresholds[0]) if len(set(thresholds.tolist())) == 1 else thresholds.tolist()
    return out


class FindingTrainer:
    """Fit a :class:`~imaging.models.CXRFindingModel` on an :class:`~imaging.datasets.ImageSet`.

    Parameters
    ----------
    epochs : int
        Maximum epochs.
    batch_size : int
    lr, weight_decay : float
        AdamW settings (peak learning rate with ``schedule="cosine"``).
    patience : int
        Stop after this many epochs without a better validation mean AUROC.
    augment : bool
        Augment training batches.
    augmentation : {"basic", "shift"}
        :func:`augment_batch` or :func:`imaging.augment.augment_cxr`.
    horizontal_flip : bool
        Include horizontal flips in ``"basic"`` augmentation (off: see module docstring; ``"shift"`` never flips).
    marker_mask_p : float
        Probability of showing a training image with its markers painted over (needs
        ``train_masked`` in :meth:`fit`).
    class_weighted : bool
        BCE ``pos_weight = n_neg / n_pos`` per finding (undone after training, see module docstring).
    schedule : {"constant", "cosine"}
        Learning rate per step; ``"cosine"`` warms up linearly over ``warmup_epochs`` then decays to 0.
    warmup_epochs : float
    label_smoothing : float
        Targets become ``y (1 - e) + e / 2``.
    ema_decay : float, optional
        Keep an exponential moving average of the weights (and BatchNorm statistics); it is what
        is validated, early-stopped and returned.
    target_sensitivity : float
        Validation sensitivity the stored threshold is chosen for.
    lung_penalty : float
        Weight of a "right for the right reasons" term (:func:`outside_lung_share`): the share of
        the class activation map (the head's weights over the last feature map, which is what
        Grad-CAM reads on these models) that lies outside the rule-based lung fields of each
        training film (:func:`imaging.lungs.lung_mask`, moved with the film by the augmentation).
        0 turns it off. Needs ``augmentation="shift"`` when augmenting.
    max_steps_per_epoch : int, optional
        Cap on optimisation steps per epoch (smoke tests, quick runs).
    checkpoint_dir : path-like, optional
        Write ``checkpoint.pt`` here after every epoch.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt`` when it exists.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    progress : bool
        Show tqdm progress bars (off in the library).
    callback : callable, optional
        Called with each epoch's history row (the CLI prints it).
    random_state : int
        Seeds initialisation-independent randomness: shuffling and augmentation.

    Attributes
    ----------
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_auroc``, ``lr``, ``seconds``, ``images_per_s``.
    best_epoch_ : int
    best_score_ : float
        Best validation mean AUROC.
    logit_offsets_ : ndarray, shape (F,)
        Prior-shift correction added to the head's bias (0 without class weighting).
    temperatures_ : ndarray, shape (F,)
    thresholds_ : ndarray, shape (F,)
        Stored decision thresholds (on calibrated probabilities).
    val_metrics_ : dict
        :func:`classification_metrics` of the calibrated model on the validation set, at ``thresholds_``.
    """

    def __init__(self, *, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4,
                 patience: int = 3, augment: bool = True, augmentation: str = "basic",
                 horizontal_flip: bool = False, marker_mask_p: float = 0.0, class_weighted: bool = True,
                 schedule: str = "constant", warmup_epochs: float = 1.0, label_smoothing: float = 0.0,
                 ema_decay: float | None = None, target_sensitivity: float = 0.95, lung_penalty: float = 0.0,
                 max_steps_per_epoch: int | None = None, checkpoint_dir: str | PathLike | None = None,
                 resume: bool = False, device=None, progress: bool = False,
                 callback: Callable[[dict], None] | None = None, random_state: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.augment = augment
        self.augmentation = augmentation
        self.horizontal_flip = horizontal_flip
        self.marker_mask_p = marker_mask_p
        self.class_weighted = class_weighted
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.label_smoothing = label_smoothing
        self.ema_decay = ema_decay
        self.target_sensitivity = target_sensitivity
        self.lung_penalty = lung_penalty
        self.max_steps_per_epoch = max_steps_per_epoch
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.device = device
        self.progress = progress
        self.callback = callback
        self.random_state = random_state

    def _val_logits(self, model, val: ImageSet, device) -> np.ndarray:
        # a focusing model's validation films were focused once in fit()
        return model.predict_logits(val.images, batch_size=max(self.batch_size, 64), device=device,
                                    focused=getattr(model, "focus", None) is not None)

    def _lr_at(self, step: int, total: int, steps_per_epoch: int) -> float:
        if self.schedule == "constant":
            return self.lr
        if self.schedule != "cosine":
            raise ValueError(f"schedule must be 'constant' or 'cosine'; got {self.schedule!r}")
        warm = max(1, int(self.warmup_epochs * steps_per_epoch))
        if step < warm:
            return self.lr * (step + 1) / warm
        return 0.5 * self.lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    def _augment(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.augmentation == "basic":
            return augment_batch(xb, gen, horizontal_flip=self.horizontal_flip)
        if self.augmentation == "shift":
            return augment_cxr(xb, gen)
        raise ValueError(f"augmentation must be 'basic' or 'shift'; got {self.augmentation!r}")

    def fit(self, model: CXRFindingModel, train: ImageSet, val: ImageSet, *,
            train_masked: np.ndarray | None = None) -> "FindingTrainer":
        """Train ``model`` in place on ``train``, early-stop and calibrate on ``val``; return self.

        ``train_masked``: ``train.images`` with markers painted over (:func:`imaging.lungs.mask_markers`),
        drawn instead of an image with probability ``marker_mask_p``.
        """
        if tuple(train.findings) != tuple(model.findings) or tuple(val.findings) != tuple(model.findings):
            raise ValueError(f"data findings {train.findings} / {val.findings} differ from model findings "
                             f"{model.findings}")
        if self.marker_mask_p > 0 and (train_masked is None or train_masked.shape != train.images.shape):
            raise ValueError("marker_mask_p > 0 needs train_masked: the training images with markers masked, "
                             "same shape as train.images")
        if getattr(model, "focus", None) is not None:
            # the lung-field focus is part of the model: the films it trains and validates on go
            # through the same deterministic crop as at inference, computed once here
            train = dataclasses.replace(train, images=model.focus_uint8(train.images))
            val = dataclasses.replace(val, images=model.focus_uint8(val.images))
            if train_masked is not None and self.marker_mask_p > 0:
                train_masked = model.focus_uint8(train_masked)
        lung_masks = None
        if self.lung_penalty > 0:
            if self.augment and self.augmentation != "shift":
                raise ValueError("lung_penalty needs augmentation='shift' (it moves the lung masks with the films)")
            from imaging.lungs import lung_mask

            # the lung fields of what the network sees (after any focus crop), once per film
            lung_masks = torch.from_numpy(np.stack([lung_mask(a) for a in train.images]).astype(np.uint8))
        device = torch.device(self.device) if self.device is not None else default_device()
        cuda = device.type == "cuda"
        model.to(device)
        if cuda:
            model.to(memory_format=torch.channels_last)
        weights = class_pos_weight(train.labels) if self.class_weighted else np.ones(len(model.findings))
        pos_weight = torch.tensor(weights, dtype=torch.float32, device=device) if self.class_weighted else None
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        ema = copy.deepcopy(model).eval() if self.ema_decay else None
        watched = ema if ema is not None else model
        ckpt = Path(self.checkpoint_dir) / "checkpoint.pt" if self.checkpoint_dir is not None else None
        history: list[dict] = []
        best_score, best_epoch, best_state, start = -math.inf, -1, None, 0
        if self.resume and ckpt is not None and ckpt.is_file():
            state = torch.load(ckpt, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            history = json.loads(state["history"])
            best_score, best_epoch = float(state["best_score"]), int(state["best_epoch"])
            best_state = state["best_model"]
            start = int(state["epoch"]) + 1
            log.info("resumed from %s at epoch %d", ckpt, start)
        n = len(train)
        steps = math.ceil(n / self.batch_size)
        if self.max_steps_per_epoch is not None:
            steps = min(steps, int(self.max_steps_per_epoch))
        images = torch.from_numpy(train.images)
        masked = torch.from_numpy(train_masked) if self.marker_mask_p > 0 else None
        labels = torch.from_numpy(train.labels)
        eps = float(self.label_smoothing)
        for epoch in range(start, self.epochs):
            if epoch - best_epoch > self.patience and best_epoch >= 0:
                break
            # seeded per epoch, so a resumed run draws the same batches as an uninterrupted one
            gen = torch.Generator().manual_seed(int(self.random_state) * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen)
            model.train()
            t0, total, seen = time.perf_counter(), 0.0, 0
            it = range(steps)
            if self.progress:
                from tqdm.auto import tqdm
                it = tqdm(it, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False)
            for s in it:
                lr = self._lr_at(epoch * steps + s, self.epochs * steps, steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                idx = order[s * self.batch_size:(s + 1) * self.batch_size]
                xb = images[idx]
                if masked is not None:
                    swap = torch.rand(len(idx), generator=gen) < self.marker_mask_p
                    xb = torch.where(swap[:, None, None], masked[idx], xb)
                xb = xb.unsqueeze(1).float().div_(255.0)
                mb = lung_masks[idx].unsqueeze(1).float() if lung_masks is not None else None
                if self.augment and mb is not None:
                    xb, mb = augment_cxr(xb, gen, masks=mb)
                elif self.augment:
                    xb = self._augment(xb, gen)
                xb, yb = xb.to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)
                if eps:
                    yb = yb * (1 - eps) + eps / 2
                if cuda:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                    if mb is None:
                        logits = model(xb)
                    else:
                        fmap = model.feature_map(xb)
                        logits = model.head(fmap.mean(dim=(2, 3)))
                loss = F.binary_cross_entropy_with_logits(logits.float(), yb, pos_weight=pos_weight)
                if mb is not None:
                    loss = loss + self.lung_penalty * outside_lung_share(fmap.float(), model.head.weight.float(),
                                                                         mb.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    _ema_update(ema, model, min(float(self.ema_decay), (1 + epoch * steps + s) / (10 + epoch * steps + s)))
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            secs = time.perf_counter() - t0
            z = self._val_logits(watched, val, device)
            score = classification_metrics(expit(z), val.labels, model.findings)["mean_auroc"]
            val_loss = float(F.binary_cross_entropy_with_logits(torch.from_numpy(z).float(),
                                                                torch.from_numpy(val.labels)))
            history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": val_loss,
                            "val_auroc": score, "lr": lr, "seconds": secs,
                            "images_per_s": seen / secs if secs > 0 else float("nan")})
            log.info("epoch %d: loss %.4f, val AUROC %.4f", epoch + 1, history[-1]["train_loss"], score)
            if self.callback is not None:
                self.callback(dict(history[-1], epochs=self.epochs))
            if score > best_score or best_state is None:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in watched.state_dict().items()}
            if ckpt is not None:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                extra = {"ema": ema.state_dict()} if ema is not None else {}
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                            "best_score": best_score, "best_epoch": best_epoch, "best_model": best_state,
                            "history": json.dumps(history), **extra}, ckpt)
        if best_state is not None:
            model.load_state_dict(best_state)
        self._calibrate(model, val, device, weights if self.class_weighted else None)
        self.history_ = history
        self.best_epoch_ = best_epoch + 1
        self.best_score_ = best_score
        model.metrics = {"validation": self.val_metrics_, "best_epoch": self.best_epoch_,
                         "history": history, "n_train": int(len(train)), "n_val": int(len(val)),
                         "logit_offsets": self.logit_offsets_.tolist(),
                         "operating_points": {f: {"threshold": float(t), "target_sensitivity": self.target_sensitivity,
                                                  "chosen_on": "validation"}
                                              for f, t in zip(model.findings, self.thresholds_)}}
        model.to("cpu", memory_format=torch.contiguous_format)
        return self

    def _calibrate(self, model: CXRFindingModel, val: ImageSet, device, pos_weight) -> None:
        """Undo class weighting in the head's bias, fit temperatures, choose thresholds (all on ``val``)."""
        offsets = np.zeros(len(model.findings))
        if pos_weight is not None:
            # the logit shift that evaluation.calibration.correct_for_class_weight applies, folded into the bias
            offsets = correct_for_class_weight(np.zeros(len(model.findings)), pos_weight)
            with torch.no_grad():
                model.head.bias.add_(torch.as_tensor(offsets, dtype=model.head.bias.dtype, device=model.head.bias.device))
        z = self._val_logits(model, val, device)
        temps = np.atleast_1d(fit_temperature(z, val.labels, bounds=(0.05, 20.0)))
        model.temperatures.copy_(torch.as_tensor(temps, dtype=torch.float32))
        probs = apply_temperature(z, temps)
        thresholds = np.array([threshold_for_sensitivity(probs[:, k], val.labels[:, k], self.target_sensitivity)
                               if val.labels[:, k].any() else 0.5 for k in range(len(model.findings))])
        self.logit_offsets_ = offsets
        self.temperatures_ = temps
        self.thresholds_ = thresholds
        self.val_metrics_ = classification_metrics(probs, val.labels, model.findings, threshold=thresholds)


def outside_lung_share(feature_map: torch.Tensor, head_weight: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean share of the class activation maps' absolute value outside the lung masks (a scalar).

    ``feature_map`` ``(N, C, h, w)``; ``head_weight`` ``(F, C)``; ``masks`` ``(N, 1, S, S)`` in
    [0, 1], averaged onto the ``h x w`` cells. The map of finding ``f`` is ``sum_c W[f, c] A_c``:
    for a head on globally pooled features it is Grad-CAM's map up to a constant, signed, so that
    neither evidence for nor evidence against a finding may come from outside the lungs.

    >>> import torch
    >>> a = torch.zeros(1, 1, 2, 2); a[0, 0, 0, 0] = 1.0          # all activation in the top-left cell
    >>> m = torch.zeros(1, 1, 4, 4); m[..., :2, :2] = 1.0         # the lung is the top-left quarter
    >>> float(outside_lung_share(a, torch.ones(1, 1), m)), float(outside_lung_share(a, torch.ones(1, 1), 1 - m))
    (0.0, 1.0)
    """
    cam = torch.einsum("nchw,fc->nfhw", feature_map, head_weight).abs()
    outside = 1.0 - F.adaptive_avg_pool2d(masks.to(cam.dtype), feature_map.shape[-2:])
    share = (cam * outside).sum(dim=(2, 3)) / cam.sum(dim=(2, 3)).clamp_min(1e-6)
    return share.mean()


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m.detach(), alpha=1 - decay)
        else:
            e.copy_(m)
