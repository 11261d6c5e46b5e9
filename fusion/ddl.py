"""DDL-CXR at CPU scale: generate an up-to-date CXR latent from the previous one and the EHR since.

After Yao et al. (NeurIPS 2024, DDL-CXR): a conditional latent diffusion model learns, from
consecutive pairs of films of one patient, the later film's latent given the earlier film's latent
and the EHR recorded between them; at prediction time it generates the latent of the film that
would be taken *now*. Here the latent is :class:`fusion.latent.CXRLatentSpace` (32-d whitened PCA
of the imaging encoder's embedding), so the denoiser is a small MLP, not a UNet:

* DDPM training (noise prediction, mean-squared error) with the cosine schedule of Nichol &
  Dhariwal; deterministic DDIM sampling (eta 0) with ``sample_steps`` steps;
* the denoiser sees ``[noisy latent, previous latent]`` and is FiLM-modulated (per-block scale and
  shift) by the diffusion step and the condition: the previous latent, an EHR summary (a GRU over
  the hourly :mod:`fusion.sequences` inputs since the previous film; its last state) and the time
  gap (log hours);
* a contrastive term (symmetric InfoNCE over the batch) pulls the EHR summary towards the true
  later latent, so the EHR has to carry what changes on the film. DDL-CXR's own term is a hinge
  on a noise-perturbed EHR condition; InfoNCE is the simpler batch form of the same idea.
  ``contrastive_weight=0`` is the ablation;
* ``method="regression"``: the same network and conditions predicting the later latent directly
  (mean-squared error, no diffusion): the baseline that tells whether sampling adds anything;
* ``use_ehr`` / ``use_previous`` switch a condition off (ablations).

Arrays in, arrays out: ``previous (n, d)``, ``ehr (n, T, C)`` right-padded with ``lengths (n,)``,
``gap_h (n,)``, ``target (n, d)``; :mod:`fusion.ddl_data` builds them from screens and films.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> prev, ehr = rng.normal(size=(64, 3)), rng.normal(size=(64, 4, 2))
>>> m = LatentDiffusion(hidden=16, ehr_hidden=8, epochs=2, timesteps=50, sample_steps=5)
>>> m = m.fit(prev, prev + ehr.mean(axis=1).sum(axis=1, keepdims=True), ehr, np.full(64, 12.0))
>>> m.sample(prev[:5], ehr[:5], np.full(5, 12.0), seed=1).shape
(5, 3)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from ehr.artefacts import model_file, read_model_meta, write_model_dir

__all__ = ["LatentDiffusion", "cosine_alpha_bar"]

_MAX_GAP_H = 168.0


def cosine_alpha_bar(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cumulative signal fraction ``alpha_bar[t]`` (t = 0..timesteps-1) of the cosine schedule.

    Betas from ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)``, clipped at ``max_beta``; strictly
    decreasing, inside (0, 1).

    >>> a = cosine_alpha_bar(100)
    >>> bool(0 < a[-1] < a[0] < 1 and (np.diff(a) < 0).all())
    True
    """
    if int(timesteps) < 2:
        raise ValueError(f"timesteps must be >= 2, got {timesteps}")
    f = np.cos(((np.arange(timesteps + 1) / timesteps + s) / (1 + s)) * math.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 1e-5, max_beta)
    return np.cumprod(1.0 - betas)


def _step_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freq = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    ang = t.float()[:, None] * freq[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class _FiLMBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h, c):
        scale, shift = self.film(c).chunk(2, dim=1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class _DDLNet(nn.Module):
    """Condition encoder (GRU over EHR, previous latent, gap) and a FiLM MLP over the latent."""

    def __init__(self, dim: int, n_channels: int, hidden: int, ehr_hidden: int, blocks: int, proj: int = 32):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.gru = nn.GRU(max(n_channels, 1), ehr_hidden, batch_first=True)
        self.cond = nn.Sequential(nn.Linear(dim + ehr_hidden + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(2 * dim, hidden)
        self.blocks = nn.ModuleList(_FiLMBlock(hidden) for _ in range(blocks))
        self.out = nn.Linear(hidden, dim)
        self.proj_ehr, self.proj_latent = nn.Linear(ehr_hidden, proj), nn.Linear(dim, proj)

    def ehr_summary(self, ehr, lengths):
        out, _ = self.gru(ehr)
        return out[torch.arange(len(ehr)), (lengths - 1).clamp(min=0)]

    def forward(self, x, step, prev, ehr_emb, gap):
        c = self.cond(torch.cat([prev, ehr_emb, gap], dim=1)) + _step_features(step, self.hidden)
        h = self.inp(torch.cat([x, prev], dim=1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)


def _info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b = nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)
    logits = a @ b.T / temperature
    labels = torch.arange(len(a))
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels))


class LatentDiffusion(BaseEstimator):
    """Conditional latent diffusion (or regression) for the up-to-date CXR latent.

    Parameters
    ----------
    method : {"diffusion", "regression"}
    hidden, ehr_hidden, blocks : network width, GRU width, number of FiLM blocks
    timesteps, sample_steps : diffusion steps in training, DDIM steps when sampling
    contrastive_weight, temperature : weight and temperature of the InfoNCE term (0: off)
    use_ehr, use_previous : condition on the EHR summary / the previous latent (False: ablation)
    epochs, batch_size, lr, weight_decay : AdamW training
    random_state : seeds initialisation, batches and noise of :meth:`fit`
    """

    kind = "ddl_cxr"
    format_version = 1
    METHODS = ("diffusion", "regression")

    def __init__(self, *, method: str = "diffusion", hidden: int = 128, ehr_hidden: int = 32, blocks: int = 3,
                 timesteps: int = 200, sample_steps: int = 25, contrastive_weight: float = 0.1,
                 temperature: float = 0.1, use_ehr: bool = True, use_previous: bool = True, epochs: int = 60,
                 batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 1e-4, random_state: int = 0):
        self.method = method
        self.hidden = hidden
        self.ehr_hidden = ehr_hidden
        self.blocks = blocks
        self.timesteps = timesteps
        self.sample_steps = sample_steps
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.use_ehr = use_ehr
        self.use_previous = use_previous
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    # -- inputs ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if self.method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {self.method!r}")
        if not 1 <= int(self.sample_steps) <= int(self.timesteps):
            raise ValueError(f"sample_steps must be in [1, timesteps={self.timesteps}], got {self.sample_steps}")
        if self.contrastive_weight < 0 or self.temperature <= 0:
            raise ValueError("contrastive_weight must be >= 0 and temperature > 0")

    def _tensors(self, previous, ehr, gap_h, lengths, dim=None, channels=None):
        prev = np.asarray(previous, dtype=np.float32)
        if prev.ndim != 2 or (dim is not None and prev.shape[1] != dim):
            raise ValueError(f"previous: expected shape (n, {dim or 'd'}), got {prev.shape}")
        e = np.asarray(ehr, dtype=np.float32)
        if e.ndim != 3 or len(e) != len(prev) or e.shape[1] < 1 or (channels is not None and e.shape[2] != channels):
            raise ValueError(f"ehr: expected shape ({len(prev)}, T >= 1, {channels or 'C'}), got {e.shape}")
        gap = np.asarray(gap_h, dtype=np.float64)
        if gap.shape != (len(prev),) or not np.isfinite(gap).all() or (gap < 0).any():
            raise ValueError(f"gap_h: expected {len(prev)} finite hours >= 0, got shape {gap.shape}")
        lens = np.full(len(prev), e.shape[1]) if lengths is None else np.asarray(lengths, dtype=np.int64)
        if lens.shape != (len(prev),) or (lens < 1).any() or (lens > e.shape[1]).any():
            raise ValueError(f"lengths: expected {len(prev)} values in [1, {e.shape[1]}]")
        for name, a in (("previous", prev), ("ehr", e)):
            if not np.isfinite(a).all():
                raise ValueError(f"{name}: contains missing or infinite values")
        g = np.log1p(np.minimum(gap, _MAX_GAP_H)) / np.log1p(_MAX_GAP_H)
        gap_f = np.column_stack([g, gap / _MAX_GAP_H]).astype(np.float32)
        return (torch.from_numpy(prev), torch.from_numpy(e), torch.from_numpy(gap_f),
                torch.from_numpy(lens))

    def _conditions(self, prev, ehr, gap, lens):
        emb = self.network_.ehr_summary(ehr, lens)
        if not self.use_ehr:
            emb = torch.zeros_like(emb)
        return (prev if self.use_previous else torch.zeros_like(prev)), emb

    # -- training -------------------------------------------------------------------------------
    def fit(self, previous, target, ehr, gap_h, lengths=None) -> "LatentDiffusion":
        """Learn the later latent ``target`` from (previous latent, EHR since, gap)."""
        self._check_params()
        prev, e, gap, lens = self._tensors(previous, ehr, gap_h, lengths)
        y = torch.from_numpy(np.asarray(target, dtype=np.float32))
        if y.shape != prev.shape or not torch.isfinite(y).all():
            raise ValueError(f"target: expected finite values of shape {tuple(prev.shape)}, got {tuple(y.shape)}")
        self.latent_dim_, self.n_channels_ = prev.shape[1], e.shape[2]
        alpha_bar = torch.from_numpy(cosine_alpha_bar(self.timesteps)).float()
        with torch.random.fork_rng():
            torch.manual_seed(int(self.random_state))
            self.network_ = _DDLNet(self.latent_dim_, self.n_channels_, self.hidden, self.ehr_hidden, self.blocks)
            opt = torch.optim.AdamW(self.network_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            self.history_ = []
            n = len(prev)
            for _ in range(int(self.epochs)):
                perm, total = torch.randperm(n), 0.0
                for start in range(0, n, int(self.batch_size)):
                    b = perm[start:start + int(self.batch_size)]
                    loss = self._loss(y[b], prev[b], e[b], gap[b], lens[b], alpha_bar)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(b)
                self.history_.append(total / n)
        self.network_.eval()
        return self

    def _loss(self, y, prev, ehr, gap, lens, alpha_bar):
        p, emb = self._conditions(prev, ehr, gap, lens)
        if self.method == "regression":
            loss = nn.functional.mse_loss(self.network_(torch.zeros_like(y), torch.zeros(len(y)), p, emb, gap), y)
        else:
            step = torch.randint(0, self.timesteps, (len(y),))
            a = alpha_bar[step][:, None]
            noise = torch.randn_like(y)
            x = a.sqrt() * y + (1 - a).sqrt() * noise
            loss = nn.functional.mse_loss(self.network_(x, step, p, emb, gap), noise)
        if self.contrastive_weight > 0 and self.use_ehr and len(y) > 1:
            net = self.network_
            loss = loss + self.contrastive_weight * _info_nce(net.proj_ehr(emb), net.proj_latent(y), self.temperature)
        return loss

    # -- generation ------------------------------------------------------------------------------
    def sample(self, previous, ehr, gap_h, lengths=None, *, seed: int = 0, batch_size: int = 4096) -> np.ndarray:
        """Generated later latents ``(n, d)``; the same ``seed`` gives the same samples."""
        if not hasattr(self, "network_"):
            raise ValueError("LatentDiffusion is not fitted; call fit or load first")
        prev, e, gap, lens = self._tensors(previous, ehr, gap_h, lengths, self.latent_dim_, self.n_channels_)
        gen = torch.Generator().manual_seed(int(seed))
        out = [self._sample_batch(prev[s:s + batch_size], e[s:s + batch_size], gap[s:s + batch_size],
                                  lens[s:s + batch_size], gen) for s in range(0, len(prev), batch_size)]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, self.latent_dim_))

    generate = sample

    @torch.no_grad()
    def _sample_batch(self, prev, ehr, gap, lens, gen):
        p, emb = self._conditions(prev, ehr, gap, lens)
        net = self.network_
        if self.method == "regression":
            return net(torch.zeros_like(prev), torch.zeros(len(prev)), p, emb, gap)
        alpha_bar = torch.from_numpy(cosine_alpha_bar(self.timesteps)).float()
        steps = np.unique(np.linspace(0, self.timesteps - 1, int(self.sample_steps)).round().astype(int))[::-1]
        x = torch.randn(prev.shape, generator=gen)
        for k, t in enumerate(steps):
            a = alpha_bar[t]
            a_next = alpha_bar[steps[k + 1]] if k + 1 < len(steps) else torch.tensor(1.0)
            eps = net(x, torch.full((len(x),), int(t)), p, emb, gap)
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-8.0, 8.0)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x

    # -- persistence: model.json + safetensors ----------------------------------------------------
    def save(self, directory) -> Path:
        """Write ``model.json`` (config, dimensions, loss history) and ``model.safetensors``."""
        from safetensors.torch import save_file

        if not hasattr(self, "network_"):
            raise ValueError("LatentDiffusion is not fitted; call fit first")

        def write(tmp: Path) -> None:
            weights = {k: v.contiguous() for k, v in self.network_.state_dict().items()}
            save_file(weights, str(tmp / "model.safetensors"))

        state = {"latent_dim": self.latent_dim_, "n_channels": self.n_channels_, "history": self.history_}
        return write_model_dir(directory, kind=self.kind, format_version=self.format_version,
                               config=self.get_params(), features=[], write_files=write, state=state)

    @classmethod
    def load(cls, directory) -> "LatentDiffusion":
        """Read a model written by :meth:`save` (weights only: no pickle)."""
        from safetensors.torch import load_file

        meta = read_model_meta(directory, kind=cls.kind, format_version=cls.format_version)
        obj = cls(**meta["config"])
        obj._check_params()
        st = meta["state"]
        obj.latent_dim_, obj.n_channels_, obj.history_ = int(st["latent_dim"]), int(st["n_channels"]), st["history"]
        obj.network_ = _DDLNet(obj.latent_dim_, obj.n_channels_, obj.hidden, obj.ehr_hidden, obj.blocks)
        obj.network_.load_state_dict(load_file(str(model_file(directory, meta, "model.safetensors"))))
        obj.network_.eval()
        return obj
