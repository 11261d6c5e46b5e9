"""Grad-CAM (Selvaraju et al. 2017) heatmaps for any finding, PNG overlays, and the lung-heat check.

The maps come from the maintained ``grad-cam`` package (``pytorch_grad_cam``: Grad-CAM,
Grad-CAM++, Score-CAM, ... on any layer). The layer is the last one of the trunk whose map is
at least :data:`MIN_MAP_SIDE` pixels on a side (14 x 14 for the narrow ResNets at 224 px, the
second-to-last stage of DenseNet-121 or the "small" CNN), because the last 4 x 4 or 7 x 7 maps
are too coarse to tell a lung from the heart next to it. Maps are upsampled (bilinear) to the
input resolution and scaled to [0, 1] per image.

:func:`lung_heat_fraction` is the quantitative check: over a set of films, the share of each
map's heat inside the rule-based lung fields (:func:`imaging.lungs.lung_mask`) and inside the
film markers.

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
import torch.nn as nn
from PIL import Image

from imaging.contract import prepare_images

__all__ = ["MIN_MAP_SIDE", "METHODS", "grad_cam", "grad_cams", "target_layer", "lung_heat_fraction",
           "overlay_heatmap", "save_grad_cam"]

#: Smallest side (in feature-map cells) of the layer Grad-CAM reads.
MIN_MAP_SIDE = 8
#: CAM methods offered (names of ``pytorch_grad_cam`` classes).
METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "scorecam": "ScoreCAM", "xgradcam": "XGradCAM"}


def target_layer(model, *, return_side: bool = False):
    """The last trunk module (in execution order) whose output map is at least :data:`MIN_MAP_SIDE` on a side.

    Falls back to the whole trunk when every map is smaller (tiny inputs).
    """
    candidates = [model.trunk] + [child for seq in model.trunk.modules() if isinstance(seq, nn.Sequential)
                                  for child in seq.children()]
    finished: list[tuple[nn.Module, int]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: finished.append((mod, out.shape[-1]))
                                     if isinstance(out, torch.Tensor) and out.ndim == 4 and out.requires_grad else None)
             for m in candidates]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            s = int(model.image_size)
            # the input joins the graph, so a trunk without parameters before the layer still counts
            model(torch.full((1, 1, s, s), 0.5, device=next(model.parameters()).device, requires_grad=True))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    fine = [(mod, side) for mod, side in finished if side >= MIN_MAP_SIDE]
    mod, side = fine[-1] if fine else (finished[-1] if finished else (model.trunk, 0))
    return (mod, side) if return_side else mod


def grad_cams(model, images, finding: str, *, method: str = "gradcam", layer: nn.Module | None = None,
              batch_size: int = 16, device=None) -> np.ndarray:
    """Heatmaps ``(N, S, S)`` in [0, 1] of ``finding`` for images (array ``(N, H, W)`` or file paths).

    ``S`` is ``model.image_size``; the maps lie on the film resized to ``S`` (for a model with
    lung-field focus, the map of the crop is mapped back onto the film, zero outside the crop).
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if finding not in model.findings:
        raise KeyError(f"finding {finding!r} is not one of the model's findings {model.findings}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}; got {method!r}")
    k = model.findings.index(finding)
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    # a lung-focused model sees a crop of the film: its maps are placed back onto the film
    # (zero outside the crop), so every map is in the film's coordinates at image_size
    focus = getattr(model, "focus", None)
    x, boxes = model.focus_images(images) if focus is not None else (prepare_images(images, int(model.image_size)),
                                                                      None)
    layer = target_layer(model) if layer is None else layer
    was_training = model.training
    model.eval()
    out = []
    try:
        with getattr(pytorch_grad_cam, METHODS[method])(model=model, target_layers=[layer]) as cam:
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size].to(device).requires_grad_(True)
                out.append(cam(input_tensor=xb, targets=[ClassifierOutputTarget(k)] * len(xb)))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    heat = np.clip(np.concatenate(out), 0.0, None)
    if boxes is not None:
        from imaging.lungs import paste_back

        side = int(model.image_size)
        heat = np.clip(np.stack([paste_back(h, b, (side, side)) for h, b in zip(heat, boxes)]), 0.0, None)
    # the package divides by (max + 1e-7); rescale so a non-empty map peaks at exactly 1
    top = heat.reshape(len(heat), -1).max(axis=1)
    heat = np.where(top[:, None, None] > 0, heat / np.maximum(top, 1e-30)[:, None, None], 0.0)
    return heat.astype(np.float32)


def grad_cam(model, image, finding: str, *, method: str = "gradcam", device=None) -> np.ndarray:
    """Grad-CAM heatmap ``(S, S)`` in [0, 1] of ``finding`` for one image (array or file path).

    ``S`` is ``model.image_size``. An all-zero map means no region pushes the logit up.
    """
    src = image
    if not isinstance(image, (str, PathLike)):
        src = image if isinstance(image, torch.Tensor) else np.asarray(image)
        if src.ndim == 2:
            src = src[None]
    return grad_cams(model, src, finding, method=method, device=device)[0]


def lung_heat_fraction(model, images, finding: str, *, labels=None, method: str = "gradcam") -> dict:
    """Share of Grad-CAM heat inside the lung fields and inside the markers, over uint8 films ``(N, S, S)``.

    Returns the mean (and median) lung fraction over all films and, with 0/1 ``labels`` for
    ``finding``, separately for positive and negative films; ``marker`` is the mean share on
    marker pixels; ``template_masks`` counts films whose lung mask fell back to the template;
    ``*_unmirrored`` are the lung shares against the mask without mirror completion
    (``lung_mask(..., mirror=False)``), the mask the first #17 figures used.
    """
    from imaging.lungs import heat_fraction_inside, lung_mask, marker_mask

    images = np.asarray(images)
    heat = grad_cams(model, images, finding, method=method)
    lung, plain, marker, template = [], [], [], 0
    for img, h in zip(images, heat):
        mask, how = lung_mask(img, return_method=True)
        template += how == "template"
        lung.append(heat_fraction_inside(h, mask))
        plain.append(heat_fraction_inside(h, lung_mask(img, mirror=False)))
        marker.append(heat_fraction_inside(h, marker_mask(img)))
    lung, plain, marker = np.array(lung), np.array(plain), np.array(marker)
    out = {"n": int(len(images)), "lung_mean": float(np.nanmean(lung)), "lung_median": float(np.nanmedian(lung)),
           "marker_mean": float(np.nanmean(marker)), "lung_mask_area_mean":
           float(np.mean([lung_mask(img).mean() for img in images[:50]])), "template_masks": int(template),
           "empty_maps": int(np.isnan(lung).sum()), "lung_mean_unmirrored": float(np.nanmean(plain)),
           "layer_map_side": int(target_layer(model, return_side=True)[1]), "method": method}
    if labels is not None:
        y = np.asarray(labels).ravel().astype(bool)
        out["lung_mean_positive"] = float(np.nanmean(lung[y])) if y.any() else float("nan")
        out["lung_mean_negative"] = float(np.nanmean(lung[~y])) if (~y).any() else float("nan")
        out["lung_mean_positive_unmirrored"] = float(np.nanmean(plain[y])) if y.any() else float("nan")
    return out


def overlay_heatmap(image, heatmap: np.ndarray, *, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heatmap (colour-mapped) over a grayscale image, at the image's resolution; ``uint8 (H, W, 3)``.

    A heatmap of another size is resized (bilinear) to the image; only its strong parts tint.
    """
    from matplotlib import colormaps

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if img.shape != heatmap.shape:
        heatmap = np.clip(np.asarray(Image.fromarray(heatmap).resize(img.shape[::-1], Image.BILINEAR)),
                          0.0, 1.0)
    gray = np.repeat(img[..., None].astype(np.float64) / 255.0, 3, axis=2)
    colour = colormaps[cmap](heatmap)[..., :3]
    a = alpha * heatmap[..., None]  # weight by the heat itself so cold areas keep the radiograph
    return np.clip(np.round(((1 - a) * gray + a * colour) * 255.0), 0, 255).astype(np.uint8)


def save_grad_cam(model, image, finding: str, out_path: str | PathLike, *, alpha: float = 0.5,
                  method: str = "gradcam") -> np.ndarray:
    """Compute Grad-CAM for ``finding`` on ``image`` (path or array) and save the overlay PNG.

    Returns the heatmap at the model's ``image_size``. The PNG is at the input image's own
    resolution: the map is upsampled onto the original film, not the film shrunk to the map.
    """
    from imaging.contract import load_image

    arr = load_image(image) if isinstance(image, (str, PathLike)) else np.asarray(image)
    heat = grad_cam(model, arr, finding, method=method)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_heatmap(arr, heat, alpha=alpha)).save(out_path)
    return heat
