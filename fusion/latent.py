"""The CXR latent space of the DDL-CXR model: whitened PCA of the encoder embedding, and finding probes.

Why PCA and not an autoencoder (as DDL-CXR's VAE): the embedding is already a compressed,
finding-trained representation (the pooled features of the imaging encoder, a few dozen
dimensions), so what is left to do is a linear reduction to ~32 decorrelated, unit-variance
coordinates, which diffusion likes. PCA does that in closed form, deterministically, in
milliseconds on a few thousand films, with an exact linear decoder (the transposed components)
and an explained-variance figure that says what is lost. A nonlinear autoencoder would add a
training loop, a seed dependence and a reconstruction error of its own on top of an encoder that
was itself trained, with little to gain at this size.

Findings are read from a latent by decoding it to embedding space and applying one logistic
probe per finding, fitted on the embeddings of training films and their true findings.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, (200, 4))
>>> emb = rng.normal(size=(200, 12)) + np.repeat(y, 3, axis=1)
>>> space = CXRLatentSpace(n_components=6).fit(emb, y)
>>> z = space.encode(emb)
>>> z.shape, bool(abs(z.std(axis=0, ddof=1) - 1).max() < 1e-6)
((200, 6), True)
>>> space.finding_proba(z).shape
(200, 4)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ehr.artefacts import model_file, read_model_meta, write_model_dir
from ehr.schema import CXR_FINDINGS

__all__ = ["CXRLatentSpace"]


def _matrix(x, name: str, width: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or (width is not None and a.shape[1] != width):
        want = f"(n, {width})" if width is not None else "2-D"
        raise ValueError(f"{name}: expected a {want} array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: row {int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])} is not finite")
    return a


class CXRLatentSpace:
    """Whitened PCA of CXR embeddings with a linear decoder and per-finding logistic probes.

    Parameters
    ----------
    n_components : int or float
        Latent dimension (capped at the embedding dimension and the number of films); a float in
        (0, 1): the fewest components that keep that share of the variance (as scikit-learn's PCA).
        Whitening gives every kept component unit variance, so components that hold no variance
        would only add amplified noise: on the synthetic films' 128-d embedding 8 components keep
        99.3 % and the rest hold almost none, hence ``0.99`` in ``scripts/ddl_synthetic.py``.
    findings : tuple of str
        Names of the probes' findings, in column order of ``y`` in :meth:`fit`.
    probe_c : float
        Inverse L2 strength of the logistic probes.
    """

    kind = "cxr_latent_space"
    format_version = 1

    def __init__(self, n_components: int = 32, *, findings=tuple(CXR_FINDINGS), probe_c: float = 1.0):
        self.n_components = n_components
        self.findings = tuple(findings)
        self.probe_c = probe_c

    def fit(self, embeddings, y) -> "CXRLatentSpace":
        """Fit the PCA on training films' ``embeddings (n, D)`` and the probes on their findings ``y (n, F)``."""
        from sklearn.linear_model import LogisticRegression

        x = _matrix(embeddings, "embeddings")
        y = _matrix(y, "findings y", len(self.findings))
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"fit: {len(x)} embeddings and {len(y)} finding rows; need the same number, >= 2")
        self.mean_ = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        share = np.cumsum(s ** 2) / max((s ** 2).sum(), 1e-300)
        if isinstance(self.n_components, float) and 0 < self.n_components < 1:
            k = int(np.searchsorted(share, self.n_components) + 1)
        elif int(self.n_components) >= 1 and float(self.n_components) == int(self.n_components):
            k = int(min(int(self.n_components), len(s)))
        else:
            raise ValueError("n_components must be an int >= 1 or a share of variance in (0, 1), "
                             f"got {self.n_components}")
        self.components_ = vt[:k]
        self.scale_ = np.maximum(s[:k] / np.sqrt(len(x) - 1), 1e-12)
        self.explained_variance_ratio_ = float((s[:k] ** 2).sum() / max((s ** 2).sum(), 1e-300))
        coef, intercept = [], []
        for j, name in enumerate(self.findings):
            labels = y[:, j] > 0.5
            if labels.all() or not labels.any():
                raise ValueError(f"fit: finding {name!r} is {'always' if labels.all() else 'never'} present; "
                                 "a probe needs both")
            probe = LogisticRegression(C=self.probe_c, max_iter=2000).fit(x, labels)
            coef.append(probe.coef_[0])
            intercept.append(probe.intercept_[0])
        self.probe_coef_, self.probe_intercept_ = np.array(coef), np.array(intercept)
        return self

    @property
    def dim_(self) -> int:
        return len(self.scale_)

    def encode(self, embeddings) -> np.ndarray:
        """Latents ``(n, dim_)`` of embeddings ``(n, D)``."""
        x = _matrix(embeddings, "embeddings", len(self.mean_))
        return ((x - self.mean_) @ self.components_.T) / self.scale_

    def decode(self, latents) -> np.ndarray:
        """Embeddings ``(n, D)`` of latents ``(n, dim_)`` (the projection onto the kept components)."""
        z = _matrix(latents, "latents", self.dim_)
        return self.mean_ + (z * self.scale_) @ self.components_

    def finding_proba(self, latents) -> np.ndarray:
        """Probability of each finding ``(n, F)`` read from latents (decoded, then probed)."""
        logit = self.decode(latents) @ self.probe_coef_.T + self.probe_intercept_
        return 1.0 / (1.0 + np.exp(-logit))

    # -- persistence: model.json + safetensors ------------------------------------------------
    _ARRAYS = ("mean_", "components_", "scale_", "probe_coef_", "probe_intercept_")

    def save(self, directory) -> Path:
        """Write ``model.json`` and ``latent.safetensors`` to ``directory`` (atomically)."""
        from safetensors.numpy import save_file

        if not hasattr(self, "mean_"):
            raise ValueError("CXRLatentSpace is not fitted; call fit first")

        def write(tmp: Path) -> None:
            save_file({a: np.ascontiguousarray(getattr(self, a)) for a in self._ARRAYS},
                      str(tmp / "latent.safetensors"))

        config = {"n_components": self.n_components, "findings": list(self.findings), "probe_c": self.probe_c}
        return write_model_dir(directory, kind=self.kind, format_version=self.format_version, config=config,
                               features=[], write_files=write,
                               state={"explained_variance_ratio": self.explained_variance_ratio_})

    @classmethod
    def load(cls, directory) -> "CXRLatentSpace":
        """Read a latent space written by :meth:`save`."""
        from safetensors.numpy import load_file

        meta = read_model_meta(directory, kind=cls.kind, format_version=cls.format_version)
        cfg = meta["config"]
        obj = cls(cfg["n_components"], findings=tuple(cfg["findings"]), probe_c=cfg["probe_c"])
        arrays = load_file(str(model_file(directory, meta, "latent.safetensors")))
        for a in cls._ARRAYS:
            setattr(obj, a, arrays[a])
        obj.explained_variance_ratio_ = meta["state"]["explained_variance_ratio"]
        return obj
