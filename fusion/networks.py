"""The torch networks of the deep models: recurrent EHR encoder, image branches, fusion, heads.

Every network maps a batch of :meth:`fusion.sequences.Sequences.batch` to ``{"logits": (B, T)}``
(one logit per screen hour; unidirectional, so hour ``t`` sees only hours ``<= t``), plus
``"attention"`` for mid-fusion.

``SequenceNet``     EHR only: 2-layer LSTM (or GRU) over value / mask / time-gap channels, MLP head
``EarlyFusionNet``  the latest film (projected embedding, age, "has film") concatenated to the EHR input
``MidFusionNet``    the EHR hidden state queries the most recent films with additive (Bahdanau)
                    attention; each film's age enters its key; a learned "no image" key and value
                    let attention fall back to the EHR alone (it takes all the weight when no film exists)
``ImageNet``        the latest film alone (the image branch of late fusion)
``LateFusionNet``   the average of the EHR and image probabilities
``MedFuseNet``      a unified head on [frozen EHR state, latest film] where a film exists, the EHR
                    prediction where none does
``FinetunedImages`` wraps a one-stage fusion network (mid, early): the films' embeddings come from
                    the imaging encoder's last block, trained jointly with it, over the frozen
                    rest of the encoder (whose activations per film are cached)

The recurrent encoder always runs in float32 with autocast off: under CUDA mixed precision only
the projections, attention and heads run in bfloat16, whatever autocast does with RNN kernels.

Examples
--------
>>> import torch
>>> net = MidFusionNet(n_channels=5, image_dim=8, hidden=16)
>>> batch = {"x": torch.zeros(2, 3, 5), "valid": torch.ones(2, 3, dtype=torch.bool),
...          "images": torch.zeros(1, 8), "image_index": torch.zeros(2, 3, 2, dtype=torch.long),
...          "image_age_h": torch.zeros(2, 3, 2)}
>>> out = net(batch)
>>> tuple(out["logits"].shape), out["attention"][..., 0].min().item()
((2, 3), 1.0)
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["AdditiveAttention", "EarlyFusionNet", "FinetunedImages", "ImageNet", "LateFusionNet", "MedFuseNet", "MidFusionNet",
           "RecurrentEncoder", "SequenceNet", "age_features", "build_net"]

#: Time constants (hours) of the film-age features; log-age is scaled by a week.
_AGE_SCALES_H = (24.0, 72.0)
_LOG_WEEK = float(torch.log1p(torch.tensor(168.0)))
N_AGE_FEATURES = 1 + len(_AGE_SCALES_H)


def age_features(age_h: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` features of a film's age: log-age (per week) and two exponential decays.

    >>> age_features(torch.tensor([0.0]))[0].tolist()
    [0.0, 1.0, 1.0]
    """
    age = age_h.clamp(min=0.0).unsqueeze(-1)
    return torch.cat([torch.log1p(age) / _LOG_WEEK] + [torch.exp(-age / s) for s in _AGE_SCALES_H], dim=-1)


class RecurrentEncoder(nn.Module):
    """Stacked LSTM/GRU over ``(B, T, C)``; returns the hidden state of the top layer ``(B, T, H)``."""

    def __init__(self, n_in: int, hidden: int, layers: int = 2, cell: str = "lstm", dropout: float = 0.1):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if rnn is None:
            raise ValueError(f"cell must be 'lstm' or 'gru', got {cell!r}")
        self.rnn = rnn(n_in, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.rnn(x.float())[0]


class Head(nn.Sequential):
    """MLP head with dropout: ``(..., n_in) -> (...)`` logits."""

    def __init__(self, n_in: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z).squeeze(-1)


def _latest(batch: dict, proj: nn.Module) -> torch.Tensor:
    """``[proj(latest film) * has, age features * has, has]`` per hour, ``(B, T, P + 4)``."""
    idx = batch["image_index"][..., 0]
    has = (idx > 0).unsqueeze(-1).float()
    emb = proj(batch["images"])[idx]
    return torch.cat([emb * has, age_features(batch["image_age_h"][..., 0]) * has, has], dim=-1)


class SequenceNet(nn.Module):
    """EHR-only sequence model."""

    def __init__(self, n_channels: int, hidden: int = 64, layers: int = 2, cell: str = "lstm",
                 dropout: float = 0.2, head_hidden: int = 64, **_):
        super().__init__()
        self.encoder = RecurrentEncoder(n_channels, hidden, layers, cell, dropout)
        self.head = Head(hidden, head_hidden, dropout)

    def forward(self, batch: dict) -> dict:
        return {"logits": self.head(self.encoder(batch["x"]))}


class EarlyFusionNet(nn.Module):
    """Early fusion: the latest film's projected embedding joins the EHR channels at the input."""

    def __init__(self, n_channels: int, image_dim: int, hidden: int = 64, layers: int = 2, cell: str = "lstm",
                 dropout: float = 0.2, head_hidden: int = 64, image_proj: int = 16, **_):
        super().__init__()
        self.project = nn.Linear(image_dim, image_proj)
        self.encoder = RecurrentEncoder(n_channels + image_proj + N_AGE_FEATURES + 1, hidden, layers, cell, dropout)
        self.head = Head(hidden, head_hidden, dropout)

    def forward(self, batch: dict) -> dict:
        x = torch.cat([batch["x"], _latest(batch, self.project).to(batch["x"].dtype)], dim=-1)
        return {"logits": self.head(self.encoder(x))}


class AdditiveAttention(nn.Module):
    """Bahdanau attention of a query over films plus a learned "no image" key/value.

    ``score_j = v . tanh(W_q q + W_k e_j + W_a age(a_j))``; the no-image key replaces
    ``W_k e_j + W_a age(a_j)``. Films that do not exist are masked out, so with none the
    no-image entry gets weight exactly 1.
    """

    def __init__(self, query_dim: int, image_dim: int, hidden: int):
        super().__init__()
        self.query = nn.Linear(query_dim, hidden, bias=False)
        self.key = nn.Linear(image_dim, hidden)
        self.age = nn.Linear(N_AGE_FEATURES, hidden, bias=False)
        self.value = nn.Linear(image_dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.null_key = nn.Parameter(torch.zeros(hidden))
        self.null_value = nn.Parameter(torch.zeros(hidden))

    def forward(self, query, images, index, age_h) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, k = index.shape
        keys = self.key(images)[index] + self.age(age_features(age_h))
        keys = torch.cat([self.null_key.expand(b, t, 1, -1).to(keys.dtype), keys], dim=2)
        score = self.score(torch.tanh(self.query(query).unsqueeze(2) + keys)).squeeze(-1).float()
        present = torch.cat([torch.ones_like(index[..., :1], dtype=torch.bool), index > 0], dim=2)
        weights = torch.softmax(score.masked_fill(~present, float("-inf")), dim=-1)
        values = self.value(images)[index]
        values = torch.cat([self.null_value.expand(b, t, 1, -1).to(values.dtype), values], dim=2)
        return (weights.unsqueeze(-1) * values.float()).sum(dim=2), weights


class MidFusionNet(nn.Module):
    """Mid fusion: the EHR state attends over the most recent films (the proposed model)."""

    def __init__(self, n_channels: int, image_dim: int, hidden: int = 64, layers: int = 2, cell: str = "lstm",
                 dropout: float = 0.2, head_hidden: int = 64, **_):
        super().__init__()
        self.encoder = RecurrentEncoder(n_channels, hidden, layers, cell, dropout)
        self.attention = AdditiveAttention(hidden, image_dim, hidden)
        self.head = Head(2 * hidden, head_hidden, dropout)

    def forward(self, batch: dict) -> dict:
        h = self.encoder(batch["x"])
        ctx, weights = self.attention(h, batch["images"], batch["image_index"], batch["image_age_h"])
        return {"logits": self.head(torch.cat([h, ctx.to(h.dtype)], dim=-1)), "attention": weights}


class ImageNet(nn.Module):
    """The latest film alone (with its age and a "has film" flag), per hour."""

    def __init__(self, image_dim: int, dropout: float = 0.2, head_hidden: int = 64, image_proj: int = 16, **_):
        super().__init__()
        self.project = nn.Linear(image_dim, image_proj)
        self.head = Head(image_proj + N_AGE_FEATURES + 1, head_hidden, dropout)

    def forward(self, batch: dict) -> dict:
        return {"logits": self.head(_latest(batch, self.project))}


def _prob_logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-7, 1 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


class LateFusionNet(nn.Module):
    """Late fusion: the average of the separately trained EHR and image probabilities."""

    def __init__(self, ehr: SequenceNet, image: ImageNet):
        super().__init__()
        self.ehr, self.image = ehr, image

    def forward(self, batch: dict) -> dict:
        p = (torch.sigmoid(self.ehr(batch)["logits"].float()) + torch.sigmoid(self.image(batch)["logits"].float())) / 2
        return {"logits": _prob_logit(p)}


class MedFuseNet(nn.Module):
    """MedFuse-style: a unified head on paired hours, the EHR model's own prediction elsewhere.

    The EHR encoder (trained first on sepsis labels) is frozen here; the film embedding comes from
    the imaging encoder trained on finding labels. Only ``unified`` is trained on paired hours.
    """

    def __init__(self, ehr: SequenceNet, image_dim: int, hidden: int = 64, dropout: float = 0.2,
                 head_hidden: int = 64, image_proj: int = 16, **_):
        super().__init__()
        self.ehr = ehr
        self.project = nn.Linear(image_dim, image_proj)
        self.unified = Head(hidden + image_proj + N_AGE_FEATURES + 1, head_hidden, dropout)
        #: temperature of the EHR branch (its own calibration), applied where no film exists
        self.register_buffer("ehr_temperature", torch.ones(()))

    def forward(self, batch: dict) -> dict:
        with torch.no_grad():
            h = self.ehr.encoder(batch["x"])
            ehr_logits = self.ehr.head(h).float() / self.ehr_temperature
        fused = self.unified(torch.cat([h, _latest(batch, self.project).to(h.dtype)], dim=-1)).float()
        has = batch["image_index"][..., 0] > 0
        return {"logits": torch.where(has, fused, ehr_logits), "paired": has}


class FinetunedImages(nn.Module):
    """A fusion network whose film embeddings come from the imaging encoder's last block, trained with it.

    The encoder is split by ``imaging.models.CXRFindingModel.split_last_block``: ``frozen`` (no
    gradient, never updated) and ``block`` (fine-tuned, at its own lower learning rate). Per
    batch, each film's ``frozen`` activation is read from an LRU cache of ``cache_size`` films,
    or computed from the image file, loaded lazily from ``image_root``; ``block`` then runs on it
    and its pooled output, z-scored with the statistics of the frozen embeddings the network was
    first fitted on (``emb_mean``, ``emb_scale``), replaces ``batch["images"]``.

    Both encoder parts always run in evaluation mode: batch-norm keeps the encoder's running
    statistics (a batch holds a few dozen films: batch statistics would be noise), which is also
    what makes caching the frozen activations exact. At the start the block is the encoder's, so
    the network sees exactly the frozen embeddings (:meth:`embed` reproduces them).

    Parameters
    ----------
    net : a fusion network reading ``batch["images"]`` (``MidFusionNet``, ``EarlyFusionNet``)
    frozen, block : the encoder's parts (input normalised as ``(x - MEAN) / STD``)
    image_size : the encoder's input size
    emb_mean, emb_scale : z-score statistics of the embeddings (arrays of the block's output size)
    image_root : directory the films' relative paths start from (None: the working directory)
    cache_size : most films whose frozen activations are kept
    """

    def __init__(self, net: nn.Module, frozen: nn.Module, block: nn.Module, image_size: int, emb_mean, emb_scale,
                 *, image_root=None, cache_size: int = 2048):
        super().__init__()
        self.net, self.frozen, self.block = net, frozen, block
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.image_size = int(image_size)
        self.register_buffer("emb_mean", torch.as_tensor(emb_mean, dtype=torch.float32).clone())
        self.register_buffer("emb_scale", torch.as_tensor(emb_scale, dtype=torch.float32).clone())
        self.image_root = image_root
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_misses = 0
        self.frozen.eval()
        self.block.eval()

    def train(self, mode: bool = True) -> "FinetunedImages":
        super().train(mode)
        self.frozen.eval()
        self.block.eval()
        return self

    def _file(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() or self.image_root is None else Path(self.image_root) / p

    @torch.no_grad()
    def frozen_maps(self, paths: list[str], device) -> torch.Tensor:
        """``frozen`` activations of the films ``paths`` (cached; missing ones loaded in one batch)."""
        from imaging.contract import MEAN, STD, prepare_images

        missing = list(dict.fromkeys(p for p in paths if p not in self._cache))
        if missing:
            self.cache_misses += len(missing)
            x = prepare_images([self._file(p) for p in missing], self.image_size).to(device)
            maps = self.frozen((x - MEAN) / STD).float().cpu()
            for p, m in zip(missing, maps):
                self._cache[p] = m
        out = []
        for p in paths:
            self._cache.move_to_end(p)
            out.append(self._cache[p])
        result = torch.stack(out).to(device)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return result

    def embed(self, paths: list[str], device=None) -> torch.Tensor:
        """Pooled block output of the films ``paths``, ``(S, D)``, before z-scoring."""
        device = self.emb_mean.device if device is None else device
        if not paths:
            return torch.zeros(0, self.emb_mean.shape[0], device=device)
        return self.block(self.frozen_maps(paths, device)).mean(dim=(2, 3)).float()

    def forward(self, batch: dict) -> dict:
        z = (self.embed(batch["image_paths"], batch["x"].device) - self.emb_mean) / self.emb_scale
        images = torch.cat([z.new_zeros(1, z.shape[1]), z])  # row 0: "no film"
        return self.net({**batch, "images": images})


def build_net(strategy: str, n_channels: int, image_dim: int = 0, **kw) -> nn.Module:
    """The network of a strategy (``ehr``, ``early``, ``mid``, ``late``, ``medfuse``), untrained."""
    if strategy == "ehr":
        return SequenceNet(n_channels, **kw)
    if strategy == "early":
        return EarlyFusionNet(n_channels, image_dim, **kw)
    if strategy == "mid":
        return MidFusionNet(n_channels, image_dim, **kw)
    if strategy == "late":
        return LateFusionNet(SequenceNet(n_channels, **kw), ImageNet(image_dim, **kw))
    if strategy == "medfuse":
        return MedFuseNet(SequenceNet(n_channels, **kw), image_dim, **kw)
    raise ValueError(f"unknown strategy {strategy!r}; expected ehr, early, mid, late or medfuse")
