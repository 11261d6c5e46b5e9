"""Tiny seeded image fixtures for the imaging tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imaging.synthetic_images import render_study


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A labels.csv folder of 12 synthetic 48 px studies (effusion in half), two images per patient."""
    root = tmp_path_factory.mktemp("tiny_cxr")
    (root / "images").mkdir()
    rows = []
    for i in range(12):
        eff = i % 2
        Image.fromarray(render_study({"effusion": eff}, seed=i, size=48)).save(root / "images" / f"s{i}.png")
        rows.append({"image": f"images/s{i}.png", "split": "train", "no_finding": 1 - eff, "effusion": eff,
                     "edema": 0, "patient_id": i // 2, "age": 40 + i})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="session")
def effusion_images():
    """80 synthetic 32 px studies, effusion in every other one: (images uint8, labels float32 (N, 1))."""
    y = np.arange(80) % 2
    imgs = np.stack([render_study({"effusion": int(v)}, seed=1000 + i, size=32) for i, v in enumerate(y)])
    return imgs, y[:, None].astype(np.float32)
