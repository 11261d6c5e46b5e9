"""Training the CXR finding model: class-weighted BCE, CXR augmentation, AdamW, early stopping.

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

import json
import logging
import math
import time
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from evaluation.calibration import apply_temperature, fit_temperature
from imaging.datasets import ImageSet
from imaging.models import CXRFindingModel, default_device

__all__ = ["FindingTrainer", "augment_batch", "classification_metrics"]

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


def classification_metrics(probs, labels, findings, threshold: float = 0.5) -> dict:
    """AUROC, accuracy, sensitivity, specificity (at ``threshold``) per finding, plus their means."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    out: dict = {}
    for k, f in enumerate(findings):
        y, p = labels[:, k], probs[:, k]
        pred = p >= threshold
        pos, neg = y == 1, y == 0
        out[f] = {
            "auroc": float(roc_auc_score(y, p)) if pos.any() and neg.any() else float("nan"),
            "accuracy": float((pred == pos).mean()) if len(y) else float("nan"),
            "sensitivity": float(pred[pos].mean()) if pos.any() else float("nan"),
            "specificity": float((~pred[neg]).mean()) if neg.any() else float("nan"),
            "n": int(len(y)), "n_positive": int(pos.sum()),
        }
    aucs = [m["auroc"] for m in out.values() if not math.isnan(m["auroc"])]
    out["mean_auroc"] = float(np.mean(aucs)) if aucs else float("nan")
    out["threshold"] = threshold
    return out


class FindingTrainer:
    """Fit a :class:`~imaging.models.CXRFindingModel` on an :class:`~imaging.datasets.ImageSet`.

    Parameters
    ----------
    epochs : int
        Maximum epochs.
    batch_size : int
    lr, weight_decay : float
        AdamW settings.
    patience : int
        Stop after this many epochs without a better validation mean AUROC.
    augment : bool
        Apply :func:`augment_batch` to training batches.
    horizontal_flip : bool
        Include horizontal flips in augmentation (off: see module docstring).
    class_weighted : bool
        BCE ``pos_weight = n_neg / n_pos`` per finding.
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
    random_state : int
        Seeds initialisation-independent randomness: shuffling and augmentation.

    Attributes
    ----------
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_auroc``, ``seconds``, ``images_per_s``.
    best_epoch_ : int
    best_score_ : float
        Best validation mean AUROC.
    temperatures_ : ndarray, shape (F,)
    val_metrics_ : dict
        :func:`classification_metrics` of the calibrated model on the validation set.
    """

    def __init__(self, *, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4,
                 patience: int = 3, augment: bool = True, horizontal_flip: bool = False,
                 class_weighted: bool = True, max_steps_per_epoch: int | None = None,
                 checkpoint_dir: str | PathLike | None = None, resume: bool = False, device=None,
                 progress: bool = False, random_state: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.augment = augment
        self.horizontal_flip = horizontal_flip
        self.class_weighted = class_weighted
        self.max_steps_per_epoch = max_steps_per_epoch
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.device = device
        self.progress = progress
        self.random_state = random_state

    def _val_logits(self, model, val: ImageSet, device) -> np.ndarray:
        return model.predict_logits(val.images, batch_size=max(self.batch_size, 64), device=device)

    def fit(self, model: CXRFindingModel, train: ImageSet, val: ImageSet) -> "FindingTrainer":
        """Train ``model`` in place on ``train``, early-stop and calibrate on ``val``; return self."""
        if tuple(train.findings) != tuple(model.findings) or tuple(val.findings) != tuple(model.findings):
            raise ValueError(f"data findings {train.findings} / {val.findings} differ from model findings "
                             f"{model.findings}")
        device = torch.device(self.device) if self.device is not None else default_device()
        cuda = device.type == "cuda"
        model.to(device)
        if cuda:
            model.to(memory_format=torch.channels_last)
        y = train.labels
        if self.class_weighted:
            n_pos = y.sum(axis=0)
            pos_weight = torch.tensor(np.where(n_pos > 0, (len(y) - n_pos) / np.maximum(n_pos, 1), 1.0),
                                      dtype=torch.float32, device=device)
        else:
            pos_weight = None
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        ckpt = Path(self.checkpoint_dir) / "checkpoint.pt" if self.checkpoint_dir is not None else None
        history: list[dict] = []
        best_score, best_epoch, best_state, start = -math.inf, -1, None, 0
        if self.resume and ckpt is not None and ckpt.is_file():
            state = torch.load(ckpt, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
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
        labels = torch.from_numpy(train.labels)
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
                idx = order[s * self.batch_size:(s + 1) * self.batch_size]
                xb = images[idx].unsqueeze(1).float().div_(255.0)
                if self.augment:
                    xb = augment_batch(xb, gen, horizontal_flip=self.horizontal_flip)
                xb, yb = xb.to(device, non_blocking=True), labels[idx].to(device, non_blocking=True)
                if cuda:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                    logits = model(xb)
                loss = F.binary_cross_entropy_with_logits(logits.float(), yb, pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            secs = time.perf_counter() - t0
            z = self._val_logits(model, val, device)
            score = classification_metrics(expit(z), val.labels, model.findings)["mean_auroc"]
            history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_auroc": score,
                            "seconds": secs, "images_per_s": seen / secs if secs > 0 else float("nan")})
            log.info("epoch %d: loss %.4f, val AUROC %.4f", epoch + 1, history[-1]["train_loss"], score)
            if score > best_score or best_state is None:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if ckpt is not None:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                            "best_score": best_score, "best_epoch": best_epoch, "best_model": best_state,
                            "history": json.dumps(history)}, ckpt)
        if best_state is not None:
            model.load_state_dict(best_state)
        z = self._val_logits(model, val, device)
        temps = fit_temperature(z, val.labels, bounds=(0.05, 20.0))
        model.temperatures.copy_(torch.as_tensor(temps, dtype=torch.float32))
        self.history_ = history
        self.best_epoch_ = best_epoch + 1
        self.best_score_ = best_score
        self.temperatures_ = temps
        self.val_metrics_ = classification_metrics(apply_temperature(z, temps), val.labels, model.findings)
        model.metrics = {"validation": self.val_metrics_, "best_epoch": self.best_epoch_,
                         "history": history, "n_train": int(len(train)), "n_val": int(len(val))}
        model.to("cpu", memory_format=torch.contiguous_format)
        return self
