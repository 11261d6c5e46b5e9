"""Tiny seeded fixtures for the fusion tests (fits of a few seconds, shared per session)."""

from __future__ import annotations

import pytest

from fusion._demo import demo_screens
from fusion.models import FusionModel, SequenceModel

TINY = {"hidden": 8, "head_hidden": 8, "image_proj": 4, "epochs": 2, "batch_size": 8, "random_state": 0}


def tiny(strategy: str | None = None, **kw):
    """A tiny (untrained) sequence model, or fusion model of ``strategy``."""
    if strategy is None:
        return SequenceModel(**{k: v for k, v in {**TINY, **kw}.items() if k != "image_proj"})
    return FusionModel(strategy, max_images=2, **{**TINY, **kw})


@pytest.fixture(scope="session")
def screens_img():
    return demo_screens(n_stays=30, seed=0, hours=8, images=True)


@pytest.fixture(scope="session")
def fitted(screens_img):
    """Every model fitted once on the same tiny screens: ``{"sequence": m, "gru": m, "mid": m, ...}``."""
    models = {"sequence": tiny().fit(screens_img), "gru": tiny(cell="gru").fit(screens_img)}
    for strategy in ("mid", "early", "late", "medfuse"):
        models[strategy] = tiny(strategy, balanced=strategy == "early").fit(screens_img)  # both batch schemes
    return models
