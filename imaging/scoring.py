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

__all__ = ["score_cxr_table"]

log = logging.getLogger(__name__)


def score_cxr_table(model, cxr: pd.DataFrame, image_root: str | PathLike | None = None, *,
                    finding_map: dict[str, str] | None = None, batch_size: int = 64, device=None) -> pd.DataFrame:
    """Return a copy of the ``cxr`` table with ``cxr_<finding>`` columns for each model finding.

    Parameters
    ----------
    model : CXRFindingModel
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

    Rows with no ``image_path`` get NaN probabilities (no evidence, never a guess); a missing or
    corrupt image file raises :class:`~imaging.contract.ImageContractError` naming the file and
    the study.
    """
    from imaging.contract import ImageContractError

    validate(cxr, "cxr")
    out = cxr.copy()
    root = Path(image_root) if image_root is not None else Path(".")
    finding_map = finding_map or {}
    unknown = set(finding_map) - set(model.findings)
    if unknown:
        raise KeyError(f"finding_map names {sorted(unknown)}, which the model does not predict {model.findings}")
    cols = [f"cxr_{finding_map.get(f, f)}" for f in model.findings]
    probs = np.full((len(out), len(cols)), np.nan)
    has = out["image_path"].notna().to_numpy() & (out["image_path"].astype(str).str.len() > 0).to_numpy()
    rows = np.flatnonzero(has)
    size = int(model.image_size)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        imgs = []
        for r in chunk:
            path = root / str(out["image_path"].iloc[r])
            try:
                imgs.append(resize_uint8(load_image(path), size))
            except ImageContractError as exc:
                raise ImageContractError(f"cxr row {r} (study_id {out['study_id'].iloc[r]}): {exc}") from None
        probs[chunk] = model.predict_proba(np.stack(imgs), batch_size=batch_size, device=device)
    for k, c in enumerate(cols):
        out[c] = probs[:, k]
    if len(rows) < len(out):
        log.info("cxr: %d of %d studies have no image; their cxr_<finding> are NaN", len(out) - len(rows), len(out))
    return validate(out, "cxr")
