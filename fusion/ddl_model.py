"""The DDL-CXR generator as one artefact: screens and film embeddings in, up-to-date film embeddings out.

:class:`CXRLatentGenerator` bundles what generation needs: the sequence inputs (EHR channels),
the latent space (:class:`fusion.latent.CXRLatentSpace`) and the conditional model
(:class:`fusion.ddl.LatentDiffusion`). ``fit(screens, embeddings, findings)`` learns from
consecutive films of the screens' stays; :meth:`~CXRLatentGenerator.generated_films` gives, for
every screen with a film, the generated film of that hour (decoded to the embedding space, dated
at the screen), and :meth:`~CXRLatentGenerator.attach` puts them on the screens, where a fusion
model reads them as it reads observed films (``sepsiscope train fusion --cxr-latent generated``).

Saved as a directory: ``model.json`` (sequence-input statistics), ``latent_space/`` and
``generator/`` (each ``model.json`` + safetensors).

Examples
--------
>>> from fusion._demo import demo_screens
>>> from fusion.sequences import studies_from_screens
>>> s = demo_screens(n_stays=12, seed=0, hours=8, images=True)
>>> films = studies_from_screens(s).assign(study_id=lambda d: range(len(d)))
>>> y = (films[["emb_cxr_000"]].to_numpy() > films["emb_cxr_000"].median()).repeat(4, axis=1)
>>> g = CXRLatentGenerator(n_components=2, findings=("a", "b", "c", "d"), epochs=1, hidden=8, ehr_hidden=4,
...                        timesteps=10, sample_steps=2).fit(s, films, y)
>>> out = g.attach(s)
>>> bool(out["emb_cxr_age_h"].dropna().eq(0).all())
True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ehr.artefacts import read_model_meta, write_model_dir
from ehr.schema import CXR_FINDINGS
from fusion.ddl import LatentDiffusion
from fusion.ddl_data import film_pairs, screen_conditions
from fusion.embeddings import attach_embeddings, embedding_names
from fusion.latent import CXRLatentSpace
from fusion.sequences import SequenceInputs, embedding_columns

__all__ = ["CXRLatentGenerator"]


class CXRLatentGenerator:
    """Sequence inputs + latent space + :class:`~fusion.ddl.LatentDiffusion`, fitted and saved together.

    Parameters
    ----------
    n_components : int
        Latent dimension.
    window_h : int
        Hours of EHR since the previous film that condition the generation (the most recent).
    findings : tuple of str
        Names of the finding columns given to :meth:`fit` (for the latent space's probes).
    **ddl_params
        :class:`~fusion.ddl.LatentDiffusion` parameters (``method``, ``epochs``, ``contrastive_weight`` ...).
    """

    kind = "ddl_cxr_generator"
    format_version = 1

    def __init__(self, n_components: int = 32, *, window_h: int = 48, findings=tuple(CXR_FINDINGS), **ddl_params):
        self.n_components = n_components
        self.window_h = window_h
        self.findings = tuple(findings)
        self.ddl_params = ddl_params

    def fit(self, screens: pd.DataFrame, embeddings: pd.DataFrame, findings) -> "CXRLatentGenerator":
        """Learn from ``embeddings`` (one row per film, aligned with ``findings (n, F)``) of the screens' stays."""
        y = np.asarray(findings, dtype=np.float64)
        if y.shape != (len(embeddings), len(self.findings)):
            raise ValueError(f"findings: expected shape ({len(embeddings)}, {len(self.findings)}) (one row per "
                             f"film, one column per finding), got {y.shape}")
        stays = screens["stay_id"].unique()
        mine = embeddings["stay_id"].isin(stays).to_numpy()
        cols = embedding_columns(embeddings.columns)
        self.space_ = CXRLatentSpace(self.n_components, findings=self.findings).fit(
            embeddings.loc[mine, cols].to_numpy(), y[mine])
        self.inputs_ = SequenceInputs().fit(screens)
        pairs = film_pairs(screens, embeddings, self.inputs_, window_h=self.window_h, stays=stays)
        if len(pairs.gap_h) < 2:
            raise ValueError(f"fit: {len(pairs.gap_h)} pairs of consecutive films in these stays; need at least 2")
        self.model_ = LatentDiffusion(**self.ddl_params).fit(
            self.space_.encode(pairs.previous), self.space_.encode(pairs.target), pairs.ehr, pairs.gap_h,
            pairs.lengths)
        self.embedding_dim_ = len(cols)
        return self

    def generated_films(self, screens: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
        """One generated film per screen with a film: ``study_id, stay_id, time`` (the screen) and ``emb_cxr_*``."""
        if not hasattr(self, "model_"):
            raise ValueError("CXRLatentGenerator is not fitted; call fit or load first")
        cond = screen_conditions(screens, self.inputs_, window_h=self.window_h)
        z = self.model_.sample(self.space_.encode(cond.previous), cond.ehr, cond.gap_h, cond.lengths, seed=seed)
        table = pd.DataFrame(self.space_.decode(z), columns=embedding_names(self.embedding_dim_))
        keys = pd.DataFrame({"study_id": np.arange(len(table)), "stay_id": cond.keys["stay_id"].to_numpy(),
                             "time": cond.keys["time"].to_numpy()})
        return pd.concat([keys, table], axis=1)

    def attach(self, screens: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
        """``screens`` (observed films attached) where every screen with a film sees the generated film of its hour."""
        return attach_embeddings(screens, self.generated_films(screens, seed=seed))

    def save(self, directory, *, attachments: dict | None = None) -> Path:
        """Write ``model.json``, ``latent_space/`` and ``generator/`` (and ``attachments``) atomically."""
        if not hasattr(self, "model_"):
            raise ValueError("CXRLatentGenerator is not fitted; call fit first")

        def write(tmp: Path) -> None:
            self.space_.save(tmp / "latent_space")
            self.model_.save(tmp / "generator")

        config = {"n_components": self.n_components, "window_h": self.window_h, "findings": list(self.findings),
                  "ddl_params": self.ddl_params}
        return write_model_dir(directory, kind=self.kind, format_version=self.format_version, config=config,
                               features=self.inputs_.columns_, write_files=write,
                               state={"inputs": self.inputs_.state(), "embedding_dim": self.embedding_dim_},
                               attachments=attachments)

    @classmethod
    def load(cls, directory) -> "CXRLatentGenerator":
        """Read a generator written by :meth:`save`."""
        directory = Path(directory)
        meta = read_model_meta(directory, kind=cls.kind, format_version=cls.format_version)
        cfg = meta["config"]
        obj = cls(cfg["n_components"], window_h=cfg["window_h"], findings=tuple(cfg["findings"]),
                  **cfg["ddl_params"])
        obj.inputs_ = SequenceInputs.from_state(meta["state"]["inputs"])
        obj.embedding_dim_ = int(meta["state"]["embedding_dim"])
        obj.space_ = CXRLatentSpace.load(directory / "latent_space")
        obj.model_ = LatentDiffusion.load(directory / "generator")
        return obj
