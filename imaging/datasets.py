"""Labelled CXR image sets: a folder of images + ``labels.csv``, or a MedMNIST-style ``.npz``.

Both readers return an :class:`ImageSet` (images already at the model's size, ``uint8``, in
memory: 5,216 Kermany images at 224 px are 260 MB, at 128 px 85 MB), so training reads no files.

Splits are patient- and duplicate-safe: :func:`patient_groups` puts every image of one patient
(``patient_id`` column, or the Kermany file-name patterns ``personN_...`` / ``IM-NNNN-...``) and
every pixel-identical copy (``pixel_dup_of``) into one group, and :func:`ehr.splits.holdout_groups`
keeps each group on one side.

Examples
--------
>>> import numpy as np
>>> from ehr.splits import holdout_groups
>>> tr, va = holdout_groups(np.array([0, 0, 1, 2, 3, 3]), 0.5, random_state=0)
>>> sorted(np.concatenate([tr, va]).tolist())
[0, 1, 2, 3, 4, 5]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from imaging.contract import ImageContractError, load_image, resize_uint8

__all__ = ["ImageSet", "finding_columns", "read_image_folder", "read_class_folders", "read_labelled",
           "read_npz", "load_images", "patient_groups", "internal_splits", "cached_image_folder"]

#: 0/1 columns that mean "none of the findings", never a finding themselves.
NEGATIVE_LABELS = frozenset({"normal", "no_finding", "no finding", "nofinding", "healthy", "none"})

_KERMANY_PATIENT = re.compile(r"^(?:(?P<n2>NORMAL2-)?IM-(?P<im>\d+)|person(?P<person>\d+)_)")


@dataclass
class ImageSet:
    """Images with 0/1 finding labels, in memory.

    Attributes
    ----------
    images : ndarray of uint8, shape (N, S, S)
    labels : ndarray of float32, shape (N, F)
    findings : tuple of str, length F (column order of ``labels``)
    groups : ndarray of int64, shape (N,) - patient/duplicate group of each image
    ids : list of str - image reference (path relative to the data folder, or npz index)
    """

    images: np.ndarray
    labels: np.ndarray
    findings: tuple[str, ...]
    groups: np.ndarray
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "ImageSet":
        """The images at ``index`` (integer array)."""
        index = np.asarray(index)
        return ImageSet(self.images[index], self.labels[index], self.findings, self.groups[index],
                        [self.ids[i] for i in index] if self.ids else [])


def finding_columns(labels: pd.DataFrame) -> tuple[str, ...]:
    """The 0/1 finding columns of a labels table.

    A column is a finding when every value is 0 or 1. Negative labels (Kermany ``normal``, NIH
    ``no_finding``, see :data:`NEGATIVE_LABELS`) are not findings and are left out.

    Examples
    --------
    >>> import pandas as pd
    >>> finding_columns(pd.DataFrame({"image": ["a", "b"], "normal": [1, 0], "pneumonia": [0, 1], "age": [3, 40]}))
    ('pneumonia',)
    """
    keep = [c for c in labels.columns
            if str(c).lower() not in NEGATIVE_LABELS
            and pd.api.types.is_numeric_dtype(labels[c]) and not pd.api.types.is_bool_dtype(labels[c])
            and len(labels) and labels[c].notna().all() and labels[c].isin([0, 1]).all()]
    return tuple(keep)


def _match_findings(available: list[str], findings, where: str) -> list[str]:
    lower = {c.lower(): c for c in available}
    cols = []
    for f in findings:
        if f not in available and f.lower() not in lower:
            raise KeyError(f"{where}: finding {f!r} is not a column; 0/1 columns are {sorted(available)}")
        cols.append(f if f in available else lower[f.lower()])
    return cols


def patient_groups(labels: pd.DataFrame) -> np.ndarray:
    """Integer group per row: same patient or pixel-identical duplicate -> same group.

    The patient comes from a ``patient_id`` column, else from a Kermany ``orig_filename``
    (``personN_...`` for pneumonia, ``IM-NNNN-...`` / ``NORMAL2-IM-NNNN-...`` for normal), else each
    image is its own patient. ``pixel_dup_of`` (an ``image`` value) then merges groups.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"image": ["a", "b", "c"],
    ...                   "orig_filename": ["person1_x.jpeg", "person2_x.jpeg", "IM-7-1.jpeg"],
    ...                   "pixel_dup_of": [None, None, "a"]})
    >>> patient_groups(t).tolist()
    [0, 1, 0]
    """
    n = len(labels)
    if "patient_id" in labels.columns:
        key = labels["patient_id"].astype(str).to_numpy()
    elif "orig_filename" in labels.columns:
        m = labels["orig_filename"].astype(str).str.extract(_KERMANY_PATIENT)
        key = np.where(m["person"].notna(), "person" + m["person"].fillna(""),
                       np.where(m["im"].notna(), m["n2"].fillna("") + "IM" + m["im"].fillna(""),
                                "row" + pd.Series(np.arange(n)).astype(str)))
    else:
        key = np.array([f"row{i}" for i in range(n)])
    parent = pd.factorize(pd.Series(key))[0].astype(np.int64)
    if "pixel_dup_of" in labels.columns and "image" in labels.columns:
        pos = {img: i for i, img in enumerate(labels["image"].astype(str))}
        root = np.arange(parent.max() + 1 if n else 0)

        def find(g):
            while root[g] != g:
                root[g] = root[root[g]]
                g = root[g]
            return g
        for i, dup in enumerate(labels["pixel_dup_of"]):
            if isinstance(dup, str) and dup in pos:
                a, b = find(parent[i]), find(parent[pos[dup]])
                if a != b:
                    root[max(a, b)] = min(a, b)
        parent = np.array([find(g) for g in parent], dtype=np.int64)
    return pd.factorize(parent)[0].astype(np.int64)


def internal_splits(groups, y, *, test_fraction: float = 0.15, val_fraction: float = 0.15,
                    random_state: int = 17) -> dict[str, np.ndarray]:
    """Fixed ``train`` / ``val`` / ``test`` row indices: patient- and duplicate-safe, stratified by class.

    The internal test part (``test_fraction`` of the groups) is drawn first with
    :func:`ehr.splits.holdout_groups` (``random_state``), then ``val_fraction`` of all groups is
    drawn from the rest (``random_state + 1``). Groups come from :func:`patient_groups`, so every
    image of a patient and every pixel-identical copy sit on one side. The test part is for the
    final recipe only, once; choices are made on ``val``.
    """
    from ehr.splits import holdout_groups

    groups, y = np.asarray(groups), np.asarray(y)
    rest, test = holdout_groups(groups, test_fraction, y=y, random_state=random_state)
    tr, va = holdout_groups(groups[rest], val_fraction / (1 - test_fraction), y=y[rest],
                            random_state=random_state + 1)
    return {"train": rest[tr], "val": rest[va], "test": test}


def cached_image_folder(data_dir: str | PathLike, image_size: int, cache: str | PathLike, *, findings=None,
                        split: str | None = None, progress: bool = False) -> ImageSet:
    """:func:`read_image_folder`, kept as one ``.npz`` (uint8 images) so that later runs decode no image.

    The cache is reused only when it was made from the same folder, ``labels.csv`` (sha256), image
    files (names, sizes and modification times), size, findings and split; otherwise it is rebuilt
    (written to a temporary name, then renamed).
    """
    import hashlib
    import json
    import os

    data_dir, cache = Path(data_dir), Path(cache)
    files = hashlib.sha256()  # another folder with the same labels.csv, or an image edited in place
    for p in sorted(q for q in data_dir.rglob("*") if q.suffix.lower() in (".png", ".jpg", ".jpeg")):
        st = p.stat()
        files.update(f"{p.relative_to(data_dir)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = json.dumps({"labels_sha256": hashlib.sha256((data_dir / "labels.csv").read_bytes()).hexdigest(),
                      "data_dir": str(data_dir.resolve()), "images": files.hexdigest(),
                      "image_size": int(image_size), "findings": list(findings) if findings else None,
                      "split": split}, sort_keys=True)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return ImageSet(z["images"], z["labels"], tuple(z["findings"].tolist()), z["groups"],
                                z["ids"].tolist())
    data = read_image_folder(data_dir, image_size, findings=findings, split=split, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(tmp, key=np.array(key), images=data.images, labels=data.labels, findings=np.array(data.findings),
             groups=data.groups, ids=np.array(data.ids))
    os.replace(tmp, cache)
    return data


def read_class_folders(data_dir: str | PathLike, image_size: int, findings, *, progress: bool = False) -> ImageSet:
    """Read ``DIR/<CLASS>/*.png|jpg|jpeg``: a folder named after a finding is positive for it, a
    negative folder (``NORMAL``, ``no_finding``, see :data:`NEGATIVE_LABELS`) has no finding.

    Any other folder is an error naming it. Each image is its own group.
    """
    data_dir = Path(data_dir)
    names = {f.lower(): k for k, f in enumerate(findings)}
    rows, labels = [], []
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        key = sub.name.lower()
        if key not in names and key not in NEGATIVE_LABELS:
            raise ValueError(f"{sub}: folder name is neither a finding {tuple(findings)} nor a negative class "
                             f"{sorted(NEGATIVE_LABELS)}")
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        y = np.zeros(len(findings), dtype=np.float32)
        if key in names:
            y[names[key]] = 1.0
        rows += files
        labels += [y] * len(files)
    if not rows:
        raise FileNotFoundError(f"{data_dir}: no labels.csv and no class folders with images "
                                f"(expected e.g. NORMAL/ and {str(findings[0]).upper()}/)")
    images = load_images(rows, image_size, progress=progress)
    return ImageSet(images, np.stack(labels), tuple(findings), np.arange(len(rows), dtype=np.int64),
                    [str(p.relative_to(data_dir)) for p in rows])


def read_labelled(data_dir: str | PathLike, image_size: int, findings, *, progress: bool = False) -> ImageSet:
    """A labelled folder either way: ``labels.csv`` (:func:`read_image_folder`) or class subfolders."""
    if (Path(data_dir) / "labels.csv").is_file():
        return read_image_folder(data_dir, image_size, findings=findings, progress=progress)
    return read_class_folders(data_dir, image_size, findings, progress=progress)


def load_images(paths, image_size: int, *, progress: bool = False) -> np.ndarray:
    """Load image files (contract-checked) and resize to ``image_size``; ``uint8 (N, S, S)``."""
    out = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
    it = paths
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(paths, desc="loading images", unit="img")
    for i, p in enumerate(it):
        out[i] = resize_uint8(load_image(p), image_size)
    return out


def read_image_folder(data_dir: str | PathLike, image_size: int, *, findings=None, split: str | None = None,
                      limit: int | None = None, progress: bool = False) -> ImageSet:
    """Read a folder with ``labels.csv`` (column ``image`` = path relative to the folder).

    Parameters
    ----------
    data_dir : path-like
        Folder holding ``labels.csv`` and the images (Kermany and NIH layouts both work).
    image_size : int
        Images are resized to ``image_size x image_size``.
    findings : sequence of str, optional
        Finding columns to use (matched case-insensitively, so ``"effusion"`` finds NIH
        ``Effusion``); default: all of :func:`finding_columns`.
    split : str, optional
        Keep only rows whose ``split`` column starts with this value (e.g. ``"train"``).
    limit : int, optional
        Read only the first ``limit`` rows (smoke tests).
    progress : bool
        Show a progress bar while loading.

    Raises
    ------
    FileNotFoundError, KeyError, ValueError, ImageContractError
        Missing ``labels.csv`` or ``image`` column, unknown finding, non-0/1 label (row named),
        bad image (file named).
    """
    data_dir = Path(data_dir)
    csv = data_dir / "labels.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{data_dir}: no labels.csv (expected columns 'image' and 0/1 finding columns)")
    labels = pd.read_csv(csv)
    if "image" not in labels.columns:
        raise KeyError(f"{csv}: missing column 'image' (path of each image relative to {data_dir})")
    if split is not None:
        if "split" not in labels.columns:
            raise KeyError(f"{csv}: split={split!r} asked for but there is no 'split' column")
        labels = labels[labels["split"].astype(str).str.startswith(split)]
    if limit is not None:
        labels = labels.iloc[:limit]
    labels = labels.reset_index(drop=True)
    if findings is None:
        cols = list(finding_columns(labels))
        if not cols:
            raise ValueError(f"{csv}: no 0/1 finding columns found")
        findings = tuple(cols)
    else:
        findings = tuple(findings)
        cols = _match_findings(list(labels.columns), findings, str(csv))
    y = labels[cols]
    bad = ~y.isin([0, 1]).to_numpy()
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{csv}: row {r + 2} ({labels['image'].iloc[r]}), column '{cols[c]}': "
                         f"label {y.iloc[r, c]!r} is not 0/1")
    images = load_images([data_dir / p for p in labels["image"]], image_size, progress=progress)
    return ImageSet(images, y.to_numpy(dtype=np.float32), findings, patient_groups(labels),
                    labels["image"].astype(str).tolist())


def read_npz(path: str | PathLike, *, split: str = "train", image_size: int | None = None,
             findings=None) -> ImageSet:
    """Read a MedMNIST-style ``.npz`` (``<split>_images`` ``(N, H, W)`` uint8, ``<split>_labels`` ``(N, K)``).

    ``findings`` names the K label columns (default ``label_0 .. label_{K-1}``). Each image is its
    own group (MedMNIST has no patient ids).
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImageContractError(f"{path}: cannot read npz ({exc})") from None
    ki, kl = f"{split}_images", f"{split}_labels"
    if ki not in data or kl not in data:
        raise KeyError(f"{path}: missing arrays '{ki}' / '{kl}'; has {sorted(data.files)}")
    images, y = data[ki], data[kl]
    if images.ndim == 4 and images.shape[-1] in (3, 4):
        raise ImageContractError(f"{path}: '{ki}' has {images.shape[-1]} channels; expected grayscale (N, H, W)")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ImageContractError(f"{path}: '{ki}' must be uint8 (N, H, W); got {images.dtype} {images.shape}")
    y = y.reshape(len(y), -1)
    if not np.isin(y, [0, 1]).all():
        r = int(np.flatnonzero(~np.isin(y, [0, 1]).all(axis=1))[0])
        raise ValueError(f"{path}: '{kl}' row {r} is not 0/1 (multi-class labels need one-hot columns)")
    findings = tuple(findings) if findings is not None else tuple(f"label_{k}" for k in range(y.shape[1]))
    if len(findings) != y.shape[1]:
        raise ValueError(f"{path}: {len(findings)} findings named but '{kl}' has {y.shape[1]} columns")
    for i in range(len(images)):
        if images[i].max() == images[i].min():
            raise ImageContractError(f"{path}: image {i} of '{ki}' is constant")
    if image_size is not None and images.shape[1:] != (image_size, image_size):
        images = np.stack([resize_uint8(a, image_size) for a in images])
    return ImageSet(np.ascontiguousarray(images), y.astype(np.float32), findings,
                    np.arange(len(images), dtype=np.int64), [f"{split}:{i}" for i in range(len(images))])
