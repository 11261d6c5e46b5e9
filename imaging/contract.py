"""The imaging input contract: what an image must look like before a model sees it.

The contract is deliberately explicit (the torchxrayvision lesson: a silently wrong
normalisation gives the same output for every image):

* **channels** - one (grayscale). A file stored as RGB whose three channels are identical is a
  grayscale image in disguise and is accepted; a colour image (channels differ) is rejected.
* **values** - ``uint8`` in 0..255 (divided by 255 here), or float in [0, 1]. Floats above 1 (raw
  0..255 pixels) or below 0 (already normalised) are rejected, as is a constant image.
* **size** - any size of at least :data:`MIN_SIDE` pixels; images are resized (bilinear) to the
  model's square ``image_size``. Aspect ratio is not preserved (the Kermany data were squashed
  upstream, and the model should see the same geometry at training and scoring time).

The model normalises internally (``(x - MEAN) / STD``), so callers always pass [0, 1] images.

Examples
--------
>>> import numpy as np
>>> from imaging.contract import prepare_images
>>> x = prepare_images(np.random.default_rng(0).integers(0, 256, (2, 40, 40), dtype=np.uint8), 32)
>>> tuple(x.shape), float(x.min()) >= 0.0, float(x.max()) <= 1.0
((2, 1, 32, 32), True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageContractError", "MEAN", "STD", "MIN_SIDE", "load_image", "check_images", "prepare_images"]

#: Fixed normalisation applied inside the model to [0, 1] inputs (roughly centres a radiograph).
MEAN = 0.5
STD = 0.25
#: Smallest accepted image side in pixels.
MIN_SIDE = 8


class ImageContractError(ValueError):
    """An image breaks the input contract; the message names the file or image index and the problem."""


def load_image(path: str | PathLike) -> np.ndarray:
    """Read one image file as a 2-D ``uint8`` grayscale array, checking the contract.

    Parameters
    ----------
    path : path-like
        PNG/JPEG/... file readable by Pillow.

    Returns
    -------
    ndarray of uint8, shape (H, W)

    Raises
    ------
    ImageContractError
        Missing or corrupt file, colour image, unsupported mode, constant image or too small.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> p = tempfile.mkdtemp() + "/x.png"
    >>> Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(p)
    >>> load_image(p).shape
    (16, 16)
    """
    path = Path(path)
    if not path.is_file():
        raise ImageContractError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise ImageContractError(f"{path}: cannot decode image ({exc}); the file is corrupt or not an image") from None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit radiographs: keep the full range by scaling the stored bit depth to 8 bits
        arr = arr.astype(np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
    elif mode == "LA":
        arr = arr[..., 0]
    elif mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ImageContractError(
                f"{path}: colour image (mode {mode}, channels differ); the model takes single-channel "
                "grayscale radiographs - convert it with a radiology tool, not by averaging colours")
        arr = rgb[..., 0]
    elif mode != "L":
        raise ImageContractError(f"{path}: unsupported image mode {mode!r}; expected 8-bit grayscale ('L')")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    _check_one(arr, str(path))
    return arr


def _check_one(arr: np.ndarray, where: str) -> None:
    if min(arr.shape[-2:]) < MIN_SIDE:
        raise ImageContractError(f"{where}: image is {arr.shape[-2]}x{arr.shape[-1]} pixels; "
                                 f"need at least {MIN_SIDE}x{MIN_SIDE}")
    if arr.max() == arr.min():
        raise ImageContractError(f"{where}: image is constant (every pixel {arr.flat[0]!r}); blank, "
                                 "corrupt or wrongly normalised")


def check_images(images, *, source: str = "images") -> torch.Tensor:
    """Check an array of images against the contract and return float32 ``(N, 1, H, W)`` in [0, 1].

    Parameters
    ----------
    images : ndarray or Tensor
        ``(H, W)``, ``(N, H, W)`` or ``(N, 1, H, W)``; ``uint8`` 0..255 or float in [0, 1].
    source : str
        Name used in error messages.

    Raises
    ------
    ImageContractError
        Wrong number of channels, wrong value range, non-finite or constant image.

    Examples
    --------
    >>> import numpy as np
    >>> check_images(np.eye(16, dtype=np.float32)).shape
    torch.Size([1, 1, 16, 16])
    """
    # a copy when needed: arrays may be read-only (np.load, memory maps) and torch will not share those
    if isinstance(images, torch.Tensor):
        x = images
    else:
        arr = np.asarray(images)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        if x.shape[-1] in (3, 4) and x.shape[0] > 4:
            raise ImageContractError(f"{source}: looks like one channels-last colour image {tuple(x.shape)}; "
                                     "the model takes single-channel grayscale (N, H, W) or (N, 1, H, W)")
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] != 1:
            raise ImageContractError(f"{source}: images have {x.shape[1]} channels (shape {tuple(x.shape)}); "
                                     "the model takes single-channel grayscale (N, 1, H, W)")
    else:
        raise ImageContractError(f"{source}: expected (H, W), (N, H, W) or (N, 1, H, W); got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
        if not torch.isfinite(x).all():
            raise ImageContractError(f"{source}: contains NaN or infinite pixel values")
        hi, lo = float(x.max()), float(x.min())
        if lo < 0.0:
            raise ImageContractError(f"{source}: negative pixel values (min {lo:g}); expected [0, 1] - "
                                     "pass raw images, the model normalises internally")
        if hi > 1.0:
            raise ImageContractError(f"{source}: float pixel values up to {hi:g}; expected [0, 1] "
                                     "(divide raw 0..255 pixels by 255, or pass uint8)")
    else:
        raise ImageContractError(f"{source}: pixel dtype {x.dtype}; expected uint8 or float in [0, 1]")
    if min(x.shape[-2:]) < MIN_SIDE:
        raise ImageContractError(f"{source}: images are {x.shape[-2]}x{x.shape[-1]}; "
                                 f"need at least {MIN_SIDE}x{MIN_SIDE}")
    flat = x.flatten(1)
    constant = (flat.max(dim=1).values == flat.min(dim=1).values).nonzero().flatten()
    if len(constant):
        i = int(constant[0])
        raise ImageContractError(f"{source}: image {i} is constant ({len(constant)} constant image(s)); "
                                 "blank, corrupt or wrongly normalised")
    return x


def prepare_images(images, image_size: int, *, source: str = "images") -> torch.Tensor:
    """Contract-check images (array, tensor or list of file paths) and resize to ``image_size``.

    Returns float32 ``(N, 1, image_size, image_size)`` in [0, 1].
    """
    if isinstance(images, (str, PathLike)):
        images = [images]
    if isinstance(images, Sequence) and len(images) and isinstance(images[0], (str, PathLike)):
        arrays = [resize_uint8(load_image(p), image_size) for p in images]
        return torch.from_numpy(np.stack(arrays))[:, None].float() / 255.0
    x = check_images(images, source=source)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 1.0)
    return x


def resize_uint8(arr: np.ndarray, image_size: int) -> np.ndarray:
    """Resize a 2-D ``uint8`` image to a square ``image_size`` with Pillow's antialiased bilinear filter."""
    if arr.shape == (image_size, image_size):
        return arr
    return np.asarray(Image.fromarray(arr).resize((image_size, image_size), Image.BILINEAR))
