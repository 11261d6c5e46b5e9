"""CPU-trainable trunks for the CXR model: narrow ResNets with a finer last feature map.

A torchvision ResNet-18 at 224 px costs about 1.8 GFLOPs per image and ends on a 7 x 7 map.
The trunks here keep ResNet-18's layout (BasicBlocks, 2-2-2-2) with fewer channels and stop
downsampling after the third stage (output stride 16), so the last map - the one Grad-CAM reads -
is 14 x 14 at 224 px:

==============  ===================  =============  ===========
arch            channels per stage   output stride  input layer
==============  ===================  =============  ===========
``resnet18n``     16, 32, 64, 128       16            -
``resnet18n_eq``  16, 32, 64, 128       16            histogram equalisation
``resnet18w_eq``  24, 48, 96, 192       16            histogram equalisation
``resnet18n_eqb`` 16, 32, 64, 128       16            equalisation ignoring black
==============  ===================  =============  ===========

The ``_eq`` trunks start with :class:`HistogramEqualise`, a fixed (parameter-free) layer that
maps each image through its own cumulative histogram. Any monotone change of exposure (gamma,
contrast, brightness, window level) leaves the equalised image nearly unchanged, so the network
cannot learn the exposure habits of one acquisition site. The histogram of a whole film also
counts its black frame, so zooming out (or a wider collimation) changes every grey level's rank;
``resnet18n_eqb`` counts only pixels above black, which makes it blind to a black frame.

Examples
--------
>>> import torch
>>> from imaging.architectures import build_trunk
>>> trunk, dim = build_trunk("resnet18n_eq")
>>> trunk(torch.rand(2, 1, 64, 64)).shape, dim
(torch.Size([2, 128, 4, 4]), 128)
"""

from __future__ import annotations

import torch
import torch.nn as nn

from imaging.contract import MEAN, STD

__all__ = ["TRUNKS", "HistogramEqualise", "build_trunk"]

#: name -> (channels per stage, blocks per stage, input equalisation: None, "all" or "above_black")
TRUNKS: dict[str, tuple[tuple[int, ...], tuple[int, ...], str | None]] = {
    "resnet18n": ((16, 32, 64, 128), (2, 2, 2, 2), None),
    "resnet18n_eq": ((16, 32, 64, 128), (2, 2, 2, 2), "all"),
    "resnet18w_eq": ((24, 48, 96, 192), (2, 2, 2, 2), "all"),
    "resnet18n_eqb": ((16, 32, 64, 128), (2, 2, 2, 2), "above_black"),
}

_LEVELS = 256


class HistogramEqualise(nn.Module):
    """Per-image histogram equalisation of model-normalised input ``(x - MEAN) / STD``.

    Each pixel becomes the share of its image's pixels at or below its grey level (256 levels),
    centred, and scaled to the unit variance of a uniform variable. No parameters; the output
    carries no gradient to the input (the map is piecewise constant).

    Parameters
    ----------
    above_black : bool
        Count only pixels above grey level 0 in the histogram; black pixels map to the lowest value.
    """

    def __init__(self, above_black: bool = False):
        super().__init__()
        self.above_black = above_black

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        level = ((x.detach() * STD + MEAN).clamp(0.0, 1.0) * (_LEVELS - 1)).round().long().view(n, -1)
        hist = torch.zeros(n, _LEVELS, device=x.device, dtype=torch.float32)
        hist.scatter_add_(1, level, torch.ones_like(level, dtype=torch.float32))
        if self.above_black:
            hist[:, 0] = 0.0
        total = hist.sum(1, keepdim=True).clamp_min(1.0)
        cdf = hist.cumsum(1) / total
        # mid-rank of each level: a constant region maps to the middle of its share, not its top
        mid = cdf - hist / (2 * total)
        out = mid.gather(1, level).view_as(x)
        return ((out - 0.5) * 12 ** 0.5).to(x.dtype)


def _stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    from torchvision.models.resnet import BasicBlock

    down = None
    if stride != 1 or c_in != c_out:
        down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
    layers = [BasicBlock(c_in, c_out, stride=stride, downsample=down)]
    layers += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def build_trunk(arch: str) -> tuple[nn.Module, int]:
    """Trunk ``(N, 1, S, S) -> (N, C, S/16, S/16)`` and its channel count ``C`` for a name in :data:`TRUNKS`."""
    if arch not in TRUNKS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {tuple(TRUNKS)}")
    widths, blocks, equalise = TRUNKS[arch]
    layers: list[nn.Module] = [HistogramEqualise(above_black=equalise == "above_black")] if equalise else []
    layers += [nn.Conv2d(1, widths[0], 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(widths[0]),
               nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)]
    c_in = widths[0]
    for i, (c, b) in enumerate(zip(widths, blocks)):
        # strides 1, 2, 2, 1: the last stage keeps the 1/16 resolution for a finer Grad-CAM map
        layers.append(_stage(c_in, c, b, stride=2 if i in (1, 2) else 1))
        c_in = c
    for m in layers:
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    trunk = nn.Sequential(*layers)
    # zero-init the last BN of each residual branch: every block starts as the identity (Goyal et al. 2017)
    for mod in trunk.modules():
        if mod.__class__.__name__ == "BasicBlock":
            nn.init.zeros_(mod.bn2.weight)
    return trunk, widths[-1]
