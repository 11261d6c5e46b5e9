"""``SepsisCPN``: the causal probabilistic network with the scikit-learn face.

A :class:`ehr.estimator.SepsisEstimator`: it saves to ``model.json`` (kind ``cpn``) plus
``network.xml`` (the fitted CPDs, XMLBIF), and refuses screens that lack a column it was fitted on.
Scoring and explaining come from :class:`cpn.scoring.CPNScoring`, which a saved model can also be
read into without scikit-learn (:class:`cpn.scoring.CPNScorer`).

Examples
--------
>>> import numpy as np, pandas as pd
>>> s = pd.DataFrame({"stay_id": [1, 1, 2, 2], "hr": [80.0, 130.0, 75.0, np.nan],
...     "hr_age_h": [0.0, 1.0, 0.0, np.nan], "onset_in_h": [3.0, 2.0, np.nan, np.nan]})
>>> m = SepsisCPN(network="physionet", half_lives="prior", max_iter=3).fit(s)
>>> m.predict_proba(s).shape, m.features_in_
((4, 2), ['stay_id', 'hr', 'hr_age_h'])
>>> m.predict_proba(s.drop(columns="hr"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ehr.schema.SchemaError: screens: missing column(s) hr that this cpn model was trained on; score ...
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.concepts import load_concepts
from ehr.estimator import Labels, SepsisEstimator
from ehr.splits import holdout_groups

from ._pgmpy import pgmpy_classes
from .evidence import EvidenceBuilder, half_life_group, input_columns, small_pages, target_states
from .learning import (binary_target_evidence, conditional_loglik, fit_em, optimise_half_lives,
                       refine_discriminative, search_half_lives)
from .scoring import _GROUPS, NETWORK_FILE, CPNScoring
from .structure import TARGET, TARGET_STATES, load_network, save_network, validate_network

__all__ = ["SepsisCPN"]

logger = logging.getLogger(__name__)

#: how far past the ends of ``half_life_grid`` the multiplier search may go (factors of 2)
HALF_LIFE_MAX_STEPS = 4


def _frame_hash(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


class SepsisCPN(SepsisEstimator, CPNScoring):
    """Causal probabilistic network for sepsis within 48 h, scored with time-decayed evidence.

    Parameters
    ----------
    network : {"physionet", "full"} or path
        A shipped expert network or an XMLBIF file.
    half_lives : {"learn", "prior"} or dict
        ``"learn"``: per concept group (concept kind, ``cxr``) choose a multiplier of the prior
        half-lives by held-out log-likelihood of the target: every value of ``half_life_grid``
        is tried, and when the best lies at an end of the grid the search continues outwards
        in factors of 2 (up to ``HALF_LIFE_MAX_STEPS`` steps) while the likelihood improves;
        ``"prior"``: the ``half_life_h`` of ``concepts.toml``; a dict sets hours per concept.
    half_life_grid : tuple of float
        Multipliers tried for each group (``half_life_search="grid"``).
    half_life_search : {"grid", "golden"}
        How ``half_lives="learn"`` chooses the multipliers. ``"grid"``: the grid above;
        ``"golden"``: :func:`cpn.learning.optimise_half_lives`, coordinate-wise over groups, a
        profile of the held-out log-likelihood on powers of 2 of the multiplier from 2**-6 to 2**8
        refined by golden-section search over its logarithm (not confined to the grid's powers of
        2); a group whose likelihood still rises at 2**8 is reported as not decaying
        (``half_life_profile_[group]["no_decay"]``).
    half_life_em_iter : int
        EM iterations (at most ``max_iter``) for the provisional CPDs the half-lives are chosen
        with; the final fit runs ``max_iter``. On PhysioNet set A this cuts training on all
        783,819 screens from 9.5 to 6.8 min with an unchanged held-out AUROC (two CV folds:
        0.747/0.740 against 0.747/0.739), though the multipliers of groups whose held-out
        likelihood is flat (labs, blood gas) may land elsewhere.
    half_life_fixed : tuple of str
        Half-life groups that ``half_lives="learn"`` leaves at their prior (multiplier 1). Default
        ``("cxr",)``: the CXR films' 48 h. Learned, the held-out likelihood of the target pulls the
        CXR half-life down to minutes or a few hours (x 1/128 to x 1/8 on the synthetic cohort), where
        a film's findings hardly count (in-context log10 B of a present consolidation +0.006); with
        48 h, and the sepsis -> cxr_consolidation edge, the findings' AUROC lift in
        pneumonia-associated sepsis is +0.007 to +0.010 against +0.006 learned
        (``scripts/cxr_lift.py``, issue 13 item 5). A pneumonic consolidation stays on the film
        for days. Has no effect on networks without CXR leaves (``physionet``).
    pseudo_count : float
        Dirichlet pseudo-count for every CPD cell.
    max_iter, tol : int, float
        EM stopping rule.
    max_rows : int or None
        Fit on a random subset of at most this many screens (sampled by stay) to bound time;
        ``None`` (the default): every screen (EM on all 783,819 screens of PhysioNet set A runs on the
        compiled kernel, :mod:`cpn.counts`). ``n_train_rows_`` says how many were used.
    cxr_prior : float or "auto"
        Finding prevalence at which the CXR probabilities were calibrated. ``"auto"``: per finding,
        the mean probability over the training screens that carry it (a calibrated model's mean
        output is that prevalence). A prior above the real one divides every likelihood ratio by
        a constant, the mean ratio falls below 1 and EM then drives ``P(present | parents)`` to 0
        for every parent state, which silences the CXR leaves.
    validation_fraction : float
        Fraction of stays held out for half-life selection (:func:`ehr.splits.holdout_groups`,
        stratified by whether a stay has a screen within 48 h of onset).
    random_state : int
    discriminative_iter : int
        Steps of discriminative refinement after EM (default 40; 0: EM's CPDs as they are).
        :func:`cpn.learning.refine_discriminative` raises the conditional log-likelihood of "onset
        within 48 h" given the evidence on the training screens (Adam on the CPD columns'
        log-parameters, gradient from the two exact E-steps in one pass, L2 pull to EM's CPDs).
        The network stays a proper BN, so explanations stay exact Bayes factors. PhysioNet set A,
        5-fold grouped CV (issue 13, shipped network, 300k-screen EM of 15 iterations): all 40 steps
        at 0.05 gave 0.782 pooled AUROC, early-stopped 0.767; as shipped (every screen, 30 iterations)
        0.788 (``docs/cpn_evidence_experiments.md``).
    discriminative_l2 : float
        Precision of the L2 pull of the refined log-parameters towards EM's, on the *summed* conditional
        log-likelihood of the training screens (a Gaussian prior of fixed strength: the data outweigh it
        more as the training set grows); each step pulls by ``discriminative_l2 / n_train_rows_`` on the
        mean. The default 78.4 is the 1e-4 per screen of the set A cross-validation on all 783,819
        screens, so the shipped physionet fit is unchanged. A pull of 1e-4 per screen whatever the
        size let a small cohort's refinement overfit: on 160 synthetic stays (13,244 screens; the full
        network with derived leaves) it erased the CXR findings (median in-context log10 B of a shown
        consolidation +0.135 with EM's CPDs, +0.006 refined; AUROC on 80 test stays 0.823 and 0.775),
        while 78.4 (5.9e-3 per screen there) kept them (+0.129; AUROC 0.807). On 2,000-stay cohorts
        (3-fold CV, seeds 1-3) the two pulls score alike (full network with derived leaves: 0.828
        against 0.827 pooled AUROC; issue 13, ``cpn/networks/README.md``).
    discriminative_lr : float
        Adam's step size (0.05: the step size of the set A cross-validation).
    discriminative_early_stopping : bool
        False (the default): all ``discriminative_iter`` steps on every training screen, the last CPDs
        kept. True: steps on the training stays only, keeping the step with the best AUROC on
        ``validation_fraction`` of the stays held out (patience 15). On set A this lost 0.015 AUROC:
        the held-out stays were among EM's training rows, so EM's CPDs looked better there than they
        were, and the search stopped after a few steps.
    evidence_states : int or None
        None (the default): concept leaves have the states of their clinical ``concepts.toml`` cuts.
        An int K: ``fit`` first re-cuts every concept leaf at cut-points learned from the training
        screens (:func:`cpn.discretise.learn_cuts`: K quantile states of the values measured within the hour,
        snapped to round numbers; issue 13) and starts EM from the expert prior on those states. The
        fitted network carries the cut-points in its state names, so a saved model scores with them.
        PhysioNet set A fold 0 (derived leaves, 40 discriminative steps): 8 states scored 0.763 AUROC
        against 0.764 with the clinical cuts (0.700 against 0.712 without hours since admission);
        off by default.
    evidence_cuts : {"quantile", "clinical"}
        With ``evidence_states``: quantile cuts only, or the clinical cuts plus the quantile cuts
        that fall between them (:func:`cpn.discretise.learn_cuts` ``mode``).
    batch_size : int
        Rows per engine batch in EM and on the numpy plan (the compiled kernel, used for scoring and
        explanations where numba is installed, runs tiles of its own; its threads are set by
        ``SEPSISCOPE_THREADS``, default every core).

    Attributes
    ----------
    network_ : pgmpy DiscreteBayesianNetwork with fitted CPDs (a loaded model reads it on first use;
        scoring works from ``engine_`` and ``info_``, read without pgmpy by :mod:`cpn.xmlbif`)
    engine_ : InferenceEngine
    half_lives_ : dict node -> hours
    half_life_scale_ : dict group -> multiplier
    half_life_profile_ : dict group -> {"log2_multiplier", "score", "no_decay"}
        The held-out log-likelihood at every multiplier tried (``half_life_search="golden"``;
        empty otherwise): the evidence for the chosen half-lives.
    cxr_prior_ : dict CXR node -> calibration prevalence used for its likelihood ratios
    features_ : list of str (evidence nodes)
    features_in_ : list of str
        Screen columns the evidence was built from at fit time; screens to score must have them.
    em_history_ : list of float
    n_train_rows_ : int
        Screens EM was fitted on (all of them unless ``max_rows`` drew a subset).
    discriminative_history_ : list of dict
        Per refinement step: training conditional log-likelihood and held-out AUROC (empty when
        ``discriminative_iter`` is 0).
    """

    def __init__(self, network="physionet", *, half_lives="learn",
                 half_life_grid=(0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), pseudo_count=1.0, max_iter=30,
                 tol=1e-5, max_rows=None, cxr_prior="auto", validation_fraction=0.2,
                 random_state=0, batch_size=2048, half_life_em_iter=10, half_life_search="grid",
                 half_life_fixed=("cxr",), discriminative_iter=40, discriminative_l2=78.4,
                 discriminative_lr=0.05, discriminative_early_stopping=False, evidence_states=None,
                 evidence_cuts="quantile"):
        self.network = network
        self.half_lives = half_lives
        self.half_life_grid = half_life_grid
        self.half_life_em_iter = half_life_em_iter
        self.half_life_search = half_life_search
        self.half_life_fixed = half_life_fixed
        self.pseudo_count = pseudo_count
        self.max_iter = max_iter
        self.tol = tol
        self.max_rows = max_rows
        self.cxr_prior = cxr_prior
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.batch_size = batch_size
        self.discriminative_iter = discriminative_iter
        self.discriminative_l2 = discriminative_l2
        self.discriminative_lr = discriminative_lr
        self.discriminative_early_stopping = discriminative_early_stopping
        self.evidence_states = evidence_states
        self.evidence_cuts = evidence_cuts

    # ------------------------------------------------------------------ helpers
    def _cxr_sums(self, screens) -> dict:
        """Per CXR node: (sum, count) of its probabilities over the screens that carry one."""
        out = {}
        for v in self.features_:
            if self.info_.roles[v] == "cxr":
                p = screens[v].to_numpy(dtype=float) if v in screens.columns else np.array([])
                p = p[~np.isnan(p)]
                out[v] = (float(p.sum()), int(p.size))
        return out

    def _cxr_prior_from_sums(self, sums: dict) -> dict:
        """The calibration prevalence per CXR node from :meth:`_cxr_sums` (added over parts of the data)."""
        out = {}
        for v, (total, count) in sums.items():
            if self.cxr_prior != "auto":
                out[v] = float(self.cxr_prior)
            else:
                # clipped so that a finding seen (almost) never or always keeps finite ratios
                out[v] = float(np.clip(total / count, 0.01, 0.99)) if count else 0.5
        return out

    def _prepare_network(self) -> None:
        """Load and check the network; set up the engine with its starting CPDs."""
        net = load_network(self.network) if isinstance(self.network, (str, Path)) else self.network
        validate_network(net, origin=str(self.network))
        copy = net.copy()
        for v in net.nodes():  # pgmpy's copy() drops node attributes (the roles)
            copy.nodes[v].update(net.nodes[v])
        self._setup(copy)

    def _initial_half_lives(self) -> dict:
        """The half-lives EM starts from (checks ``half_lives`` and ``cxr_prior``)."""
        if isinstance(self.half_lives, dict):
            hl = {**self._prior_half_lives(), **self.half_lives}
        elif self.half_lives in ("prior", "learn"):
            hl = self._prior_half_lives()
        else:
            raise ValueError(f"half_lives must be 'learn', 'prior' or a dict, got {self.half_lives!r}")
        if self.half_life_search not in ("grid", "golden"):
            raise ValueError(f"half_life_search must be 'grid' or 'golden', got {self.half_life_search!r}")
        if not (self.cxr_prior == "auto" or 0.0 < float(self.cxr_prior) < 1.0):
            raise ValueError(f"cxr_prior must be 'auto' or in (0, 1), got {self.cxr_prior!r}")
        return hl

    def _prior_half_lives(self):
        concepts = load_concepts()
        out = {}
        for v in self.features_:
            role = self.info_.roles[v]
            if role == "concept":
                out[v] = concepts[v].half_life_h
            elif role == "cxr":
                out["cxr"] = 48.0
        return out

    # ------------------------------------------------------------------ fit
    def fit(self, screens: pd.DataFrame, labels: Labels | None = None):
        """Learn CPDs (EM, Dirichlet prior) and half-lives from screens.

        Parameters
        ----------
        screens : DataFrame
            Screens table (``ehr.schema`` "screens").
        labels : ehr.estimator.Labels, optional
            Hours from screen to onset (``labels.onset_in_h``; NaN = never septic) define the
            time-to-onset target; default ``screens["onset_in_h"]``.

        Returns
        -------
        self
        """
        with small_pages():
            return self._fit(screens, labels)

    def _fit(self, screens, labels):
        self._prepare_network()
        onset = Labels.coerce(labels, screens).onset_in_h
        self.features_in_ = [c for c in input_columns(self.info_) if c in screens.columns]
        rng = np.random.default_rng(self.random_state)
        stays = screens["stay_id"].to_numpy() if "stay_id" in screens.columns else np.arange(len(screens))
        rows = np.arange(len(screens))
        if self.max_rows is not None and len(screens) > self.max_rows:
            uniq = rng.permutation(np.unique(stays))
            frac = self.max_rows / len(screens)
            rows = np.flatnonzero(np.isin(stays, uniq[: max(1, int(len(uniq) * frac))]))
        t_state = target_states(onset)
        if self.evidence_states:
            self._learn_evidence_states(screens.iloc[rows])
        self.data_hashes_ = {"screens": _frame_hash(screens)}
        self.n_train_rows_ = int(len(rows))

        hl = self._initial_half_lives()
        sub = screens if len(rows) == len(screens) else screens.iloc[rows]  # (iloc copies every column)
        self.cxr_prior_ = self._cxr_prior_from_sums(self._cxr_sums(sub))
        self.half_life_scale_, self.half_life_profile_ = {}, {}
        # the screens are read, checked and discretised once (the derived leaves' trends included);
        # the half-life search and EM only re-decay the leaves whose half-life they change
        builder = EvidenceBuilder(sub, self.info_, cxr_prior=self.cxr_prior_)
        del sub
        ev = None
        if self.half_lives == "learn":
            hl, ev = self._learn_half_lives(builder, stays[rows], t_state[rows], hl)
        self.half_lives_ = hl
        if ev is None:
            ev, _ = builder.evidence(hl)
        del builder
        ev[TARGET] = np.eye(len(TARGET_STATES))[t_state[rows]]
        self.em_history_ = fit_em(self.engine_, ev, pseudo_count=self.pseudo_count,
                                  max_iter=self.max_iter, tol=self.tol, batch_size=self.batch_size)
        self.discriminative_history_ = []
        if self.discriminative_iter:
            self.discriminative_history_ = self._refine(ev, rows, stays, t_state)
        self._sync_network()
        return self

    def _learn_evidence_states(self, screens) -> None:
        """Re-cut the concept leaves at cut-points learned from ``screens`` (``evidence_states``)."""
        from .discretise import learn_cuts
        from .structure import with_concept_cuts

        cuts = {}
        for v in self.features_:
            if self.info_.roles[v] != "concept" or v not in screens.columns:
                continue
            x = screens[v].to_numpy(dtype=float)
            age = screens.get(f"{v}_age_h")
            if age is not None:  # each measurement once (hourly screens), not once per screen it is carried to
                fresh = x[age.to_numpy(dtype=float) < 1.0]
                x = fresh if fresh.size >= 50 else x
            cuts[v] = learn_cuts(v, x, int(self.evidence_states), mode=self.evidence_cuts)
        self._setup(with_concept_cuts(self.network_, cuts))

    def _refine(self, ev, rows, stays, t_state):
        """Discriminative refinement after EM (:func:`cpn.learning.refine_discriminative`): the
        conditional log-likelihood of "onset within 48 h" on every training screen, all
        ``discriminative_iter`` steps; with ``discriminative_early_stopping``, on the training stays
        only, early-stopped on the AUROC of ``validation_fraction`` of the stays held out (it then
        reorders the rows of the arrays of ``ev`` in place). (Not on their conditional
        log-likelihood: on PhysioNet set A that worsens from the first step, through calibration,
        while the ranking of held-out screens improves by 0.015 AUROC.)"""
        from sklearn.metrics import roc_auc_score

        y = _GROUPS[t_state[rows], 0]
        s = stays[rows]
        if not self.discriminative_early_stopping:
            ev = {k: v for k, v in ev.items() if k != TARGET}
            return refine_discriminative(self.engine_, ev, binary_target_evidence(_GROUPS, y), target=TARGET,
                                         max_iter=int(self.discriminative_iter), learning_rate=self.discriminative_lr,
                                         l2=self._l2_per_row(len(y)), optimizer="adam")
        if len(np.unique(s)) < 2:
            logger.warning("too few stays for the discriminative refinement; EM's CPDs kept")
            return []
        tr, va = holdout_groups(s, self.validation_fraction, y=y, random_state=self.random_state + 1)
        # the rows of ``ev`` are put in place into the order (training stays, held-out stays), each part
        # in the order it had: views instead of copies of (much) memory, the same numbers
        order = np.concatenate([tr, va])
        ev = {k: v for k, v in ev.items() if k != TARGET}
        for a in ev.values():
            a[...] = a[order]
        ev_tr = {k: v[:len(tr)] for k, v in ev.items()}
        ev_va = {k: v[len(tr):] for k, v in ev.items()}
        y_va = y[va].astype(bool)

        def val_score(engine):
            if y_va.all() or not y_va.any():
                return 0.0
            return float(roc_auc_score(y_va, engine.posterior(ev_va, batch_size=self.batch_size) @ _GROUPS[:, 0]))

        return refine_discriminative(self.engine_, ev_tr, binary_target_evidence(_GROUPS, y[tr]), target=TARGET,
                                     val_score=val_score, max_iter=int(self.discriminative_iter),
                                     learning_rate=self.discriminative_lr, l2=self._l2_per_row(len(tr)),
                                     optimizer="adam", patience=15)

    def _l2_per_row(self, n_rows: int) -> float:
        """The refinement's pull on the mean conditional log-likelihood of ``n_rows`` screens
        (``discriminative_l2`` is on their sum)."""
        return float(self.discriminative_l2) / max(int(n_rows), 1)

    def _learn_half_lives(self, builder, stays, t_state, hl):
        """Half-lives by held-out likelihood. ``builder``: the training screens' :class:`EvidenceBuilder`;
        ``stays`` and ``t_state`` per training screen. Returns the half-lives and the evidence of every
        training screen for them (in the builder's row order), or ``(hl, None)`` with too few stays."""
        if len(np.unique(stays)) < 2:
            logger.warning("too few stays to learn half-lives; using the prior half-lives")
            return hl, None
        # whole stays held out, stratified by whether a stay has a screen within 48 h of onset
        tr, va = holdout_groups(stays, self.validation_fraction, y=_GROUPS[t_state, 0],
                                random_state=self.random_state)
        held = {"val": builder.take(va)}
        # every screen's evidence, the training stays' rows first: the provisional EM reads a view of
        # it, and the final EM the same arrays once the leaves whose half-life the search changed are
        # rewritten (in place) and the rows put back in order. The same numbers as building the two
        # apart, without allocating (or holding) the two; fresh memory is slow to come by on a VM.
        order = np.concatenate([tr, va])
        every = builder.take(order)
        ev, _ = every.evidence(hl)
        ev_tr = {k: a[:len(tr)] for k, a in ev.items()}
        ev_tr[TARGET] = np.eye(len(TARGET_STATES))[t_state[tr]]
        fit_em(self.engine_, ev_tr, pseudo_count=self.pseudo_count,
               max_iter=min(self.max_iter, self.half_life_em_iter),
               tol=self.tol, batch_size=self.batch_size)
        del ev_tr

        def score_many(candidates):
            return [conditional_loglik(self.engine_, held["val"].evidence(half_lives)[0], t_state[va])
                    for half_lives in candidates]

        best = self._search_half_lives(hl, score_many)
        held.clear()  # the held-out stays' evidence
        ev, _ = every.evidence(best, overwrite=True)
        del every  # its arrays are permuted next
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        for a in ev.values():
            a[...] = a[back]
        return best, ev

    def _search_half_lives(self, hl: dict, score_many) -> dict:
        """Multipliers per half-life group (:func:`cpn.learning.search_half_lives` or
        :func:`cpn.learning.optimise_half_lives`); sets ``half_life_scale_`` and ``half_life_profile_``."""
        def group_of(k):
            return "cxr" if k == "cxr" else half_life_group(k, "concept")

        fixed = {k: v for k, v in hl.items() if group_of(k) in self.half_life_fixed}
        free = {k: v for k, v in hl.items() if k not in fixed}

        def score(candidates):
            return score_many([{**fixed, **c} for c in candidates])

        self.half_life_profile_ = {}
        if not free:
            best, self.half_life_scale_ = {}, {}
        elif self.half_life_search == "golden":
            best, self.half_life_scale_, self.half_life_profile_ = optimise_half_lives(free, group_of, score)
        else:
            best, self.half_life_scale_ = search_half_lives(free, group_of, self.half_life_grid, score,
                                                            max_steps=HALF_LIFE_MAX_STEPS)
        self.half_life_scale_.update({group_of(k): 1.0 for k in fixed})
        return {**fixed, **best}

    def _sync_network(self):
        TabularCPD = pgmpy_classes()[1]
        net = self.network_
        for v in self.engine_.nodes:
            old = net.get_cpds(v)
            parents = self.engine_.parents[v]
            vals = self.engine_.cpds[v].reshape(self.engine_.cards[v], -1)
            net.remove_cpds(old)
            net.add_cpds(TabularCPD(v, self.engine_.cards[v], vals, evidence=parents or None,
                                    evidence_card=[self.engine_.cards[p] for p in parents] or None,
                                    state_names={u: list(old.state_names[u]) for u in [v, *parents]}))

    # ------------------------------------------------------------------ predict / explain
    # ------------------------------------------------------------------ artefacts
    def _config(self) -> dict:
        config = self.get_params(deep=False)
        # a network passed as an object is saved with its CPDs; its config can only say so
        config["network"] = "custom" if hasattr(config["network"], "nodes") else str(config["network"])
        return config

    @classmethod
    def _config_from_json(cls, config: dict) -> dict:
        # a model.json from before half_life_fixed learned every group, the CXR films' included
        return {"half_life_fixed": (), **config, "half_life_grid": tuple(config["half_life_grid"]),
                **({"half_life_fixed": tuple(config["half_life_fixed"])} if "half_life_fixed" in config else {})}

    def _write_files(self, directory: Path) -> None:
        save_network(self.network_, directory / NETWORK_FILE)

    def _state(self) -> dict:
        return {"evidence_nodes": self.features_, "half_lives": self.half_lives_,
                "half_life_scale": self.half_life_scale_, "half_life_profile": self.half_life_profile_,
                "cxr_prior": self.cxr_prior_,
                "em_history": self.em_history_, "n_train_rows": self.n_train_rows_,
                "discriminative_history": self.discriminative_history_}

    def _restore(self, directory: Path, meta: dict) -> None:
        super()._restore(directory, meta)  # CPNScoring: network, evidence nodes, half-lives, CXR calibration
        state = meta["state"]
        self.half_life_scale_ = dict(state["half_life_scale"])
        self.half_life_profile_ = dict(state.get("half_life_profile", {}))  # absent in older model.json
        self.em_history_ = list(state["em_history"])
        self.discriminative_history_ = list(state.get("discriminative_history", []))  # absent in older model.json
        self.n_train_rows_ = state["n_train_rows"]
