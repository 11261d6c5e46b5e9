"""The models a server scores with, and the one path from events to risk, alarms and explanations.

A stay's events become hourly screens with :func:`ehr.screens.build_screens` (the function every
model was trained on), with a column for every concept (see :meth:`Engine.screens`). Risk comes
from ``predict_proba``; alarms follow the SepsisFinder protocol (screens with
new data, ``risk >= threshold``, silencing after each fired alarm, :func:`evaluation.protocol.silence`);
explanations come from the models' ``explain``. :meth:`Engine.score` takes many stays at once, so
the server can batch concurrent requests into one call of each model.

Examples
--------
>>> import numpy as np
>>> t = np.array([1.0, 2.0, 3.0, 60.0]); risk = np.array([0.9, 0.8, 0.2, 0.7])
>>> cand, fired = alarm_flags(t, risk, np.array([True, True, True, True]), threshold=0.5, silencing_h=48)
>>> cand.tolist(), fired.tolist()
([True, True, False, True], [True, False, False, True])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.concepts import concept_names
from ehr.schema import CXR_FINDINGS
from ehr.screens import build_screens, screen_concepts
from evaluation.protocol import silence

from .views import VIEW_COLUMNS

__all__ = ["ServedModel", "Engine", "alarm_flags", "load_served", "StayInput", "build_engine", "read_threshold"]

_CXR_COLUMNS = [f"cxr_{f}" for f in CXR_FINDINGS] + ["cxr_age_h"]


@dataclass
class ServedModel:
    """A loaded model with the name, kind and version a server reports.

    ``pad`` lists the CXR columns the model reads (``required_columns``) that a posted stay cannot
    carry, since FHIR Observations bring no images: they are added empty. A GBDT reads them as
    missing; a CPN reads its CXR findings as missing too, but its ``xray_taken_24h`` leaf as
    "no film in 24 h", which the score answer says in ``notes``.
    """

    name: str
    kind: str
    version: str
    directory: Path
    model: object
    pad: tuple = ()

    def _inputs(self, screens: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.pad if c not in screens.columns]
        return screens.assign(**{c: np.nan for c in missing}) if missing else screens

    def risk(self, screens: pd.DataFrame) -> np.ndarray:
        """``predict_proba(screens)[:, 1]``."""
        if not len(screens):
            return np.zeros(0)
        return np.asarray(self.model.predict_proba(self._inputs(screens)))[:, 1]

    def explain(self, screens: pd.DataFrame) -> pd.DataFrame:
        """The model's explanations table for ``screens``."""
        return self.model.explain(self._inputs(screens), model_name=self.name)

    def risk_and_explain(self, screens: pd.DataFrame, rows) -> tuple[np.ndarray, pd.DataFrame]:
        """The risk of every screen and the explanations of the screens ``rows``: in one model call
        where the model offers it (``predict_explain``: the evidence is read once), else two."""
        both = getattr(self.model, "predict_explain", None)
        if both is None or not len(screens):
            return self.risk(screens), self.explain(screens.iloc[rows])
        proba, explained = both(self._inputs(screens), rows, model_name=self.name)
        return np.asarray(proba)[:, 1], explained


def load_served(directory) -> ServedModel:
    """Load a model directory (any kind :func:`sepsiscope.models.load_model` reads)."""
    from sepsiscope.models import load_model

    directory = Path(directory)
    model = load_model(directory)
    if hasattr(model, "warm_up"):  # a server pays once, at start, for what a first call would load
        model.warm_up()
    digest = hashlib.sha256((directory / "model.json").read_bytes()).hexdigest()[:12]
    version = f"{model.kind}/v{model.format_version}/{digest}"
    pad = tuple(c for c in model.required_columns if c in _CXR_COLUMNS)
    return ServedModel(name=model.model_name, kind=model.kind, version=version, directory=directory, model=model,
                       pad=pad)


def alarm_flags(hours, risk, new_data, *, threshold: float, silencing_h: float):
    """(candidate, fired) per screen of one stay: candidates are new-data screens at or above threshold."""
    candidate = np.asarray(new_data, dtype=bool) & (np.asarray(risk) >= threshold)
    fired = np.zeros(len(candidate), dtype=bool)
    idx = np.flatnonzero(candidate)
    fired[idx] = silence(np.zeros(len(idx), dtype=np.int64), np.asarray(hours, dtype=float)[idx], silencing_h)
    return candidate, fired


@dataclass
class StayInput:
    """One stay to score: its events (canonical units), its stays row and the time to score at."""

    events: pd.DataFrame
    stay: dict
    at: pd.Timestamp | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Engine:
    """The primary model (risk, alarms, explanation), models shown beside it, and the operating point."""

    primary: ServedModel
    threshold: float
    operating_point: str | None = None
    compare: list = field(default_factory=list)
    silencing_h: float = 48.0

    @property
    def models(self) -> list:
        return [self.primary, *self.compare]

    def screens(self, events: pd.DataFrame, stays: pd.DataFrame, cxr: pd.DataFrame | None = None, *,
                until_onset: bool = True) -> pd.DataFrame:
        """Hourly screens with a column for every concept: one that was never measured is empty.

        As in training, where every concept of the cohort has its column, a test absent from the
        data was not done (the CPN's ``*_tested_24h`` leaves read "no"): a posted stay is taken
        as complete for the time it covers.
        """
        screens = build_screens(events, stays, cxr, concepts=concept_names(), until_onset=until_onset)
        screens.attrs.clear()  # pandas deep-copies attrs (the build report) in every operation after this
        return screens

    def trace(self, screens: pd.DataFrame) -> dict:
        """Risk, alarms and silencing windows of one stay's screens (sorted by time)."""
        risk = self.primary.risk(screens)
        hours = screens["hours_since_admit"].to_numpy(dtype=float)
        new = screens["new_data"].to_numpy(dtype=bool)
        cand, fired = alarm_flags(hours, risk, new, threshold=self.threshold, silencing_h=self.silencing_h)
        return {"risk": risk, "hours": hours, "new_data": new, "candidate": cand, "fired": fired}

    def score(self, items: list[StayInput]) -> list[dict]:
        """Score many stays in one call of each model.

        Per stay: its screens' times, hours since admission and risk, the alarm flags, and the
        explanation of its last screen (``{column: list}`` of :data:`.views.VIEW_COLUMNS`, None when
        it has no screen).
        """
        if not items:
            return []
        events, stays = _batch_tables(items)
        # the concepts measured in the batch; the model's other columns are added empty, as the
        # screens of Engine.screens hold them (a column per concept), at a fraction of the cost
        screens = build_screens(events, stays, concepts=screen_concepts(events), until_onset=False)
        screens.attrs.clear()
        screens = _with_columns(screens, self.primary.model.required_columns)
        stay = screens["stay_id"].to_numpy()
        bounds = np.searchsorted(stay, np.arange(len(items) + 1))
        has = bounds[1:] > bounds[:-1]
        risk, explained = self.primary.risk_and_explain(screens, bounds[1:][has] - 1)
        # each explained stay's rows (the table is sorted by stay), as lists of what a view reads
        table = {c: explained[c].tolist() for c in VIEW_COLUMNS if c in explained.columns}
        cuts = np.searchsorted(explained["stay_id"].to_numpy(), np.arange(len(items) + 1))
        times = screens["screen_time"].to_numpy()
        hours = screens["hours_since_admit"].to_numpy(dtype=float)
        new = screens["new_data"].to_numpy(dtype=bool)
        out = []
        for i in range(len(items)):
            rows = slice(bounds[i], bounds[i + 1])
            if not has[i]:
                out.append({"screen_time": times[rows], "hours": hours[rows], "risk": np.zeros(0), "explanation": None})
                continue
            cand, fired = alarm_flags(hours[rows], risk[rows], new[rows], threshold=self.threshold,
                                      silencing_h=self.silencing_h)
            out.append({"screen_time": times[rows], "hours": hours[rows], "risk": risk[rows], "candidate": cand,
                        "fired": fired, "explanation": {c: v[cuts[i]:cuts[i + 1]] for c, v in table.items()}})
        return out

    def explain(self, screens: pd.DataFrame, rows) -> list[tuple[ServedModel, pd.DataFrame, np.ndarray]]:
        """Each model's explanation and risk of the screens ``rows`` (positions in ``screens``, one stay's
        screens): read with the whole of ``screens``, since a model may read the stay's history (the
        CPN's derived leaves: trends, worst values in 24 h), so an alarm's risk here is the risk that fired it."""
        rows = np.asarray(rows, dtype=np.intp)
        out = []
        for m in self.models:
            risk, explained = m.risk_and_explain(screens, rows)
            out.append((m, explained, risk[rows]))
        return out


def _with_columns(screens: pd.DataFrame, columns) -> pd.DataFrame:
    """``screens`` with the ``columns`` it lacks added, empty (NaN)."""
    missing = [c for c in dict.fromkeys(columns) if c not in screens.columns]
    if not missing:
        return screens
    empty = pd.DataFrame(np.full((len(screens), len(missing)), np.nan), columns=missing, index=screens.index)
    return pd.concat([screens, empty], axis=1)


def _batch_tables(items: list[StayInput]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The events and stays of a batch, stay ``i`` being ``items[i]`` (the columns screens are built from)."""
    events = [it.events for it in items]
    sizes = [len(e) for e in events]
    times = [e["time"].to_numpy() for e in events]
    ids = np.repeat(np.arange(len(items), dtype=np.int64), sizes)
    batch = pd.DataFrame({"stay_id": ids, "subject_id": ids, "time": np.concatenate(times),
                          "concept": np.concatenate([e["concept"].to_numpy() for e in events]),
                          "numeric_value": np.concatenate([e["numeric_value"].to_numpy() for e in events])},
                         copy=False)  # (fresh arrays)
    stays = pd.DataFrame([{**it.stay, "stay_id": i, "subject_id": i,
                           "discharge_time": it.at if it.at is not None else t.max(), "onset_time": pd.NaT}
                          for i, (it, t) in enumerate(zip(items, times))])
    return batch, stays


def read_threshold(run_dir, model_name: str, operating_point: str) -> float:
    """The threshold a run chose on its dev split for ``model_name`` at ``operating_point``."""
    path = Path(run_dir) / "operating_points.json"
    records = json.loads(path.read_text())
    for r in records:
        if r.get("model") == model_name and r.get("operating_point") == operating_point:
            return float(r["threshold"])
    have = sorted({(r.get("model"), r.get("operating_point")) for r in records})
    raise ValueError(f"{path}: no threshold for model {model_name!r} at {operating_point!r}; it has {have}")


def build_engine(model_dir, *, compare=(), threshold: float | None = None, operating_point: str = "news2>=5",
                 run_dir=None, silencing_h: float = 48.0) -> Engine:
    """Load the models and find the threshold: given, or from the run directory's ``operating_points.json``.

    Without ``run_dir`` a model saved inside a run (``RUN/models/NAME``) finds its run by itself.
    """
    primary = load_served(model_dir)
    if threshold is None:
        run = Path(run_dir) if run_dir is not None else Path(model_dir).resolve().parent.parent
        if not (run / "operating_points.json").exists():
            raise ValueError(f"no threshold: pass --threshold, or --run with a run directory "
                             f"(no operating_points.json in {run})")
        threshold = read_threshold(run, primary.name, operating_point)
    else:
        operating_point = None
    return Engine(primary, float(threshold), operating_point, [load_served(d) for d in compare], silencing_h)
