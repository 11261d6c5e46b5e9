"""Rule-based lung fields and film markers on frontal chest radiographs (no learned weights).

Two masks serve the imaging model's checks and its training:

* :func:`lung_mask` - the two lung fields: the dark (aerated) regions enclosed by the chest
  wall. The image is smoothed, thresholded at Otsu's level inside the central part of the film,
  dark regions that touch the border (air outside the body) are dropped, and the two largest
  remaining regions on either side of the midline are kept, hole-filled and replaced by their
  convex hulls (so that an opacity inside a lung, which is bright, still counts as lung); a lung
  much smaller than the other is grown by the other's mirror image (consolidation filling most
  of a lung defeats the intensity threshold). When
  that fails (no region on one side, or implausibly small regions) a template of two ellipses
  inside the thoracic box is returned instead, and ``return_method`` says so.
* :func:`marker_mask` - side markers and burnt-in text (``R``, ``A-P``, timestamps): small, very
  bright regions that stand out from their surroundings (white top-hat) and sit in the outer band
  of the film, where no anatomy of interest lies. :func:`mask_markers` paints them over with
  the local background, so that a model cannot use them as a shortcut.

:func:`heat_fraction_inside` is the saliency check: the share of a Grad-CAM map's heat that falls
inside a mask.

Examples
--------
>>> import numpy as np
>>> from imaging.lungs import lung_mask, marker_mask, synthetic_film
>>> film = synthetic_film(96, marker=True)
>>> m = lung_mask(film)
>>> bool(m[48, 28] and m[48, 68] and not m[48, 48])   # both lungs, not the mediastinum
True
>>> bool(marker_mask(film)[9:16, 4:10].any())
True
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["lung_mask", "marker_mask", "mask_markers", "heat_fraction_inside", "synthetic_film", "template_lungs",
           "thoracic_box", "crop_to_box", "paste_back", "focus_crop", "FOCUS_MARGIN"]

#: Margin added on every side of the lungs' bounding box by :func:`thoracic_box` (share of the box's side).
FOCUS_MARGIN = 0.08


def _as_float(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"expected one 2-D grayscale image; got shape {a.shape}")
    return a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    p = hist / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    return float(centres[int(np.nanargmax(between))])


def _outside_air(dark: np.ndarray) -> np.ndarray:
    """Dark pixels reached from the left or right edge of their row before any bright pixel."""
    return np.logical_and.accumulate(dark, axis=1) | np.logical_and.accumulate(dark[:, ::-1], axis=1)[:, ::-1]


def template_lungs(shape: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Two ellipses where the lungs of a centred frontal film lie, inside ``box`` (top, bottom, left, right)."""
    h, w = shape
    top, bottom, left, right = box if box is not None else (int(0.12 * h), int(0.80 * h), int(0.10 * w),
                                                            int(0.90 * w))
    yy, xx = np.mgrid[0:h, 0:w]
    bw, bh = right - left, bottom - top
    cy, ry, rx = top + 0.5 * bh, 0.5 * bh, 0.19 * bw
    out = np.zeros(shape, dtype=bool)
    for cx in (left + 0.27 * bw, left + 0.73 * bw):
        out |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    return out


def _convex_hull(region: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(region)
    if len(pts) < 4:
        return region
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return region
    yy, xx = np.mgrid[0:region.shape[0], 0:region.shape[1]]
    grid = np.c_[yy.ravel(), xx.ravel()]
    inside = np.all(grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
    return inside.reshape(region.shape)


def _complete_by_mirror(hulls: dict, body: np.ndarray, min_ratio: float = 0.6) -> None:
    """Grow a lung much smaller than the other by the other's mirror image (in place).

    Consolidation is bright, so the intensity segmentation loses the very part of a lung that
    pneumonia fills; the two lungs of a frontal film are roughly mirror images about the body's
    midline, so the larger one, reflected, bounds what the smaller one should cover. The
    reflection is cut to the body (no lung outside the chest wall).
    """
    area = {side: int(m.sum()) for side, m in hulls.items()}
    small, large = sorted(hulls, key=area.get)
    if area[small] >= min_ratio * area[large]:
        return
    h, w = body.shape
    rows = body[int(0.3 * h):int(0.6 * h)]
    cols = [np.flatnonzero(r) for r in rows]
    centres = [(c[0] + c[-1]) / 2 for c in cols if len(c)]
    mid = float(np.median(centres)) if centres else (w - 1) / 2
    xs = np.arange(w)
    src = np.clip(np.round(2 * mid - xs).astype(int), 0, w - 1)  # column x shows column 2 mid - x
    mirrored = hulls[large][:, src] & ((2 * mid - xs >= 0) & (2 * mid - xs <= w - 1))[None, :]
    # keep the reflection on the small lung's side of the midline
    side_cols = xs < mid if small == "left" else xs > mid
    hulls[small] = hulls[small] | (mirrored & body & side_cols[None, :])


def lung_mask(image, *, return_method: bool = False, mirror: bool = True):
    """Boolean lung-field mask of one frontal CXR ``(H, W)`` (uint8, or float in [0, 1]).

    Parameters
    ----------
    image : array-like, shape (H, W)
    return_method : bool
        Also return ``"segmented"`` or ``"template"`` (the fallback; see the module docstring).
    mirror : bool
        Grow a segmented lung under 60 % of the other's area by the other's reflection about the
        body's midline (consolidation, being bright, is otherwise cut out of its own lung).
    """
    g = ndi.gaussian_filter(_as_float(image), sigma=max(1.0, image.shape[0] / 112))
    h, w = g.shape
    central = g[int(0.1 * h):int(0.9 * h), int(0.1 * w):int(0.9 * w)]
    dark = g < _otsu(central.ravel())
    dark &= ~_outside_air(dark)
    # the lungs reach the outside air through the axillae and the neck: cut those bridges by
    # eroding, and keep only regions away from the film's edges, then grow them back inside `dark`
    steps = max(2, h // 48)
    core = ndi.binary_erosion(dark, structure=np.ones((3, 3)), iterations=steps)
    core[:int(0.08 * h)] = core[int(0.92 * h):] = False
    core[:, :int(0.07 * w)] = core[:, int(0.93 * w):] = False
    lab, n = ndi.label(core)
    best = {}  # side -> (area, label)
    min_area = 0.01 * h * w
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        region = lab[sl] == k
        area = int(region.sum())
        ys, xs = np.nonzero(region)
        cy = (ys.mean() + sl[0].start) / h
        cx = (xs.mean() + sl[1].start) / w
        if area < min_area or not 0.2 < cy < 0.75 or not 0.12 < min(cx, 1 - cx) < 0.48:
            continue
        side = "left" if cx < 0.5 else "right"
        if area > best.get(side, (0, 0))[0]:
            best[side] = (area, k)
    if len(best) < 2:
        ys, xs = np.nonzero(g > _otsu(g.ravel()))
        box = None
        if len(ys) > 0.2 * h * w:
            box = (int(np.quantile(ys, 0.05)), int(np.quantile(ys, 0.75)), int(np.quantile(xs, 0.03)),
                   int(np.quantile(xs, 0.97)))
        mask, method = template_lungs((h, w), box), "template"
    else:
        hulls = {}
        for side, (_, k) in best.items():
            grown = ndi.binary_dilation(lab == k, iterations=steps + 1, mask=dark)
            hulls[side] = _convex_hull(ndi.binary_fill_holes(grown))
        if mirror:
            _complete_by_mirror(hulls, ~_outside_air(g < _otsu(g.ravel())))
        mask = hulls["left"] | hulls["right"]
        mask, method = ndi.binary_dilation(mask, iterations=max(1, h // 56)), "segmented"
    return (mask, method) if return_method else mask


def marker_mask(image, *, outer_band: float = 0.22, max_area_fraction: float = 0.004,
                min_contrast: float = 0.3, max_background: float = 0.45) -> np.ndarray:
    """Boolean mask of side markers and burnt-in text (see the module docstring).

    A pixel belongs to a marker when it is at least ``min_contrast`` brighter than the local
    background (a grey opening over about 1/16 of the side), its connected region covers at most
    ``max_area_fraction`` of the film, and the region lies within ``outer_band`` of a side edge or
    of the top or bottom edge. The mask is dilated by two pixels to cover anti-aliased edges.
    """
    x = _as_float(image)
    h, w = x.shape
    size = max(5, h // 16)
    background = ndi.grey_opening(x, size=(size, size))
    bright = (x - background > min_contrast) & (background < max_background)
    smooth = ndi.gaussian_filter(x, sigma=max(1.0, h / 112))
    outside = ndi.binary_dilation(_outside_air(smooth < _otsu(smooth.ravel())), iterations=3)
    lab, n = ndi.label(bright, structure=np.ones((3, 3)))
    out = np.zeros_like(bright)
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        region = lab[sl] == k
        tall, wide = (sl[0].stop - sl[0].start) / h, (sl[1].stop - sl[1].start) / w
        # letters are compact; the skin line and tubes beside the chest are long and thin
        if region.sum() > max_area_fraction * h * w or tall > 0.08 or wide > 0.16 or not outside[sl][region].any():
            continue
        cy = (sl[0].start + sl[0].stop) / 2 / h
        cx = (sl[1].start + sl[1].stop) / 2 / w
        if min(cx, 1 - cx) < outer_band or min(cy, 1 - cy) < outer_band / 2:
            out[sl] |= region
    return ndi.binary_dilation(out, iterations=2) if out.any() else out


def mask_markers(image, mask: np.ndarray | None = None) -> np.ndarray:
    """``image`` with marker pixels replaced by the local background (same dtype).

    The background is the grey opening that :func:`marker_mask` compares against: it removes
    bright structures smaller than its window, which is what a letter is.
    """
    a = np.asarray(image)
    mask = marker_mask(a) if mask is None else mask
    if not mask.any():
        return a.copy()
    size = max(5, a.shape[0] // 16)
    background = ndi.grey_opening(a, size=(size, size))
    out = a.copy()
    out[mask] = background[mask]
    return out


def thoracic_box(image, *, margin: float = FOCUS_MARGIN, mask: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (bottom/right exclusive) of the lung fields plus ``margin``, inside the film.

    The box is the bounding box of :func:`lung_mask` (or of ``mask``) grown by ``margin`` times its
    height and width on every side and clipped to the film.

    >>> from imaging.lungs import synthetic_film, thoracic_box
    >>> t, b, l, r = thoracic_box(synthetic_film(96))
    >>> 0 < t < 48 < b < 96 and 0 < l < 28 and 68 < r < 96
    True
    """
    a = np.asarray(image)
    mask = lung_mask(a) if mask is None else np.asarray(mask, dtype=bool)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return 0, h, 0, w
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dy, dx = margin * (bottom - top), margin * (right - left)
    return (max(0, int(np.floor(top - dy))), min(h, int(np.ceil(bottom + dy))),
            max(0, int(np.floor(left - dx))), min(w, int(np.ceil(right + dx))))


def crop_to_box(image, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The ``box`` of a uint8 film, resized (Pillow bilinear, antialiased) to ``size x size``."""
    from PIL import Image

    top, bottom, left, right = box
    part = np.ascontiguousarray(np.asarray(image, dtype=np.uint8)[top:bottom, left:right])
    return np.asarray(Image.fromarray(part).resize((size, size), Image.BILINEAR))


def paste_back(heat, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A map computed on a crop (:func:`crop_to_box`) placed back onto the film: ``shape``, zero outside ``box``.

    The inverse of the crop for heatmaps: the map is resized (bilinear) to the box and put where
    the box lies, so that saliency is measured in the film's own coordinates.

    >>> import numpy as np
    >>> from imaging.lungs import paste_back
    >>> out = paste_back(np.ones((4, 4), np.float32), (2, 6, 1, 9), (10, 10))
    >>> out.shape, float(out.sum()), bool(out[2:6, 1:9].all())
    ((10, 10), 32.0, True)
    """
    from PIL import Image

    top, bottom, left, right = box
    out = np.zeros(shape, dtype=np.float32)
    part = Image.fromarray(np.asarray(heat, dtype=np.float32)).resize((right - left, bottom - top), Image.BILINEAR)
    out[top:bottom, left:right] = np.asarray(part)
    return out


def focus_crop(image, size: int | None = None, *, margin: float = FOCUS_MARGIN) -> tuple[np.ndarray, tuple]:
    """Lung-field focus of one uint8 film: its :func:`thoracic_box`, cropped and resized to ``size`` (default: the film's).

    Returns ``(crop, box)``. Deterministic (no randomness), so training and inference see the same crop.
    """
    a = np.asarray(image)
    if a.ndim != 2 or a.dtype != np.uint8:
        raise ValueError(f"focus_crop expects one 2-D uint8 film; got shape {a.shape}, dtype {a.dtype}")
    box = thoracic_box(a, margin=margin)
    return crop_to_box(a, box, int(size or a.shape[0])), box


def heat_fraction_inside(heat, mask) -> float:
    """Share of a non-negative heatmap's total inside ``mask`` (NaN for an all-zero map)."""
    heat = np.asarray(heat, dtype=np.float64)
    total = heat.sum()
    return float(heat[np.asarray(mask, dtype=bool)].sum() / total) if total > 0 else float("nan")


def synthetic_film(size: int = 96, *, marker: bool = False, seed: int = 0) -> np.ndarray:
    """A crude frontal film: soft tissue, two dark lungs, a bright mediastinum, optional ``R`` marker.

    For tests and examples: the lung centres lie at ``(0.5 H, 0.29 W)`` and ``(0.5 H, 0.71 W)``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size), 0.05)
    body = ((xx - 0.5) / 0.46) ** 2 + ((yy - 0.55) / 0.6) ** 2 <= 1
    img[body] = 0.65
    for cx in (0.29, 0.71):
        img[((xx - cx) / 0.15) ** 2 + ((yy - 0.5) / 0.27) ** 2 <= 1] = 0.3
    img[(np.abs(xx - 0.5) < 0.07) & (yy > 0.2) & (yy < 0.75)] = 0.75
    img = ndi.gaussian_filter(img, 1.0) + rng.normal(0, 0.02, img.shape)
    if marker:
        # a letter-sized "R"-like glyph in the outer band, on the air beside the body
        s, top, side = max(1, size // 48), int(0.1 * size), max(4, size // 16)
        img[top:top + side, 4:4 + s] = 1.0
        img[top:top + s, 4:4 + side] = 1.0
        img[top + side // 2:top + side // 2 + s, 4:4 + side] = 1.0
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
