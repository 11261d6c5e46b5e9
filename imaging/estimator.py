"""The CXR finding model's estimator face: :class:`CXRFindingClassifier`, a :class:`~ehr.estimator.SepsisEstimator`.

Hyperparameters (backbone, input size, training settings) are ``__init__`` arguments; the fitted
network is ``network_`` (a :class:`~imaging.models.CXRFindingModel`, the ``nn.Module`` with
``predict_proba(images)``, ``features(images)`` and ``findings``). It saves through
:mod:`ehr.artefacts`: ``model.json`` (kind ``imaging``, checked ``format_version``) and
``model.safetensors``, whose sha256 is checked before torch reads it.

What it scores: images (anything :mod:`imaging.contract` accepts), or a table of studies with an
``image_path`` column (the ``cxr`` table; rows without a path get NaN), for which
:meth:`~ehr.estimator.SepsisEstimator.check_screens` refuses a table without ``image_path``.
:meth:`predict_proba` gives one calibrated probability per finding, ``(n, len(findings_))``.

Examples
--------
>>> import numpy as np, tempfile
>>> from imaging.datasets import ImageSet
>>> from imaging.synthetic_images import render_study
>>> y = np.arange(12) % 2
>>> imgs = np.stack([render_study({"effusion": int(v)}, seed=i, size=32) for i, v in enumerate(y)])
>>> data = ImageSet(imgs, y[:, None].astype(np.float32), ("effusion",), np.arange(12))
>>> m = CXRFindingClassifier(arch="small", image_size=32, epochs=1, batch_size=3, device="cpu").fit(data)
>>> m.findings_, m.predict_proba(imgs).shape
(('effusion',), (12, 1))
>>> back = CXRFindingClassifier.load(m.save(tempfile.mkdtemp() + "/m"))
>>> bool(np.array_equal(back.predict_proba(imgs), m.predict_proba(imgs)))
True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ehr.artefacts import model_file
from ehr.estimator import SepsisEstimator
from ehr.splits import holdout_groups
from imaging.contract import MEAN, STD
from imaging.models import CXRFindingModel

__all__ = ["CXRFindingClassifier", "training_sets"]

_WEIGHTS_FILE = "model.safetensors"
#: the column a table of studies must have (the ``cxr`` table's image reference)
IMAGE_COLUMN = "image_path"


class CXRFindingClassifier(SepsisEstimator):
    """Multi-label CXR finding classifier: a torchvision backbone trained with early stopping and calibrated.

    Parameters
    ----------
    arch : str
        One of :data:`imaging.models.ARCHS` (``"resnet18n_eq"`` is the CPU recipe's).
    findings : tuple of str, optional
        Findings to learn, in output order; default: those of the training data.
    image_size : int
        Square input size in pixels.
    epochs, batch_size, lr, weight_decay, patience, max_steps_per_epoch
        Training settings (see :class:`imaging.train.FindingTrainer`).
    augmentation, marker_mask_p, schedule, label_smoothing, ema_decay, target_sensitivity
        The #17 recipe's settings (see :class:`imaging.train.FindingTrainer`); with
        ``marker_mask_p > 0`` :meth:`fit` paints the markers over a copy of the training images
        (:func:`imaging.lungs.mask_markers`). The threshold chosen for ``target_sensitivity`` is
        stored in ``model.json`` (``state.metrics.operating_points``).
    lung_penalty : float
        Weight of the training term on activation outside the lung fields (see
        :class:`imaging.train.FindingTrainer`; 0 = off).
    focus : {None, "crop"}
        Lung-field focus of the input (:class:`imaging.models.CXRFindingModel`): part of the
        model, applied at training and inference alike and recorded in ``model.json``.
    validation_fraction : float
        Fraction of patient groups held out for early stopping and calibration when
        :meth:`fit` gets no ``validation`` set (:func:`ehr.splits.holdout_groups`).
    random_state : int
        Seeds the weight initialisation, the validation draw, shuffling and augmentation.
    device : str, optional
        Where to train (default: CUDA when available).

    Attributes
    ----------
    network_ : imaging.models.CXRFindingModel
    findings_ : tuple of str
    features_in_ : list of str
        ``["image_path"]``: the column a table of studies needs.
    thresholds_ : ndarray, shape (len(findings_),)
        Stored decision threshold per finding (chosen on validation for ``target_sensitivity``).
    history_ : list of dict
        Per-epoch training log (after :meth:`fit`).
    """

    kind = "imaging"
    format_version = 2

    def __init__(self, arch: str = "densenet121", findings: tuple[str, ...] | None = None,
                 image_size: int = 224, *, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
                 weight_decay: float = 1e-4, patience: int = 3, augmentation: str = "basic",
                 marker_mask_p: float = 0.0, schedule: str = "constant", label_smoothing: float = 0.0,
                 ema_decay: float | None = None, target_sensitivity: float = 0.95,
                 max_steps_per_epoch: int | None = None, focus: str | None = None, lung_penalty: float = 0.0,
                 validation_fraction: float = 0.2, random_state: int = 0, device: str | None = None):
        self.arch = arch
        self.focus = focus
        self.lung_penalty = lung_penalty
        self.findings = findings
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.augmentation = augmentation
        self.marker_mask_p = marker_mask_p
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.ema_decay = ema_decay
        self.target_sensitivity = target_sensitivity
        self.max_steps_per_epoch = max_steps_per_epoch
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device

    @classmethod
    def from_network(cls, network: CXRFindingModel, **params) -> "CXRFindingClassifier":
        """A fitted estimator around a trained network (e.g. one fitted by :class:`~imaging.train.FindingTrainer`)."""
        model = cls(arch=network.arch, findings=tuple(network.findings), image_size=int(network.image_size),
                    focus=network.focus, **params)
        model._set_network(network)
        return model

    def _set_network(self, network: CXRFindingModel) -> None:
        from imaging.evaluate import stored_thresholds

        self.network_ = network
        self.findings_ = tuple(network.findings)
        self.thresholds_ = stored_thresholds(network)
        self.features_in_ = [IMAGE_COLUMN]

    # ------------------------------------------------------------------ fit
    def validation_split(self, images):
        """``(train, validation)`` image sets, whole patient groups on each side."""
        tr, va = holdout_groups(images.groups, self.validation_fraction, random_state=self.random_state)
        return images.subset(tr), images.subset(va)

    def fit(self, images, labels=None, *, validation=None, checkpoint_dir=None, resume: bool = False,
            progress: bool = False, callback=None) -> "CXRFindingClassifier":
        """Train on an :class:`~imaging.datasets.ImageSet` (it carries its labels and patient groups).

        ``validation`` (an ImageSet) early-stops and calibrates; default: :meth:`validation_split`.
        ``checkpoint_dir``/``resume``/``progress``/``callback`` (called with each epoch's row) are
        passed to the trainer.
        """
        from imaging.train import FindingTrainer

        if labels is not None:
            raise TypeError("an ImageSet carries its labels: pass labels=None")
        if self.findings is not None and tuple(self.findings) != tuple(images.findings):
            raise ValueError(f"findings {tuple(self.findings)} differ from the data's {tuple(images.findings)}")
        train, val = (images, validation) if validation is not None else self.validation_split(images)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
            torch.manual_seed(self.random_state)
            network = CXRFindingModel(arch=self.arch, findings=tuple(train.findings), image_size=self.image_size,
                                      focus=self.focus)
        trainer = FindingTrainer(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                 weight_decay=self.weight_decay, patience=self.patience,
                                 augmentation=self.augmentation, marker_mask_p=self.marker_mask_p,
                                 schedule=self.schedule, label_smoothing=self.label_smoothing,
                                 ema_decay=self.ema_decay, target_sensitivity=self.target_sensitivity,
                                 lung_penalty=self.lung_penalty,
                                 max_steps_per_epoch=self.max_steps_per_epoch, checkpoint_dir=checkpoint_dir,
                                 resume=resume, device=self.device, progress=progress, callback=callback,
                                 random_state=self.random_state)
        masked = None
        if self.marker_mask_p > 0:
            from imaging.lungs import mask_markers
            masked = np.stack([mask_markers(a) for a in train.images])
        trainer.fit(network, train, val, train_masked=masked)
        self._set_network(network)
        self.history_ = trainer.history_
        self.best_epoch_ = trainer.best_epoch_
        self.val_metrics_ = trainer.val_metrics_
        return self

    # ------------------------------------------------------------------ predict
    def predict_proba(self, images, *, image_root=None, batch_size: int = 64, device=None) -> np.ndarray:
        """Calibrated probability per finding, ``(n, len(findings_))``.

        ``images``: images (see :mod:`imaging.contract`) or a table of studies with ``image_path``
        (relative paths resolved against ``image_root``; rows without a path give NaN).
        """
        if isinstance(images, pd.DataFrame):
            from imaging.scoring import finding_probabilities

            self.check_screens(images)
            return finding_probabilities(self.network_, images, image_root, batch_size=batch_size, device=device)
        self._check_fitted("network_")
        return self.network_.predict_proba(images, batch_size=batch_size, device=device)

    def features(self, images, *, batch_size: int = 64, device=None) -> np.ndarray:
        """Pooled embeddings ``(n, feature_dim)`` of the fitted network (for the fusion model)."""
        self._check_fitted("network_")
        return self.network_.features(images, batch_size=batch_size, device=device)

    def explain(self, screens):
        """Not a table: a finding is explained on the image (:func:`imaging.gradcam.save_grad_cam` on ``network_``)."""
        raise NotImplementedError("an imaging model is explained per image with Grad-CAM "
                                  "(imaging.gradcam.save_grad_cam(model.network_, ...))")

    def predictions(self, screens, **kwargs):
        """Not available: an imaging model scores findings, not sepsis risk."""
        raise TypeError("an imaging model scores findings, not the risk of sepsis; add its probabilities "
                        "to the cxr table with imaging.score_cxr_table (they enter the CPN as evidence)")

    # ------------------------------------------------------------------ artefacts
    def _config(self) -> dict:
        config = self.get_params(deep=False)
        config["device"] = None if config["device"] is None else str(config["device"])
        return config

    @classmethod
    def _config_from_json(cls, config: dict) -> dict:
        findings = config.get("findings")
        return {**config, "findings": None if findings is None else tuple(findings)}

    def _write_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
        save_file(state, str(directory / _WEIGHTS_FILE))
        # safetensors creates its file 0600; give it the mode every other file of the folder gets (umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(directory / _WEIGHTS_FILE, 0o666 & ~umask)

    def _state(self) -> dict:
        net = self.network_
        return {"findings": list(self.findings_), "feature_dim": net.feature_dim,
                "temperatures": [float(t) for t in net.temperatures.cpu()], "metrics": net.metrics,
                "input_contract": {"channels": 1, "value_range": [0.0, 1.0], "uint8_scaled_by": 255,
                                   "normalisation": {"mean": MEAN, "std": STD}}}

    def _restore(self, directory: Path, meta: dict) -> None:
        state = meta["state"]
        network = CXRFindingModel(arch=self.arch, findings=tuple(state["findings"]), image_size=int(self.image_size),
                                  focus=self.focus)
        network.load_weights(model_file(directory, meta, _WEIGHTS_FILE))
        network.metrics = state.get("metrics", {})
        network.eval()
        self._set_network(network)


def training_sets(data, *, image_size: int, findings=None, split: str | None = "train", limit: int | None = None,
                  model: CXRFindingClassifier, progress: bool = False):
    """The ``(train, validation)`` image sets of a labelled folder or a MedMNIST-style ``.npz``.

    An ``.npz`` with a ``val`` split keeps it; otherwise ``model.validation_split`` holds out
    whole patient groups. ``split``/``limit`` select rows of a folder's ``labels.csv``.
    """
    from imaging.datasets import read_image_folder, read_npz

    data = Path(data)
    if data.suffix == ".npz":
        train = read_npz(data, split="train", image_size=image_size, findings=findings)
        try:
            return train, read_npz(data, split="val", image_size=image_size, findings=findings)
        except KeyError:
            return model.validation_split(train)
    full = read_image_folder(data, image_size, findings=findings, split=split or None, limit=limit,
                             progress=progress)
    return model.validation_split(full)
