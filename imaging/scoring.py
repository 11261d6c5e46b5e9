"""Scoring the ``cxr`` contract table: one ``cxr_<finding>`` probability column per model finding.

Examples
--------
>>> import tempfile, numpy as np, pandas as pd
>>> from imaging.models import CXRFindingModel
>>> from imaging.synthetic_images import render_study
>>> from PIL import Image
>>> root = tempfile.mkdtemp()
>>> Image.fromarray(render_study({"effusion": 1}, seed=0, size=64)).save(root + "/s1.png")
>>> cxr = pd.DataFrame({"study_id": [1], "subject_id": [7], "stay_id": [7],
...                     "time": [pd.Timestamp("2020-01-01")], "image_path": ["s1.png"]})
>>> m = CXRFindingModel(arch="small", findings=("effusion",), image_size=32)
>>> scored = score_cxr_table(m, cxr, root)
>>> bool(0 <= scored.loc[0, "cxr_effusion"] <= 1)
True
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.schema import validate
from imaging.contract import load_image, resize_uint8

__all__ = ["score_cxr_table", "finding_probabilities"]

log = logging.getLogger(__name__)


def finding_probabilities(network, studies: pd.DataFrame, image_root: str | PathLike | None = None, *,
                          batch_size: int = 64, device=None) -> np.ndarray:
    """Calibrated probabilities ``(n, len(network.findings))`` of the images named in ``studies["image_path"]``.

    Relative paths are resolved against ``image_root`` (absolute paths are used as they are). Rows
    with no path get NaN (no evidence, never a guess); a missing or corrupt image file raises
    :class:`~imaging.contract.ImageContractError` naming the row (and ``study_id`` when present).
    Images are read ``batch_size`` at a time.
    """
    from imaging.contract import ImageContractError

    root = Path(image_root) if image_root is not None else Path(".")
    paths = studies["image_path"]
    probs = np.full((len(studies), len(network.findings)), np.nan)
    has = paths.notna().to_numpy() & (paths.astype(str).str.len() > 0).to_numpy()
    rows = np.flatnonzero(has)
    size = int(network.image_size)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        imgs = []
        for r in chunk:
            try:
                imgs.append(resize_uint8(load_image(root / str(paths.iloc[r])), size))
            except ImageContractError as exc:
                study = f" (study_id {studies['study_id'].iloc[r]})" if "study_id" in studies.columns else ""
                raise ImageContractError(f"cxr row {r}{study}: {exc}") from None
        probs[chunk] = network.predict_proba(np.stack(imgs), batch_size=batch_size, device=device)
    if len(rows) < len(studies):
        log.info("cxr: %d of %d studies have no image; their probabilities are NaN",
                 len(studies) - len(rows), len(studies))
    return probs


def score_cxr_table(model, cxr: pd.DataFrame, image_root: str | PathLike | None = None, *,
                    finding_map: dict[str, str] | None = None, batch_size: int = 64, device=None) -> pd.DataFrame:
    """Return a copy of the ``cxr`` table with ``cxr_<finding>`` columns for each model finding.

    Parameters
    ----------
    model : imaging.estimator.CXRFindingClassifier or imaging.models.CXRFindingModel
    cxr : DataFrame
        A ``cxr`` contract table (``ehr.schema``) with ``image_path``.
    image_root : path-like, optional
        Relative ``image_path`` values are resolved against it (absolute paths are used as they are).
    finding_map : dict, optional
        Model finding -> cxr column finding, for a model whose label names differ from
        ``ehr.schema.CXR_FINDINGS`` (the Kermany model's ``pneumonia`` scores ``cxr_consolidation``:
        ``{"pneumonia": "consolidation"}``).
    batch_size : int
        Images scored per batch (and read into memory at a time).

    Rows with no ``image_path`` get NaN probabilities (see :func:`finding_probabilities`).
    """
    validate(cxr, "cxr")
    network = getattr(model, "network_", model)
    finding_map = finding_map or {}
    unknown = set(finding_map) - set(network.findings)
    if unknown:
        raise KeyError(f"finding_map names {sorted(unknown)}, which the model does not predict {network.findings}")
    out = cxr.copy()
    probs = finding_probabilities(network, out, image_root, batch_size=batch_size, device=device)
    for k, f in enumerate(network.findings):
        out[f"cxr_{finding_map.get(f, f)}"] = probs[:, k]
    return validate(out, "cxr")
