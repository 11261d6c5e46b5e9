"""Scoring and explaining with a fitted CPN, without scikit-learn: what :class:`cpn.SepsisCPN`
and the light :class:`CPNScorer` share.

:class:`CPNScoring` holds everything a fitted CPN needs in order to score and explain screens
(its network read from ``network.xml`` by :mod:`cpn.xmlbif`, the engine, the half-lives and the
CXR calibration); :class:`cpn.model.SepsisCPN` adds fitting and saving and the scikit-learn
parameters. :class:`CPNScorer` reads a saved CPN for scoring only: a one-shot command such as
``sepsiscope explain`` then imports neither scikit-learn (about 1.2 s, through scipy.stats), nor
pgmpy, nor numba (:data:`cpn.kernel.SMALL_BATCH`). Same numbers as ``SepsisCPN.load`` (checked
in ``tests/cpn/test_scoring.py``).

Examples
--------
>>> import tempfile, numpy as np, pandas as pd
>>> from cpn import SepsisCPN
>>> s = pd.DataFrame({"stay_id": [1, 1, 2, 2], "hr": [80.0, 130.0, 75.0, np.nan],
...     "hr_age_h": [0.0, 1.0, 0.0, np.nan], "onset_in_h": [3.0, 2.0, np.nan, np.nan]})
>>> d = SepsisCPN(half_lives="prior", max_iter=3).fit(s).save(tempfile.mkdtemp() + "/cpn")
>>> light, full = CPNScorer.load(d), SepsisCPN.load(d)
>>> bool(np.array_equal(light.predict_proba(s), full.predict_proba(s))), light.model_name
(True, 'cpn')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ehr.artefacts import ModelFormatError, model_file
from ehr.fitted import FittedModel

from . import kernel
from ._pgmpy import pgmpy_classes
from .evidence import EvidenceBuilder, build_evidence, network_info, reads_evidence, small_pages
from .explain import bayes_factors
from .explain_table import explanation_table
from .inference import InferenceEngine
from .structure import SEPSIS_STATES, TARGET, TARGET_STATES, validate_network
from .xmlbif import read_xmlbif

__all__ = ["CPNScoring", "CPNScorer", "NETWORK_FILE", "SCORE_ROWS", "posterior_in_slices"]

#: target states -> (onset within the horizon, not): the two groups risk and Bayes factors are about
_GROUPS = np.array([[1.0, 0.0] if s in SEPSIS_STATES else [0.0, 1.0] for s in TARGET_STATES])
NETWORK_FILE = "network.xml"

#: :meth:`CPNScoring.posterior` scores a larger table in slices of this many screens, each slice's
#: evidence written into the same buffers (about 150 MB for the PhysioNet network) just before the
#: engine reads it. A whole table's evidence at once (1.8 GB for the 783,819 screens of set A) spent
#: more time first touching fresh memory than computing it: about 2 s of 3.5 s on the 2-core
#: development machine (loaded), where the pages of freed arrays go back to the OS every time.
SCORE_ROWS = 65_536


def posterior_in_slices(engine, builder, half_lives: dict, nodes=None, *, batch_size: int = 4096,
                        rows: int | None = None) -> np.ndarray:
    """``engine.posterior`` of every screen of ``builder`` (a :class:`cpn.evidence.EvidenceBuilder`)
    with the evidence of ``nodes`` (default all) under ``half_lives``, ``rows`` screens at a time
    (default :data:`SCORE_ROWS`), each slice's evidence written into the same buffers just before
    the engine reads it. The numbers of one pass over the whole table's evidence.

    >>> import pandas as pd
    >>> from cpn.evidence import EvidenceBuilder, network_info
    >>> from cpn.structure import load_network
    >>> net = load_network("physionet")
    >>> eng = InferenceEngine.from_pgmpy(net, TARGET, network_info(net).evidence_nodes)
    >>> b = EvidenceBuilder(pd.DataFrame({"hr": [120.0, 80.0, 95.0]}), network_info(net))
    >>> bool(np.array_equal(posterior_in_slices(eng, b, {}, rows=2), eng.posterior(b.evidence({})[0])))
    True
    """
    rows = rows or SCORE_ROWS
    nodes = builder.nodes if nodes is None else list(nodes)
    n = builder.n
    buffers = {v: np.empty((min(rows, n), len(builder.info.states[v]))) for v in nodes}
    out = np.empty((n, engine.cards[engine.target]))
    for a in range(0, n, rows):
        b = min(n, a + rows)
        ev = builder.evidence_rows(half_lives, a, b, nodes, out=buffers)
        out[a:b] = engine.posterior(ev, batch_size=batch_size)
    return out


class CPNScoring(FittedModel):
    """Scoring, explaining and reading back a fitted CPN (see the module docstring)."""

    kind = "cpn"
    format_version = 2

    @property
    def network_(self):
        """The network with the fitted CPDs (pgmpy ``DiscreteBayesianNetwork``); a loaded model
        reads it from its ``network.xml`` with pgmpy on first use (scoring does not need it)."""
        if self.__dict__.get("_network") is None:
            if "_network_xml" not in self.__dict__:
                raise AttributeError(f"{type(self).__name__} is not fitted: no network_")
            self._network = pgmpy_classes()[2](string=self._network_xml).get_model()
        return self._network

    @network_.setter
    def network_(self, net):
        self._network = net

    def _setup(self, net):
        self.network_ = net
        self.info_ = network_info(net)
        self.features_ = self.info_.evidence_nodes
        self.engine_ = InferenceEngine.from_pgmpy(net, TARGET, self.features_ + [TARGET])

    def _evidence(self, screens, half_lives=None, details=False):
        ev, det = build_evidence(screens, self.info_, self.half_lives_ if half_lives is None else half_lives,
                                 cxr_prior=self.cxr_prior_, details=details)
        # only the leaves that had evidence in training (an empty column absent then, e.g. a
        # measurement age read "never measured", would speak through a CPD EM never fitted to it)
        for v in [v for v in ev if not self._trained_on(v)]:
            del ev[v]
            if det is not None:
                det.pop(v, None)
        return ev, det

    def _trained_on(self, v) -> bool:
        """Whether node ``v`` had evidence in training (always, for a model that does not record it)."""
        trained = getattr(self, "features_in_", None)
        return trained is None or reads_evidence(self.info_, v, trained)

    def warm_up(self):
        """Load the compiled kernel now (about 1.5 s of CPU), so that a long-lived process (the
        service) scores even its small batches on it; a one-shot process that explains a few
        screens never pays for it (:data:`cpn.kernel.SMALL_BATCH`). Returns self.

        >>> CPNScorer(batch_size=64).warm_up().batch_size
        64
        """
        kernel.available()
        return self

    def posterior(self, screens: pd.DataFrame) -> np.ndarray:
        """``P(time-to-onset state | evidence)`` per screen, shape (n, 5). A table of more than
        :data:`SCORE_ROWS` screens is read once and scored slice by slice, each slice's evidence
        built just before the engine reads it (:meth:`cpn.evidence.EvidenceBuilder.evidence_rows`;
        the same numbers)."""
        self.check_screens(screens)
        with small_pages():
            if len(screens) <= SCORE_ROWS:
                ev, _ = self._evidence(screens)
                return self.engine_.posterior(ev, batch_size=self.batch_size)
            builder = EvidenceBuilder(screens, self.info_, cxr_prior=self.cxr_prior_)
            return posterior_in_slices(self.engine_, builder, self.half_lives_,
                                       [v for v in builder.nodes if self._trained_on(v)],
                                       batch_size=self.batch_size)

    def predict_proba(self, screens: pd.DataFrame) -> np.ndarray:
        """``[P(no onset within 48 h), P(onset within 48 h)]`` per screen, shape (n, 2)."""
        p = self.posterior(screens) @ _GROUPS[:, 0]
        return np.column_stack([1.0 - p, p])

    def bayes_factors(self, screens: pd.DataFrame) -> dict:
        """Raw batched log10 Bayes factors (see :func:`cpn.explain.bayes_factors`)."""
        self.check_screens(screens)
        with small_pages():
            ev, _ = self._evidence(screens)
            return bayes_factors(self.engine_, ev, _GROUPS, nodes=self.features_, batch_size=self.batch_size)

    @property
    def reads_history(self) -> bool:
        """Whether a screen's evidence reads its stay's earlier screens: the derived trend leaves
        (worst in 24 h, 6 h change, change since the previous lab, measurements in 24 h). Explain such a
        model's screens with their stays' screens and ``rows=`` (``sepsiscope.alarm_explanations``);
        a screen read alone falls back to its own value. (The measurement ages read the screen's own
        ``<concept>_age_h``.)"""
        from .structure import DERIVED_LEAVES

        return any(self.info_.roles[v] == "derived" and DERIVED_LEAVES[v][1] != "age_h" for v in self.features_)

    def explain(self, screens: pd.DataFrame, rows=None, *, model_name: str | None = None) -> pd.DataFrame:
        """Explanations table (``ehr.schema`` "explanations"): one row per screen and evidence item
        with evidence, plus a ``feature="total"`` row holding ``log10 B(E)``. ``rows`` (positions in
        ``screens``; default every screen): explain only those, their evidence read with every screen
        of ``screens`` (a stay's earlier screens feed the derived leaves, :attr:`reads_history`)."""
        self.check_screens(screens)
        with small_pages():
            ev, det = self._evidence(screens, details=True)
            return self._explanations(screens, ev, det, None if rows is None else np.asarray(rows, dtype=np.intp),
                                      model_name)

    def predict_explain(self, screens: pd.DataFrame, rows, *, model_name: str | None = None):
        """``(predict_proba(screens), explain(screens, rows))`` from one reading of the screens.

        The same numbers as the two calls (``tests/cpn/test_explain_table.py``), for a caller that
        needs the risk of every screen and the explanation of a few, such as the scoring service.
        """
        self.check_screens(screens)
        with small_pages():
            ev, det = self._evidence(screens, details=True)
            # explanations first: the forward pass then reuses their compiled program (one built, not two)
            explained = self._explanations(screens, ev, det, np.asarray(rows, dtype=np.intp), model_name)
            p = self.engine_.posterior(ev, batch_size=self.batch_size) @ _GROUPS[:, 0]
        return np.column_stack([1.0 - p, p]), explained

    def _explanations(self, screens, ev, det, rows, model_name):
        """The explanations of the screens ``rows`` (all when None) from their evidence and details."""
        n = len(screens)
        if rows is not None:
            ev = {v: a[rows] for v, a in ev.items()}
            det = {v: tuple(None if a is None else a[rows] for a in d) for v, d in det.items()}
        bf = bayes_factors(self.engine_, ev, _GROUPS, nodes=self.features_, batch_size=self.batch_size)
        stay = screens["stay_id"].to_numpy() if "stay_id" in screens.columns else np.arange(n)
        times = screens["screen_time"].to_numpy() if "screen_time" in screens.columns \
            else np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
        if rows is not None:
            stay, times = stay[rows], times[rows]
        return explanation_table(bf, det, self.info_.states, stay=stay, times=times,
                                 model=model_name or self.model_name)

    def _restore(self, directory: Path, meta: dict) -> None:
        """What scoring needs: the network (without pgmpy), evidence nodes, half-lives, CXR calibration."""
        state = meta["state"]
        path = model_file(directory, meta, NETWORK_FILE)
        self._network_xml = path.read_text(encoding="utf-8")
        # scoring needs the tables only: read without pgmpy (network_ reads the text when asked for)
        self._setup(validate_network(read_xmlbif(path, text=self._network_xml), origin=str(path)))
        self._network = None
        # the XMLBIF writer may order the nodes differently from the network the model was fitted
        # on (a network object such as build_expert_network(..., drop=...)): same set, fitted order
        if sorted(self.features_) != sorted(state["evidence_nodes"]):
            raise ModelFormatError(f"{directory / 'model.json'}: evidence nodes do not match {NETWORK_FILE}")
        self.features_ = list(state["evidence_nodes"])
        self.half_lives_ = {k: float(v) for k, v in state["half_lives"].items()}
        self.cxr_prior_ = {k: float(v) for k, v in state["cxr_prior"].items()}


class CPNScorer(CPNScoring):
    """A saved CPN read back for scoring and explaining only (``CPNScorer.load(directory)``).

    It takes the saved configuration as it is (no scikit-learn parameters, no ``fit``/``save``)
    and keeps the fitted state that :class:`cpn.model.SepsisCPN` saves beside the scoring part
    (``half_life_scale_``, ``em_history_``, ...) under ``state_``.
    """

    def __init__(self, **config):
        self.batch_size = int(config.pop("batch_size", 2048))
        self.config_ = config

    def _restore(self, directory: Path, meta: dict) -> None:
        super()._restore(directory, meta)
        self.state_ = dict(meta["state"])
        self.half_life_scale_ = dict(self.state_.get("half_life_scale", {}))
