"""Acquisition-shift augmentation for radiographs, and the fixed shifts used to test a model.

:func:`augment_cxr` simulates what changes between sites and machines: positioning (small
rotations, shifts, zoom/crop), exposure and processing (contrast, brightness, gamma), sharpness
(Gaussian blur) and detector noise. **It never flips**: a mirrored chest puts the heart on the
right and moves the side marker, so a flip does not preserve the label of a lateralised finding.

:data:`SHIFTS` / :func:`apply_shift` are deterministic transforms *outside* the training ranges
(gamma 0.5 and 2.0 against the training's 0.74-1.35, contrast 0.5 against 0.7-1.3, histogram
equalisation, stronger blur with noise, a zoomed-out film): validating on them is the project's
proxy for an unseen site. ``markers_masked`` (side markers and text painted over, see
:mod:`imaging.lungs`) is applied to uint8 images by the caller, because it is not a tone map.

Examples
--------
>>> import torch
>>> from imaging.augment import augment_cxr
>>> x = torch.rand(4, 1, 32, 32)
>>> y = augment_cxr(x, torch.Generator().manual_seed(0))
>>> y.shape == x.shape and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["augment_cxr", "SHIFTS", "apply_shift", "gaussian_blur"]


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``(N, 1, H, W)`` with its own Gaussian ``sigma`` (pixels, shape ``(N,)``)."""
    n = x.shape[0]
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.to(x)[:, None].clamp_min(1e-3)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (N, K)
    # grouped convolution: image i with kernel i, separably
    y = F.pad(x.transpose(0, 1), (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=n)
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, k[:, None, :, None], groups=n)
    return y.transpose(0, 1)


def augment_cxr(x: torch.Tensor, generator: torch.Generator, *, max_rotation_deg: float = 10.0,
                max_shift: float = 0.06, zoom: tuple[float, float] = (0.9, 1.15), contrast: float = 0.3,
                brightness: float = 0.05, gamma: float = 0.3, blur_p: float = 0.3,
                blur_sigma: tuple[float, float] = (0.3, 1.2), noise_p: float = 0.3,
                noise_std: float = 0.03, masks: torch.Tensor | None = None):
    """Random acquisition-shift augmentation of ``(N, 1, S, S)`` images in [0, 1]; never flips.

    With ``masks`` (``(N, 1, S, S)`` in [0, 1], e.g. lung fields) returns ``(images, masks)``,
    the masks moved by the same rotation, shift and zoom (and nothing else), so that a mask
    still covers its structure after augmentation.

    Parameters
    ----------
    max_rotation_deg, max_shift, zoom
        Uniform rotation in +-degrees, translation in +- fraction of the side, scale range
        (above 1 crops in, below 1 zooms out with the border pixels repeated).
    contrast, brightness, gamma
        Contrast factor in ``1 +- contrast`` about the image mean, additive brightness in
        ``+- brightness``, gamma ``exp(u)`` with ``u`` in ``+- gamma``.
    blur_p, blur_sigma
        Probability of a Gaussian blur, and its sigma range in pixels at 224 px (scaled with S).
    noise_p, noise_std
        Probability of additive Gaussian noise, and its largest standard deviation.
    """
    n, s = x.shape[0], x.shape[-1]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = u(-max_rotation_deg, max_rotation_deg) * (math.pi / 180.0)
    scale = u(*zoom)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, u(-max_shift, max_shift) * 2], 1),
                         torch.stack([sin, cos, u(-max_shift, max_shift) * 2], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(masks.to(x), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    c = u(1 - contrast, 1 + contrast).to(x).view(n, 1, 1, 1)
    b = u(-brightness, brightness).to(x).view(n, 1, 1, 1)
    g = torch.exp(u(-gamma, gamma)).to(x).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean + b).clamp(0.0, 1.0).pow(g)
    blur = torch.rand(n, generator=generator) < blur_p
    if blur.any():
        sig = u(*blur_sigma)[blur] * (s / 224)
        x[blur] = gaussian_blur(x[blur], sig)
    noisy = (torch.rand(n, generator=generator) < noise_p).to(x).view(n, 1, 1, 1)
    std = u(0.0, noise_std).to(x).view(n, 1, 1, 1) * noisy
    x = x + std * torch.randn(x.shape, generator=generator).to(x)
    return x.clamp(0.0, 1.0) if masks is None else (x.clamp(0.0, 1.0), masks)


def _equalise(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    level = (x * 255).round().long().view(n, -1)
    hist = torch.zeros(n, 256).scatter_add_(1, level, torch.ones_like(level, dtype=torch.float32))
    cdf = hist.cumsum(1) / level.shape[1]
    return cdf.gather(1, level).view_as(x).to(x.dtype)


def _zoom_out(x: torch.Tensor, scale: float) -> torch.Tensor:
    theta = torch.tensor([[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


#: Held-out acquisition shifts: name -> deterministic transform of ``(N, 1, S, S)`` in [0, 1].
SHIFTS = {
    "gamma_0.5": lambda x: x.clamp(0, 1).pow(0.5),
    "gamma_2.0": lambda x: x.clamp(0, 1).pow(2.0),
    "contrast_0.5": lambda x: ((x - x.mean(dim=(1, 2, 3), keepdim=True)) * 0.5
                               + x.mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1),
    "equalised": _equalise,
    "blur_noise": lambda x: (gaussian_blur(x, torch.full((x.shape[0],), 2.0 * x.shape[-1] / 224))
                             + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1),
    "zoom_out_0.8": lambda x: _zoom_out(x, 0.8),
}


def apply_shift(name: str, x: torch.Tensor) -> torch.Tensor:
    """One of :data:`SHIFTS` applied to ``(N, 1, S, S)`` images in [0, 1] (same shape, in [0, 1])."""
    if name not in SHIFTS:
        raise KeyError(f"unknown shift {name!r}; expected one of {sorted(SHIFTS)}")
    return SHIFTS[name](x).clamp(0.0, 1.0)
