"""The deep models as SepsisScope estimators: the EHR sequence model and the EHR+CXR fusion models.

``SequenceModel``            kind ``"sequence"``: 2-layer LSTM (or GRU) over hourly value / mask /
                             time-gap channels; the deep comparator next to LightGBM
``FusionModel(strategy=)``   kind ``"fusion"``, named ``fusion_<strategy>``: ``"mid"`` (the proposed
                             attention mid-fusion), ``"early"``, ``"late"``, ``"medfuse"``

Both read only the screens table (:mod:`fusion.sequences`; fusion models also the ``emb_cxr_*``
columns of :func:`fusion.embeddings.attach_embeddings`) and follow ``ehr.estimator``:
``fit(screens, labels=None)``, ``predict_proba``, ``explain`` (:mod:`fusion.explain`), ``save`` /
``load`` (``model.json`` + ``weights.safetensors``; never pickled).

Fitting: the stays are split by patient (``ehr.splits.holdout_groups``, stratified by septic
stay) into training and validation parts; the network trains with focal loss (class-balanced
batches optional) and early-stops on the validation AUPRC (:mod:`fusion.training`); a temperature
is then fitted on the validation screens' logits (``evaluation.calibration.fit_temperature``).
Late fusion trains its EHR and image branches separately; MedFuse-style trains the EHR model
first, then the unified head on paired hours only (EHR encoder frozen), each branch with its own
temperature.

Predicting needs every screen hour of each stay (the history is read from the rows).

``FusionModel(finetune="last_block", encoder=DIR, image_root=DIR)`` (mid, early) also fine-tunes
the imaging encoder's last block with the network, at ``encoder_lr``; the rest of the encoder stays
frozen (:class:`fusion.networks.FinetunedImages`). It reads each film's file from the screens
(``emb_cxr_image``) and saves the encoder's weights in its own ``weights.safetensors``. On the
synthetic linked cohort it did not change mid fusion's AUROC or AUPRC (README, 3 seeds).

Examples
--------
>>> from fusion._demo import demo_screens
>>> s = demo_screens(n_stays=24, seed=0)
>>> m = SequenceModel(hidden=8, head_hidden=8, epochs=1, random_state=0).fit(s)
>>> m.predict_proba(s).shape
(336, 2)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from ehr.artefacts import model_file
from ehr.estimator import Labels, SepsisEstimator
from ehr.schema import SchemaError
from ehr.splits import holdout_groups
from evaluation.calibration import fit_temperature
from fusion.networks import FinetunedImages, build_net
from fusion.sequences import EMB_AGE, EMB_IMAGE, EMB_PREFIX, SequenceInputs, Sequences
from fusion.training import fit_network, network_outputs, resolve_device

__all__ = ["SequenceModel", "FusionModel", "FINETUNE", "STRATEGIES"]

STRATEGIES = ("mid", "early", "late", "medfuse")
#: how a fusion model treats the imaging encoder: its embeddings as given, or its last block fine-tuned
FINETUNE = ("frozen", "last_block")
_FINETUNABLE = ("mid", "early")
_WEIGHTS = "weights.safetensors"


class SequenceModel(SepsisEstimator):
    """EHR-only sequence model (2-layer LSTM by default).

    Parameters
    ----------
    hidden, layers, cell : recurrent encoder size, depth, ``"lstm"`` or ``"gru"``
    dropout, head_hidden : MLP head (and between recurrent layers)
    epochs, batch_size, lr, weight_decay, patience : Adam training with early stopping (epochs
        without a better validation AUPRC)
    focal_gamma : focal loss exponent
    balanced : class-balanced batches (every septic stay and as many others per epoch); off by
        default: on a 10,000-stay subset of PhysioNet set A it lowered the held-out AUROC from 0.791
        to 0.729 (see :mod:`fusion.training`)
    validation_fraction : share of patients held out for early stopping and the temperature
    max_age_h : time gaps are capped here
    max_batches_per_epoch : cap on batches per epoch (quick runs, tests)
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``
    amp : bfloat16 autocast: ``"auto"`` (on CUDA only), True, False
    random_state : seeds initialisation, dropout, the validation split and the batches

    Attributes
    ----------
    inputs_ : SequenceInputs (z-score statistics, columns)
    net_ : torch module
    temperature_ : float
    history_ : list of dict (per epoch: loss, validation AUPRC, seconds; per training stage)
    horizon_h_ : float - the label horizon it was trained for (``Labels.horizon_h``)
    """

    kind: ClassVar[str] = "sequence"
    #: reads each stay's history from the screens: score and explain every screen hour of a stay
    reads_history: ClassVar[bool] = True
    _max_images: ClassVar[int | None] = None

    def __init__(self, *, hidden: int = 64, layers: int = 2, cell: str = "lstm", dropout: float = 0.2,
                 head_hidden: int = 64, epochs: int = 20, batch_size: int = 32, lr: float = 2e-3,
                 weight_decay: float = 1e-5, patience: int = 3, focal_gamma: float = 2.0, balanced: bool = False,
                 validation_fraction: float = 0.2, max_age_h: float = 168.0,
                 max_batches_per_epoch: int | None = None, device: str = "auto", amp="auto", random_state: int = 0):
        self.hidden = hidden
        self.layers = layers
        self.cell = cell
        self.dropout = dropout
        self.head_hidden = head_hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.focal_gamma = focal_gamma
        self.balanced = balanced
        self.validation_fraction = validation_fraction
        self.max_age_h = max_age_h
        self.max_batches_per_epoch = max_batches_per_epoch
        self.device = device
        self.amp = amp
        self.random_state = random_state

    # -- configuration ------------------------------------------------------------------------
    @property
    def strategy_(self) -> str:
        return "ehr"

    def _images(self) -> int | None:
        return self._max_images

    def _net_kwargs(self) -> dict:
        return {"hidden": self.hidden, "layers": self.layers, "cell": self.cell, "dropout": self.dropout,
                "head_hidden": self.head_hidden}

    def _input_kwargs(self) -> dict:
        return {"max_images": self._images()}

    def _build(self, n_channels: int, image_dim: int, inputs: SequenceInputs):
        return build_net(self.strategy_, n_channels, image_dim, **self._net_kwargs())

    def _check_built(self, seq: Sequences) -> None:
        """Checks of the freshly built network against the training data (none here)."""

    def _device(self) -> tuple[torch.device, bool]:
        device = resolve_device(self.device)
        amp = device.type == "cuda" if self.amp == "auto" else bool(self.amp)
        return device, amp

    def _train_kwargs(self, device, amp, seed_offset: int = 0) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "patience": self.patience, "gamma": self.focal_gamma,
                "balanced": self.balanced, "seed": self.random_state + seed_offset, "device": device,
                "amp": amp, "max_batches": self.max_batches_per_epoch}

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, screens: pd.DataFrame, labels: Labels | None = None) -> "SequenceModel":
        """Fit on ``screens`` (every screen hour of each stay); labels default to the screens'."""
        labels = Labels.coerce(labels, screens)
        device, amp = self._device()
        # seeded without touching the global generators (CUDA's too when training there)
        cuda_ids = ([torch.cuda.current_device() if device.index is None else device.index]
                    if device.type == "cuda" else [])
        with torch.random.fork_rng(devices=cuda_ids):
            torch.manual_seed(self.random_state)
            inputs = SequenceInputs(max_age_h=self.max_age_h, **self._input_kwargs()).fit(screens)
            seq = inputs.transform(screens)
            y = labels.y[seq.order].astype(np.float32)
            groups = screens["subject_id" if "subject_id" in screens.columns else "stay_id"].to_numpy()
            stay_pos = np.maximum.reduceat(y, seq.starts) > 0 if len(y) else np.zeros(0, bool)
            train, val = holdout_groups(groups[seq.order][seq.starts], self.validation_fraction, y=stay_pos,
                                        random_state=self.random_state)
            image_dim = 0 if seq.study_emb is None else seq.study_emb.shape[1]
            self.net_ = self._build(seq.x.shape[1], image_dim, inputs)
            self._check_built(seq)
            self.history_ = self._fit_stages(seq, y, train, val, device, amp)
            self.temperature_ = self._fit_temperature(seq, y, val, device, amp)
        self.inputs_ = inputs
        self.image_dim_ = image_dim
        self.horizon_h_ = labels.horizon_h
        self.features_in_ = inputs.columns_
        keys = pd.util.hash_pandas_object(screens[["stay_id", "screen_time"]], index=False).to_numpy()
        self.data_hashes_ = {"screens": hashlib.sha256(keys.tobytes() + labels.y.tobytes()).hexdigest()}
        self.net_.to("cpu")
        return self

    def _fit_stages(self, seq: Sequences, y, train, val, device, amp) -> list[dict]:
        return [dict(h, stage="network")
                for h in fit_network(self.net_, seq, y, train, val, **self._train_kwargs(device, amp))]

    @staticmethod
    def _temperature(net, seq: Sequences, y, val, device, amp, rows=None) -> float:
        pos = seq.positions(val)
        z = network_outputs(net, seq, val, device=device, amp=amp)["logits"][pos]
        yv = y[pos]
        if rows is not None:
            z, yv = z[rows[pos]], yv[rows[pos]]
        if len(yv) == 0:
            return 1.0
        return float(fit_temperature(z, yv))  # T = 1 when the validation screens hold one class

    def _fit_temperature(self, seq, y, val, device, amp) -> float:
        return self._temperature(self.net_, seq, y, val, device, amp)

    # -- predicting ---------------------------------------------------------------------------
    def _outputs(self, seq: Sequences, keys=("logits",)) -> dict[str, np.ndarray]:
        """Network outputs in sorted row order; ``logits`` divided by the temperature."""
        device, amp = self._device()
        out = network_outputs(self.net_, seq, keys=keys, device=device, amp=amp)
        out["logits"] = out["logits"] / self.temperature_
        return out

    def predict_proba(self, screens: pd.DataFrame) -> np.ndarray:
        """``(n, 2)``: column 1 is the risk of onset within the horizon, per screen (rows as given)."""
        self._check_fitted("net_")
        self.check_screens(screens)
        seq = self.inputs_.transform(screens)
        risk = np.empty(len(screens))
        risk[seq.order] = expit(self._outputs(seq)["logits"])
        return np.column_stack([1.0 - risk, risk])

    def explain(self, screens: pd.DataFrame, rows=None, *, model_name: str | None = None) -> pd.DataFrame:
        """Occlusion explanations (see :mod:`fusion.explain`) of ``rows`` (default: every screen).

        ``screens`` holds every screen hour of each stay (:attr:`reads_history`); ``rows`` picks the
        ones to explain. ``model_name`` names the model in the table (default :attr:`model_name`).
        """
        from fusion.explain import occlusion_explanations

        self._check_fitted("net_")
        self.check_screens(screens)
        out = occlusion_explanations(self, screens, rows)
        return out if model_name is None else out.assign(model=model_name)

    # -- persistence --------------------------------------------------------------------------
    def _write_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()},
                  str(directory / _WEIGHTS))

    def _state(self) -> dict:
        return {"inputs": self.inputs_.state(), "temperature": self.temperature_, "image_dim": self.image_dim_,
                "horizon_h": self.horizon_h_, "history": self.history_}

    def _restore(self, directory: Path, meta: dict) -> None:
        from safetensors.torch import load_file

        state = meta["state"]
        self.inputs_ = SequenceInputs.from_state(state["inputs"])
        self.image_dim_ = int(state["image_dim"])
        self.temperature_ = float(state["temperature"])
        self.history_ = list(state.get("history", []))
        self.horizon_h_ = float(state["horizon_h"])
        self.net_ = self._build(len(self.inputs_.channels_), self.image_dim_, self.inputs_)
        self.net_.load_state_dict(load_file(str(model_file(directory, meta, _WEIGHTS))))
        self.net_.eval()


class FusionModel(SequenceModel):
    """EHR+CXR fusion model; ``strategy`` in ``"mid"``, ``"early"``, ``"late"``, ``"medfuse"``.

    Parameters
    ----------
    strategy : str
        ``"mid"``: attention mid-fusion; ``"early"``: film features at the input; ``"late"``:
        average of EHR and image probabilities; ``"medfuse"``: unified head on paired hours.
    max_images : int
        Most recent films each screen attends to (mid); the others use the latest.
    image_proj : int
        Size of the projected film embedding (early, late, medfuse).
    finetune : str
        ``"frozen"`` (default): the films' embeddings are read from the screens as they are.
        ``"last_block"`` (mid, early): the imaging ``encoder``'s last block is fine-tuned jointly
        with the fusion network, the rest of the encoder frozen (:class:`fusion.networks.FinetunedImages`);
        the screens then also carry each film's file (``emb_cxr_image``,
        ``attach_embeddings(..., image_paths=True)``), loaded lazily. The model is named
        ``fusion_<strategy>_ft`` and saves the whole encoder's weights in its own safetensors.
    encoder : str, optional
        With ``finetune="last_block"``: the imaging model directory (``CXRFindingClassifier.save``)
        that made the embeddings; fitting checks that it reproduces them.
    encoder_lr : float
        Learning rate of the fine-tuned block (lower than ``lr``: it starts trained).
    image_root : str, optional
        Directory the films' relative paths start from (fine-tuning; also when predicting).
    image_cache : int
        Most films whose frozen-encoder activations are kept in memory (an LRU cache).
    **others : as :class:`SequenceModel`.
    """

    kind: ClassVar[str] = "fusion"

    def __init__(self, strategy: str = "mid", *, max_images: int = 3, image_proj: int = 16, finetune: str = "frozen",
                 encoder: str | None = None, encoder_lr: float = 2e-4, image_root: str | None = None,
                 image_cache: int = 2048, hidden: int = 64,
                 layers: int = 2, cell: str = "lstm", dropout: float = 0.2, head_hidden: int = 64, epochs: int = 20,
                 batch_size: int = 32, lr: float = 2e-3, weight_decay: float = 1e-5, patience: int = 3,
                 focal_gamma: float = 2.0, balanced: bool = False, validation_fraction: float = 0.2,
                 max_age_h: float = 168.0, max_batches_per_epoch: int | None = None, device: str = "auto",
                 amp="auto", random_state: int = 0):
        self.strategy = strategy
        self.max_images = max_images
        self.image_proj = image_proj
        self.finetune = finetune
        self.encoder = encoder
        self.encoder_lr = encoder_lr
        self.image_root = image_root
        self.image_cache = image_cache
        shared = {k: v for k, v in locals().items()
                  if k not in ("self", "strategy", "max_images", "image_proj", "finetune", "encoder", "encoder_lr",
                               "image_root", "image_cache", "__class__")}
        SequenceModel.__init__(self, **shared)

    @property
    def strategy_(self) -> str:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        return self.strategy

    @property
    def model_name(self) -> str:
        return f"fusion_{self.strategy}" + ("_ft" if self.finetune == "last_block" else "")

    def _finetuning(self) -> bool:
        """Whether the encoder's last block trains with the network (validates the options)."""
        if self.finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {FINETUNE}, got {self.finetune!r}")
        if self.finetune == "frozen":
            return False
        if self.strategy_ not in _FINETUNABLE:
            raise ValueError(f"finetune='last_block' trains one network end to end: strategy must be one of "
                             f"{_FINETUNABLE}, got {self.strategy!r} (trained in stages)")
        return True

    def _input_kwargs(self) -> dict:
        return {**super()._input_kwargs(), "image_paths": self._finetuning()}

    def _encoder_network(self):
        """The imaging encoder: read from ``encoder`` when fitting, rebuilt (untrained) when loading."""
        from imaging.estimator import CXRFindingClassifier
        from imaging.models import CXRFindingModel

        spec = getattr(self, "encoder_spec_", None)
        if spec is not None:  # loading: the weights come with this model's own safetensors
            return CXRFindingModel(arch=spec["arch"], findings=tuple(spec["findings"]), image_size=spec["image_size"])
        if not self.encoder:
            raise ValueError("finetune='last_block' needs encoder: the imaging model directory that made the "
                             "CXR embeddings (e.g. <embed-cxr out>/encoder)")
        enc = CXRFindingClassifier.load(self.encoder).network_.to("cpu").eval()
        self.encoder_spec_ = {"arch": enc.arch, "findings": list(enc.findings), "image_size": int(enc.image_size),
                              "source": str(self.encoder)}
        return enc

    def _build(self, n_channels: int, image_dim: int, inputs: SequenceInputs):
        net = super()._build(n_channels, image_dim, inputs)
        if not self._finetuning():
            return net
        enc = self._encoder_network()
        if enc.feature_dim != image_dim:
            raise ValueError(f"encoder {self.encoder}: {enc.feature_dim}-dimensional features, but the screens "
                             f"carry {image_dim} embedding columns; use the encoder that made the embeddings")
        frozen, block = enc.split_last_block()
        return FinetunedImages(net, frozen, block, enc.image_size, inputs.emb_mean_, inputs.emb_scale_,
                               image_root=self.image_root, cache_size=self.image_cache)

    def _check_built(self, seq: Sequences) -> None:
        """Fine-tuning: the encoder must reproduce the embeddings on the screens (a few films checked)."""
        if not self._finetuning() or seq.study_emb is None or len(seq.study_emb) < 2:
            return
        rows = np.arange(1, min(len(seq.study_emb), 9))
        with torch.no_grad():
            got = self.net_.embed(seq.study_paths[rows].tolist(), "cpu").numpy()
        want = seq.study_emb[rows] * self.net_.emb_scale.numpy() + self.net_.emb_mean.numpy()
        err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))
        if err > 1e-3:
            raise ValueError(f"encoder {self.encoder} does not reproduce the CXR embeddings on the screens (film "
                             f"{seq.study_paths[rows[0]]}: relative difference {err:.3g}); fine-tune the "
                             "encoder that made them")

    def _fit_stages(self, seq, y, train, val, device, amp) -> list[dict]:
        if self._finetuning():
            net = self.net_
            own = [p for name, p in net.named_parameters() if not name.startswith(("frozen.", "block."))]
            groups = [{"params": own}, {"params": list(net.block.parameters()), "lr": self.encoder_lr}]
            hist = fit_network(net, seq, y, train, val, parameters=groups, **self._train_kwargs(device, amp))
            return [dict(h, stage="network") for h in hist]
        return self._fit_staged(seq, y, train, val, device, amp)

    def check_screens(self, screens: pd.DataFrame, where: str = "screens") -> None:
        """As :meth:`SequenceModel.check_screens`, naming the CXR embeddings when they are what is missing."""
        self._check_fitted("features_in_")
        if EMB_IMAGE in self.inputs_.columns_ and EMB_IMAGE not in screens.columns:
            raise SchemaError(f"{where}: no {EMB_IMAGE} column (each film's image file) that this {self.model_name} "
                              "model reads: it fine-tunes the imaging encoder; attach the embeddings with "
                              "fusion.attach_embeddings(..., image_paths=True)")
        lacking = [c for c in self.inputs_.columns_ if c.startswith(EMB_PREFIX) and c not in screens.columns]
        if lacking:
            raise SchemaError(f"{where}: no CXR embeddings ({lacking[0]} ... {EMB_AGE}) that this {self.model_name} "
                              "model reads; attach the studies' embeddings first (fusion.attach_embeddings; on "
                              "the command line --embeddings cxr_embeddings.parquet)")
        super().check_screens(screens, where)

    def _images(self) -> int:
        self.strategy_  # noqa: B018 - validates before any work
        if int(self.max_images) < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        return int(self.max_images)

    def _net_kwargs(self) -> dict:
        return {**super()._net_kwargs(), "image_proj": self.image_proj}

    def _fit_staged(self, seq, y, train, val, device, amp) -> list[dict]:
        if self.strategy_ == "late":
            ehr = fit_network(self.net_.ehr, seq, y, train, val, **self._train_kwargs(device, amp))
            img = fit_network(self.net_.image, seq, y, train, val, **self._train_kwargs(device, amp, 1))
            return [dict(h, stage="ehr") for h in ehr] + [dict(h, stage="image") for h in img]
        if self.strategy_ == "medfuse":
            ehr = fit_network(self.net_.ehr, seq, y, train, val, **self._train_kwargs(device, amp))
            net = self.net_
            net.ehr_temperature.fill_(self._temperature(net.ehr, seq, y, val, device, amp))  # its own calibration
            paired = (seq.image_index[:, 0] > 0).astype(np.float32)
            unified = list(net.project.parameters()) + list(net.unified.parameters())
            uni = fit_network(net, seq, y, train, val, parameters=unified, row_weight=paired,
                              **self._train_kwargs(device, amp, 1))
            return [dict(h, stage="ehr") for h in ehr] + [dict(h, stage="unified") for h in uni]
        return super()._fit_stages(seq, y, train, val, device, amp)

    def _fit_temperature(self, seq, y, val, device, amp) -> float:
        if self.strategy_ != "medfuse":
            return super()._fit_temperature(seq, y, val, device, amp)
        # the EHR branch is already calibrated: scale only the unified head, on paired hours
        paired = seq.image_index[:, 0] > 0
        t = self._temperature(self.net_, seq, y, val, device, amp, rows=paired)
        with torch.no_grad():
            last = self.net_.unified[-1]
            last.weight.div_(t)
            last.bias.div_(t)
        return 1.0

    def fit(self, screens: pd.DataFrame, labels: Labels | None = None) -> "FusionModel":
        """As :meth:`SequenceModel.fit`; with ``finetune="last_block"`` the encoder is read from ``encoder``."""
        self.__dict__.pop("encoder_spec_", None)  # a refit starts from the encoder directory, not the last fit
        return super().fit(screens, labels)

    def _state(self) -> dict:
        state = super()._state()
        if self._finetuning():
            state["encoder"] = dict(self.encoder_spec_)
        return state

    def _restore(self, directory: Path, meta: dict) -> None:
        spec = meta["state"].get("encoder")
        if spec is not None:
            self.encoder_spec_ = dict(spec)
        super()._restore(directory, meta)
