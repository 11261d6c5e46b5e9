"""Radiograph-like images for the synthetic cohort, whose opacities follow the ground truth.

:func:`render_study` draws a procedural frontal chest film (body, two lung fields, ribs, spine and
mediastinum, heart shadow, diaphragm domes, noise) and adds one pattern per true finding:

==============  ===========================================================================
consolidation   patchy lobar opacity (smoothed random field inside a lobe-sized envelope)
effusion        basal opacity with a meniscus (higher laterally), blunting the costophrenic angle
edema           bilateral perihilar "bat-wing" haze
atelectasis     linear / band opacity, oblique, in a lower zone
==============  ===========================================================================

These images make ``make demo`` work on a fresh machine; they are not realistic enough to
train a model that transfers to real radiographs. :func:`sample_real_images` instead draws
real Kermany images by finding (consolidation-positive studies from PNEUMONIA, negative from
NORMAL) for a semi-synthetic cohort with a real imaging signal.

Image convention: radiographic (dense = bright), patient's right on the image's left.

Examples
--------
>>> import numpy as np
>>> from imaging.synthetic_images import render_study
>>> a = render_study({"effusion": 0}, seed=1, size=64)
>>> b = render_study({"effusion": 1}, seed=1, size=64)
>>> a.dtype, a.shape, bool((b.astype(int) - a.astype(int)).sum() > 0)
(dtype('uint8'), (64, 64), True)
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from ehr.schema import CXR_FINDINGS

__all__ = ["render_study", "render_cohort_images", "render_truth_films", "sample_real_images"]


def _truth(truth: dict) -> dict[str, bool]:
    clean = {}
    for k, v in truth.items():
        name = k[len("truth_"):] if k.startswith("truth_") else k
        if name not in CXR_FINDINGS:
            raise KeyError(f"unknown finding {k!r}; expected one of {CXR_FINDINGS} (optionally 'truth_'-prefixed)")
        clean[name] = bool(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else False
    return clean


def _ellipse(u, v, cu, cv, ru, rv):
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2


def render_study(truth: dict, seed: int, size: int = 128, *, conspicuity: float = 1.0,
                 noise: float = 0.03) -> np.ndarray:
    """Render one study as ``uint8 (size, size)``.

    Parameters
    ----------
    truth : dict
        Finding -> 0/1 (keys from ``ehr.schema.CXR_FINDINGS``, optionally ``truth_``-prefixed);
        missing findings are absent.
    seed : int
        Anatomy, noise and where the opacities fall are drawn from ``np.random.default_rng(seed)``;
        the same seed with different findings gives the same chest with different opacities.
    size : int
        Side in pixels.
    conspicuity : float
        Scales every opacity. Each finding's opacity is further drawn between 20 % and 100 % of
        that per study, so some findings are subtle (as on real films) and a model cannot be perfect.
    noise : float
        Standard deviation of the (slightly blurred) quantum noise, in [0, 1] intensity units.
    """
    t = _truth(truth)
    rng = np.random.default_rng(seed)
    # a fixed number of draws for anatomy first, so findings never change the underlying chest
    anat = rng.uniform(-1, 1, 12)
    find_rng = np.random.default_rng([seed, 7919])
    v, u = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    sigma = size / 128.0

    body = np.clip(1.3 - _ellipse(u, v, 0.5, 0.55, 0.46 + 0.03 * anat[0], 0.62), 0, 1) ** 0.5
    img = 0.08 + 0.42 * body
    # lung fields (air: dark); the left lung (image right) is a little smaller behind the heart
    cv = 0.47 + 0.02 * anat[1]
    rl = _ellipse(u, v, 0.31 + 0.01 * anat[2], cv, 0.14 + 0.01 * anat[3], 0.30 + 0.02 * anat[4]) < 1
    ll = _ellipse(u, v, 0.69 - 0.01 * anat[2], cv, 0.13 + 0.01 * anat[3], 0.29 + 0.02 * anat[4]) < 1
    # diaphragm domes cut the lungs from below (right dome a little higher, as usual)
    dome_r = 0.72 + 0.03 * anat[5] + 0.5 * (u - 0.31) ** 2
    dome_l = 0.75 + 0.03 * anat[5] + 0.5 * (u - 0.69) ** 2
    rl &= v < dome_r
    ll &= v < dome_l
    lungs = gaussian_filter((rl | ll).astype(np.float64), 1.2 * sigma)
    img -= 0.24 * lungs
    # spine / mediastinum and heart shadow (dense: bright)
    img += 0.22 * np.exp(-((u - 0.5) / (0.05 + 0.005 * anat[6])) ** 2) * (v > 0.1)
    heart = gaussian_filter((_ellipse(u, v, 0.55 + 0.02 * anat[7], 0.64, 0.17 + 0.015 * anat[8], 0.15) < 1)
                            .astype(np.float64), 2.5 * sigma)
    img += 0.15 * heart
    # ribs: curved bands across each hemithorax
    ribs = np.zeros_like(img)
    for i in range(9):
        base = 0.2 + i * 0.065 + 0.005 * anat[9]
        for side in (-1, 1):
            cu = 0.5 + side * 0.08
            curve = base + 1.2 * (u - cu) ** 2 * (1 + 0.1 * anat[10]) - 0.25 * np.abs(u - cu)
            band = np.exp(-((v - curve) / 0.011) ** 2) * ((u - 0.5) * side > 0.04) * ((u - 0.5) * side < 0.47)
            ribs += band
    img += 0.10 * gaussian_filter(ribs, 0.6 * sigma) * body
    # clavicles
    for side in (-1, 1):
        clav = 0.19 - 0.12 * np.abs(u - 0.5) + 0.6 * (np.abs(u - 0.5) - 0.2) ** 2
        img += 0.12 * np.exp(-((v - clav) / 0.012) ** 2) * (np.abs(u - 0.5) < 0.38) * (np.abs(u - 0.5) > 0.05)

    lung_mask = lungs

    def strength():
        return conspicuity * find_rng.uniform(0.2, 1.0)
    if t.get("consolidation"):
        side = find_rng.choice([0.31, 0.69])
        zone = find_rng.uniform(0.45, 0.62)
        env = np.exp(-(_ellipse(u, v, side + find_rng.uniform(-0.03, 0.03), zone, 0.10, 0.12)))
        field = gaussian_filter(find_rng.normal(size=img.shape), 2.5 * sigma)
        field = (field - field.mean()) / (field.std() + 1e-9)
        patch = np.clip(env * 1.6 - 0.55 + 0.25 * field, 0, 1)
        img += 0.40 * strength() * gaussian_filter(patch, sigma) * lung_mask
    if t.get("effusion"):
        sides = [0.31, 0.69] if find_rng.random() < 0.35 else [find_rng.choice([0.31, 0.69])]
        for s in sides:
            dome = dome_r if s < 0.5 else dome_l
            depth = find_rng.uniform(0.10, 0.16)
            # meniscus: the fluid line climbs towards the lateral chest wall
            meniscus = dome - depth - 0.8 * np.clip(np.abs(u - 0.5) - np.abs(s - 0.5) + 0.06, 0, None) ** 1.5 * 3
            fluid = gaussian_filter(((v > meniscus) & (np.abs(u - s) < 0.17)).astype(np.float64), 1.5 * sigma)
            img += 0.38 * strength() * fluid * lung_mask
    if t.get("edema"):
        haze = sum(np.exp(-(((u - hu) / 0.11) ** 2 + ((v - 0.48) / 0.16) ** 2)) for hu in (0.38, 0.62))
        texture = gaussian_filter(find_rng.normal(size=img.shape), 1.0 * sigma)
        img += strength() * (0.32 * haze + 0.04 * texture * haze) * lung_mask
    if t.get("atelectasis"):
        s = find_rng.choice([0.31, 0.69])
        cu, cvv = s + find_rng.uniform(-0.03, 0.03), find_rng.uniform(0.55, 0.65)
        ang = find_rng.uniform(-0.35, 0.35)
        du, dv = u - cu, v - cvv
        along = du * np.cos(ang) + dv * np.sin(ang)
        across = -du * np.sin(ang) + dv * np.cos(ang)
        band = np.exp(-(across / find_rng.uniform(0.012, 0.022)) ** 2) * (np.abs(along) < 0.10)
        img += 0.40 * strength() * gaussian_filter(band, 0.7 * sigma) * lung_mask

    img = img * (1 + 0.08 * anat[11])
    img += gaussian_filter(rng.normal(0, noise, img.shape), 0.6 * sigma) + rng.normal(0, noise / 3, img.shape)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _study_seed(seed: int, study_id: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(study_id)]).generate_state(1)[0])


def render_cohort_images(cxr_table: pd.DataFrame, out_dir: str | PathLike, seed: int, *, size: int = 128,
                         subdir: str = "cxr_images", conspicuity: float = 1.0, noise: float = 0.03) -> pd.DataFrame:
    """Render one PNG per study of a ``cxr`` table from its ``truth_<finding>`` columns.

    Files go to ``out_dir/subdir/study_<study_id>.png``; the returned copy of the table has
    ``image_path`` set relative to ``out_dir`` (the cohort directory). Each study's image depends
    only on ``(seed, study_id)`` and its findings.
    """
    out_dir = Path(out_dir)
    (out_dir / subdir).mkdir(parents=True, exist_ok=True)
    out = cxr_table.copy()
    truth_cols = [f"truth_{f}" for f in CXR_FINDINGS if f"truth_{f}" in out.columns]
    paths = []
    for i in range(len(out)):
        sid = int(out["study_id"].iloc[i])
        truth = {c: out[c].iloc[i] for c in truth_cols}
        rel = f"{subdir}/study_{sid}.png"
        img = render_study(truth, _study_seed(seed, sid), size=size, conspicuity=conspicuity, noise=noise)
        Image.fromarray(img).save(out_dir / rel)
        paths.append(rel)
    out["image_path"] = pd.Series(paths, index=out.index, dtype=object)
    return out


def _anatomy_seed(seed: int, stay_id: int, hour: float, anatomy_study_id) -> int:
    if anatomy_study_id is None or pd.isna(anatomy_study_id):
        minute = int(round(float(hour) * 60))
        return int(np.random.SeedSequence([int(seed), int(stay_id), 1, minute + 10**7]).generate_state(1)[0])
    return _study_seed(seed, int(anatomy_study_id))


def render_truth_films(lung_state: pd.DataFrame, seed: int, *, size: int = 128, conspicuity: float = 1.0,
                       noise: float = 0.03) -> np.ndarray:
    """The films the lung state would have shown: ``uint8 (n, size, size)``, one per row.

    ``lung_state`` is :meth:`ehr.synthetic.lung.LungState.at`'s table. Each film has the chest of
    its ``anatomy_study_id`` (the latest study: a film rendered at a study's own time is that
    study's film, with the same ``seed`` as :func:`render_cohort_images`) or, where that is <NA>, a
    chest of its own drawn from ``(seed, stay_id, hour)``. Identical (chest, findings) are rendered once.
    """
    truth_cols = [f"truth_{f}" for f in CXR_FINDINGS]
    missing = [c for c in ("stay_id", "hour", "anatomy_study_id", *truth_cols) if c not in lung_state.columns]
    if missing:
        raise KeyError(f"lung state table lacks {missing} (expected ehr.synthetic.lung.LungState.at's columns)")
    seeds = [_anatomy_seed(seed, s, h, a) for s, h, a in
             zip(lung_state["stay_id"], lung_state["hour"], lung_state["anatomy_study_id"])]
    truth = lung_state[truth_cols].to_numpy(dtype=np.int64)
    films = np.empty((len(seeds), size, size), dtype=np.uint8)
    cache: dict = {}
    for r, s in enumerate(seeds):
        key = (s, *truth[r])
        if key not in cache:
            cache[key] = render_study(dict(zip(truth_cols, truth[r])), s, size=size, conspicuity=conspicuity,
                                      noise=noise)
        films[r] = cache[key]
    return films


def sample_real_images(cxr_table: pd.DataFrame, data_dir: str | PathLike, *, seed: int = 0,
                       finding: str = "consolidation", positive_column: str = "pneumonia",
                       only_images=None) -> pd.DataFrame:
    """Point each study at a real labelled image drawn by its ground truth (semi-synthetic cohort).

    Studies with ``truth_<finding> == 1`` draw from the rows of ``data_dir/labels.csv`` with
    ``positive_column == 1`` (Kermany PNEUMONIA), the others from rows with 0 (NORMAL); without
    replacement while images last. ``image_path`` becomes an absolute path (the images stay in
    the shared data folder). Only ``finding`` carries real signal; the other findings have none.
    ``only_images`` (values of the ``image`` column) restricts the pool, e.g. to a model's
    validation split so that a semi-synthetic evaluation never scores the model's training images.
    """
    data_dir = Path(data_dir).resolve()
    labels = pd.read_csv(data_dir / "labels.csv")
    if positive_column not in labels.columns:
        raise KeyError(f"{data_dir / 'labels.csv'}: no column {positive_column!r}")
    if only_images is not None:
        labels = labels[labels["image"].isin(set(only_images))]
    tcol = f"truth_{finding}"
    if tcol not in cxr_table.columns:
        raise KeyError(f"cxr table has no {tcol!r} column (ground truth needed to draw images by finding)")
    rng = np.random.default_rng(seed)
    out = cxr_table.copy()
    paths = np.empty(len(out), dtype=object)
    truth = out[tcol].fillna(0).astype(float).to_numpy() == 1
    for want, mask in ((1, truth), (0, ~truth)):
        pool = labels.loc[labels[positive_column] == want, "image"].to_numpy()
        if mask.any() and not len(pool):
            raise ValueError(f"{data_dir}: no images with {positive_column}={want}")
        idx = np.flatnonzero(mask)
        pick = rng.choice(len(pool), size=len(idx), replace=len(idx) > len(pool)) if len(idx) else []
        paths[idx] = [str(data_dir / pool[j]) for j in pick]
    out["image_path"] = pd.Series(paths, index=out.index, dtype=object)
    return out
