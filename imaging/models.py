"""The CXR finding model: a torchvision backbone (random init, no downloads) + multi-label head.

Saved as a directory through the estimator face (:class:`imaging.estimator.CXRFindingClassifier`,
:mod:`ehr.artefacts`): ``model.json`` (kind ``imaging``, checked ``format_version``, arch, findings,
image_size, temperatures, metrics) + ``model.safetensors`` (weights, sha256-checked before torch
reads them). Never pickled.

Examples
--------
>>> import numpy as np
>>> from imaging.models import CXRFindingModel
>>> m = CXRFindingModel(arch="small", findings=("consolidation", "effusion"), image_size=32)
>>> x = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
>>> list(m.predict_findings(x).columns)
['consolidation', 'effusion']
>>> m.features(x).shape
(3, 128)
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from scipy.special import expit

from ehr.schema import CXR_FINDINGS
from imaging.architectures import TRUNKS, build_trunk
from imaging.contract import MEAN, STD, prepare_images

__all__ = ["ARCHS", "FOCUS", "CXRFindingModel", "default_device"]

log = logging.getLogger(__name__)

#: Backbones offered; all start from random weights (the project downloads nothing). The narrow
#: ResNets (``imaging.architectures``) are the CPU recipe's.
ARCHS = ("densenet121", "resnet18", "resnet34", "small", *TRUNKS)
#: Lung-field focus of the input (:meth:`CXRFindingModel.focus_images`): None (the whole film) or
#: ``"crop"`` (the thoracic box of :func:`imaging.lungs.thoracic_box`, resized to the input size).
FOCUS = (None, "crop")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _conv_bn(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _build_trunk(arch: str) -> tuple[nn.Module, int]:
    """A convolutional trunk taking ``(N, 1, S, S)`` and returning a feature map, and its channel count."""
    import torchvision.models as tvm

    if arch in TRUNKS:
        return build_trunk(arch)
    if arch == "densenet121":
        net = tvm.densenet121(weights=None)
        # one input channel from the start (not a replicated grayscale image): 1/3 of the first-layer cost
        net.features.conv0 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # torchvision applies ReLU after norm5 in forward(); the trunk has to carry it (not in-place: Grad-CAM)
        return nn.Sequential(net.features, nn.ReLU(inplace=False)), 1024
    if arch in ("resnet18", "resnet34"):
        net = getattr(tvm, arch)(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                             net.layer1, net.layer2, net.layer3, net.layer4), 512
    if arch == "small":
        # CPU-friendly: ~0.3 M parameters, 5 stride-2 stages (128 px -> 4 x 4 map)
        return nn.Sequential(_conv_bn(1, 16, 2), _conv_bn(16, 32, 2), _conv_bn(32, 32, 1),
                             _conv_bn(32, 64, 2), _conv_bn(64, 64, 1), _conv_bn(64, 128, 2),
                             _conv_bn(128, 128, 1), _conv_bn(128, 128, 2)), 128
    raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


class CXRFindingModel(nn.Module):
    """Multi-label chest X-ray finding model.

    Parameters
    ----------
    arch : {"densenet121", "resnet18", "resnet34", "small"}
        Backbone, built with random weights (``weights=None`` in torchvision: no downloads).
    findings : tuple of str
        Ordered finding names; outputs follow this order (``dict(zip(model.findings, probs))``).
    image_size : int
        Square input size; inputs of other sizes are resized (see :mod:`imaging.contract`).
    weights : path-like, optional
        Local ``.safetensors`` or ``torch.save(state_dict)`` file (read with ``weights_only=True``).
    focus : {None, "crop"}
        Lung-field focus, part of the model (saved in ``model.json``): with ``"crop"`` every
        film is cut to its thoracic box (the rule-based lung fields plus a margin,
        :func:`imaging.lungs.focus_crop`) and resized to ``image_size`` before the network sees
        it, in training and at inference alike, so that markers, the neck and the abdomen are
        out of view. Grad-CAM maps are placed back onto the film (:mod:`imaging.gradcam`).

    Attributes
    ----------
    feature_dim : int
        Embedding size of :meth:`features` (1024 for DenseNet-121, 512 for ResNets, 128 for "small").
    temperatures : Tensor, shape (F,)
        Per-finding temperature applied to logits in :meth:`predict_proba` (1 until calibrated).
    metrics : dict
        Validation metrics recorded by training (saved in ``model.json``).

    Examples
    --------
    >>> m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
    >>> m.findings, m.feature_dim
    (('effusion',), 128)
    """

    def __init__(self, arch: str = "densenet121", findings: tuple[str, ...] = CXR_FINDINGS,
                 image_size: int = 224, weights: str | PathLike | None = None, focus: str | None = None):
        super().__init__()
        if focus not in FOCUS:
            raise ValueError(f"focus must be one of {FOCUS}; got {focus!r}")
        self.arch = arch
        self.focus = focus
        self.findings = tuple(findings)  # ordered output names; a tuple whatever sequence came in
        self.image_size = image_size
        self.weights = weights
        names = tuple(findings)
        if not names or len(set(names)) != len(names) or not all(isinstance(f, str) and f for f in names):
            raise ValueError(f"findings must be a non-empty tuple of unique names; got {findings!r}")
        if int(image_size) < 16:
            raise ValueError(f"image_size must be >= 16; got {image_size}")
        self.trunk, self.feature_dim = _build_trunk(arch)
        self.head = nn.Linear(self.feature_dim, len(names))
        self.register_buffer("temperatures", torch.ones(len(names)))
        self.metrics: dict = {}
        if weights is not None:
            self.load_weights(weights)

    # -- forward passes -------------------------------------------------------------------------
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature map for ``x`` in [0, 1] ``(N, 1, S, S)`` (used by Grad-CAM)."""
        return self.trunk((x - MEAN) / STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits ``(N, F)`` for images ``x`` in [0, 1], shape ``(N, 1, S, S)``."""
        return self.head(self.feature_map(x).mean(dim=(2, 3)))

    def focus_images(self, images) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
        """What the network sees: ``(x, boxes)``, ``x`` float ``(N, 1, S, S)`` in [0, 1].

        Without focus, ``x`` is :func:`imaging.contract.prepare_images` and each box the whole
        film. With ``focus="crop"`` each film (at ``image_size``, as uint8) is cut to its thoracic
        box and resized back to ``image_size``; ``boxes`` are ``(top, bottom, left, right)`` in
        the film's ``image_size`` coordinates (for mapping saliency back).
        """
        s = int(self.image_size)
        x = prepare_images(images, s)
        if self.focus is None:
            return x, [(0, s, 0, s)] * len(x)
        from imaging.lungs import focus_crop

        films = (x[:, 0] * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
        crops, boxes = zip(*(focus_crop(f, s) for f in films)) if len(films) else ((), ())
        out = torch.from_numpy(np.stack(crops))[:, None].float() / 255.0 if crops else x
        return out, list(boxes)

    def focus_uint8(self, images, *, batch_size: int = 256) -> np.ndarray:
        """:meth:`focus_images` of uint8 films, as uint8 ``(N, S, S)`` (what the trainer stores once)."""
        out = [(self.focus_images(images[i:i + batch_size])[0][:, 0] * 255.0).round_().clamp_(0, 255)
               .to(torch.uint8).numpy() for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.asarray(images)

    def _batches(self, images, batch_size: int, device, focused: bool = False):
        if self.focus is not None and not focused:
            x = self.focus_images(images)[0]
        else:
            x = prepare_images(images, int(self.image_size))
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            if device.type == "cuda":
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb

    @torch.no_grad()
    def _run(self, images, fn, batch_size: int, device, focused: bool = False) -> np.ndarray:
        if device is not None:
            self.to(device)  # the model follows an explicit device (weights and inputs must share one)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            outs = [fn(xb).float().cpu() for xb in self._batches(images, batch_size, device, focused)]
        finally:
            self.train(was_training)
        return torch.cat(outs).numpy() if outs else np.empty((0,))

    def predict_logits(self, images, *, batch_size: int = 64, device=None, focused: bool = False) -> np.ndarray:
        """Raw (uncalibrated) logits, ``(N, F)``.

        ``images``: array/tensor (see :mod:`imaging.contract`) or list of file paths. ``device``
        moves the model there first; by default it runs where the model is. ``focused``: the
        images already went through :meth:`focus_images` (the trainer focuses once, up front).
        """
        return self._run(images, self.forward, batch_size, device, focused)

    def predict_proba(self, images, *, batch_size: int = 64, device=None) -> np.ndarray:
        """Calibrated probabilities ``sigmoid(logit / T)``, ``(N, F)``."""
        t = self.temperatures.detach().cpu().numpy()
        z = self.predict_logits(images, batch_size=batch_size, device=device)
        return expit(z / t)

    def predict_findings(self, images, *, batch_size: int = 64, device=None) -> pd.DataFrame:
        """Calibrated probabilities as a DataFrame, one column per finding (in ``findings`` order)."""
        return pd.DataFrame(self.predict_proba(images, batch_size=batch_size, device=device),
                            columns=list(self.findings))

    def features(self, images, *, batch_size: int = 64, device=None) -> np.ndarray:
        """Pooled embeddings ``(N, feature_dim)`` (1024-D for DenseNet-121), for the fusion model."""
        return self._run(images, lambda xb: self.feature_map(xb).mean(dim=(2, 3)), batch_size, device)

    def split_last_block(self) -> tuple[nn.Sequential, nn.Module]:
        """``(frozen, block)``: the trunk before its last block, and that block (modules shared with the trunk).

        ``block(frozen((x - MEAN) / STD))`` is :meth:`feature_map` of ``x``. The last block is the
        last residual block for the ResNets (``resnet18``/``34``, the narrow ``resnet18n*``), the
        last convolution stage of ``small``, and the fourth dense block with the final norm and ReLU
        for ``densenet121``. The fusion models fine-tune ``block`` and keep ``frozen`` fixed
        (:mod:`fusion.networks`, ``FinetunedImages``).

        >>> m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32).eval()
        >>> frozen, block = m.split_last_block()
        >>> x = torch.rand(2, 1, 32, 32)
        >>> bool(torch.allclose(block(frozen((x - MEAN) / STD)), m.feature_map(x)))
        True
        """
        trunk = self.trunk
        if self.arch == "densenet121":
            features, relu = trunk[0], trunk[1]
            return nn.Sequential(*list(features)[:-2]), nn.Sequential(*list(features)[-2:], relu)
        if self.arch == "small":
            return nn.Sequential(*list(trunk)[:-1]), trunk[-1]
        # the ResNets: the last child is the last stage, a Sequential of residual blocks
        stage = trunk[-1]
        return nn.Sequential(*list(trunk)[:-1], *list(stage)[:-1]), stage[-1]

    # -- persistence ----------------------------------------------------------------------------
    def load_weights(self, path: str | PathLike) -> "CXRFindingModel":
        """Load a local ``.safetensors`` or ``torch.save(state_dict)`` file (never unpickles objects)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found (local files only; nothing is downloaded)")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
                state = state["model"]  # a training checkpoint
        where = f"{path}: weights do not fit arch={self.arch!r} with {len(self.findings)} finding(s)"
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ValueError(f"{where}: {str(exc).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise ValueError(f"{where}: missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
        return self

    def save(self, directory: str | PathLike) -> Path:
        """Write ``model.json`` + ``model.safetensors`` into ``directory`` (atomically); return the directory."""
        from imaging.estimator import CXRFindingClassifier

        return CXRFindingClassifier.from_network(self).save(directory)

    @classmethod
    def load(cls, directory: str | PathLike, *, device=None) -> "CXRFindingModel":
        """Load a model directory written by :meth:`save` (kind and format version checked)."""
        from imaging.estimator import CXRFindingClassifier

        model = CXRFindingClassifier.load(directory).network_
        return model.to(device) if device is not None else model
