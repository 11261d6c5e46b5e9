"""Grad-CAM (Selvaraju et al. 2017) heatmaps for any finding, and PNG overlays.

The heatmap is ReLU(sum_k alpha_k A_k) over the last convolutional feature map A, with
alpha_k the spatially averaged gradient of the finding's logit, upsampled to the input size and
scaled to [0, 1].

Examples
--------
>>> import numpy as np
>>> from imaging.models import CXRFindingModel
>>> from imaging.gradcam import grad_cam
>>> m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
>>> img = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
>>> h = grad_cam(m, img, "effusion")
>>> h.shape, bool(h.min() >= 0 and h.max() <= 1)
((32, 32), True)
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from imaging.contract import prepare_images

__all__ = ["grad_cam", "overlay_heatmap", "save_grad_cam"]


def grad_cam(model, image, finding: str, *, device=None) -> np.ndarray:
    """Grad-CAM heatmap ``(S, S)`` in [0, 1] of ``finding`` for one image (array or file path).

    ``S`` is ``model.image_size``. An all-zero map means no region pushes the logit up.
    """
    if finding not in model.findings:
        raise KeyError(f"finding {finding!r} is not one of the model's findings {model.findings}")
    k = model.findings.index(finding)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    src = image
    if not isinstance(image, (str, PathLike)):
        src = image if isinstance(image, torch.Tensor) else np.asarray(image)
        if src.ndim == 2:
            src = src[None]
    # the input joins the graph so that a feature map holding no parameters still gets a gradient
    x = prepare_images(src, int(model.image_size))[:1].to(device).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            fmap = model.feature_map(x)
            fmap.retain_grad()
            logit = model.head(fmap.mean(dim=(2, 3)))[0, k]
            model.zero_grad(set_to_none=True)
            logit.backward()
            weights = fmap.grad.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * fmap).sum(dim=1, keepdim=True)).detach()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(cam.max())
    cam = cam / top if top > 0 else cam
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32)


def overlay_heatmap(image, heatmap: np.ndarray, *, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heatmap (colour-mapped) over a grayscale image; ``uint8 (S, S, 3)``.

    The image is resized to the heatmap's size; only the heatmap's strong parts are tinted.
    """
    from matplotlib import colormaps

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    if img.shape != heatmap.shape:
        img = np.asarray(Image.fromarray(img).resize(heatmap.shape[::-1], Image.BILINEAR))
    gray = np.repeat(img[..., None].astype(np.float64) / 255.0, 3, axis=2)
    colour = colormaps[cmap](heatmap)[..., :3]
    a = alpha * heatmap[..., None]  # weight by the heat itself so cold areas keep the radiograph
    return np.clip(np.round(((1 - a) * gray + a * colour) * 255.0), 0, 255).astype(np.uint8)


def save_grad_cam(model, image, finding: str, out_path: str | PathLike, *, alpha: float = 0.5) -> np.ndarray:
    """Compute Grad-CAM for ``finding`` on ``image`` (path or array) and save the overlay PNG.

    Returns the heatmap. The PNG shows the image as the model saw it (``image_size`` square).
    """
    from imaging.contract import load_image, resize_uint8

    arr = load_image(image) if isinstance(image, (str, PathLike)) else np.asarray(image)
    heat = grad_cam(model, arr, finding)
    if arr.dtype == np.uint8:
        arr = resize_uint8(arr, int(model.image_size))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_heatmap(arr, heat, alpha=alpha)).save(out_path)
    return heat
