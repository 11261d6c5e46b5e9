"""FHIR R4 reader: Bundles or NDJSON of Observations (LOINC, UCUM) -> the events and stays contract.

Every resource is validated with ``fhir.resources`` (its R4B models, which read R4 Observations,
Patients and Encounters unchanged); then what SepsisScope reads is checked once more, strictly:

- **Concept.** The ``Observation.code`` LOINC codings map to concepts through ``ehr/concepts.toml``
  (``loinc``). A code listed under several concepts (2708-6: arterial and pulse-oximetry
  saturation) needs a second, specific coding (59408-5); codings that disagree are an error.
  Components (the blood-pressure panel 85354-9 holds systolic 8480-6 and diastolic 8462-4) are
  read like observations of their own.
- **Value and unit.** ``valueQuantity`` with a UCUM ``code`` (``system`` http://unitsofmeasure.org;
  without a ``system`` the ``code``, then the ``unit`` text, are taken as UCUM), ``valueInteger``
  (dimensionless concepts) or ``valueBoolean`` (flags). Units convert at ingest, once
  (:func:`ehr.concepts.convert`): 100.4 ``[degF]`` is 38.0 ``Cel``, 88.4 ``umol/L`` creatinine is
  1.0 ``mg/dL``; a unit the dictionary does not list is an error, never a guess. A ``comparator``
  (``<0.5``) is a bound, not a measurement.
- **Time.** ``effectiveDateTime`` / ``effectiveInstant`` / the end (else start) of
  ``effectivePeriod``; times with an offset become naive UTC. ``issued`` is not used: exports often
  stamp it when the file was written. A date without a time of day is an error.
- **Status.** ``final``, ``amended``, ``corrected`` and ``preliminary`` are read; ``registered``,
  ``cancelled``, ``entered-in-error`` and ``unknown`` observations, observations without a value
  (``dataAbsentReason``) and resources other than Observation, Patient and Encounter are skipped
  and listed in :attr:`ParsedBundle.skipped`.
- **Stays.** An observation belongs to the stay of its ``encounter`` reference, else of its
  ``subject``. ``stay_id`` is the numeric id of that reference, or a stable 52-bit hash of it.
  A stay's admission is its Encounter's ``period.start`` when the Encounter is given, else its
  first observation; age comes from ``Patient.birthDate`` and sex from ``gender``. FHIR
  Observations carry no sepsis outcome: ``sepsis`` is False and ``onset_time`` null.

:func:`read_fhir` reads files (``.json`` Bundles or resources, ``.ndjson`` one per line) into a
:class:`~ehr.cohort.Cohort` and counts every problem in its :class:`~ehr.sources.report.IngestReport`;
:func:`parse_bundle` parses one Bundle for the scoring service, where any problem is an error.

Examples
--------
>>> obs = {"resourceType": "Observation", "id": "t1", "status": "final",
...        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
...        "subject": {"reference": "Patient/7"}, "effectiveDateTime": "2026-01-01T08:10:00+01:00",
...        "valueQuantity": {"value": 100.4, "system": "http://unitsofmeasure.org", "code": "[degF]"}}
>>> parsed = parse_bundle({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": obs}]})
>>> r = parsed.readings[0]
>>> r.concept, r.value, r.unit, str(r.time), r.stay, r.loc
('temp', 100.4, '[degF]', '2026-01-01T07:10:00.000000000', 'Patient/7', ('entry', 0, 'resource'))
>>> stay_id_for("Encounter/123"), stay_id_for("Encounter/abc") > 0
(123, True)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort
from ehr.concepts import load_concepts
from ehr.sources.readings import Reading, ReadingError, readings_to_events, where
from ehr.sources.flow import reader_flow
from ehr.sources.report import IngestError, IngestReport

__all__ = ["parse_bundle", "read_fhir", "validate_resource", "stay_id_for", "stays_table", "stay_row", "ParsedBundle",
           "LOINC_SYSTEM", "UCUM_SYSTEM", "SOURCE"]

SOURCE = "fhir"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
READ_STATUS = frozenset({"final", "amended", "corrected", "preliminary"})
SKIP_STATUS = frozenset({"registered", "cancelled", "entered-in-error", "unknown"})
READ_TYPES = ("Observation", "Patient", "Encounter")
_SEX = {"female": "F", "male": "M"}


@lru_cache(maxsize=1)
def loinc_concepts() -> dict[str, tuple[str, ...]]:
    """LOINC code -> the concepts that list it in ``concepts.toml``."""
    out: dict[str, tuple[str, ...]] = {}
    for c in load_concepts().values():
        for code in c.loinc:
            out[code] = out.get(code, ()) + (c.name,)
    return out


@lru_cache(maxsize=None)
def _model(resource_type: str):
    try:
        import importlib

        return getattr(importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}"), resource_type)
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("reading FHIR needs fhir.resources: pip install 'sepsiscope[service]'") from exc


def validate_resource(resource: dict, loc: tuple = ()) -> None:
    """Validate one resource with ``fhir.resources``; :class:`ReadingError` names the first bad field."""
    from pydantic import ValidationError

    try:
        _model(resource["resourceType"]).model_validate(resource)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ReadingError((*loc, *err["loc"]), f"not a valid FHIR R4 {resource['resourceType']}: {err['msg']}",
                           "fhir") from None
    except (TypeError, AttributeError, ValueError) as exc:
        # fhir.resources trips over some malformed elements (e.g. a primitive extension "_status": 5)
        # instead of reporting them: still the client's error, not the server's
        raise ReadingError(loc, f"not a valid FHIR R4 {resource['resourceType']}: {type(exc).__name__}: {exc}",
                           "fhir") from None


def stay_id_for(reference: str) -> int:
    """An integer id for a reference: its numeric id (``Encounter/123`` -> 123), else a stable hash."""
    tail = reference.rsplit("/", 1)[-1]
    if tail.isdigit() and len(tail) <= 18:
        return int(tail)
    return int(hashlib.sha256(reference.encode()).hexdigest()[:13], 16)


def _time(text, loc) -> np.datetime64:
    if not isinstance(text, str) or "T" not in text:
        raise ReadingError(loc, f"'{text}' has no time of day; a measurement needs date and time", "time")
    return _utc(text)


@lru_cache(maxsize=65_536)  # the vitals of one hour share a time stamp
def _utc(text: str) -> np.datetime64:
    t = datetime.fromisoformat(text)
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(t, "ns")


def _effective_time(res: dict, loc) -> np.datetime64:
    for key in ("effectiveDateTime", "effectiveInstant"):
        if key in res:
            return _time(res[key], (*loc, key))
    period = res.get("effectivePeriod") or {}
    for key in ("end", "start"):
        if key in period:
            return _time(period[key], (*loc, "effectivePeriod", key))
    raise ReadingError(loc, "no effectiveDateTime, effectiveInstant or effectivePeriod: when was it measured?",
                       "time")


def _concept(code: dict, loc):
    """(concept or None, namespaced code) of a CodeableConcept; errors for ambiguous codings."""
    loincs = tuple(c.get("code") for c in code.get("coding", [])
                   if c.get("system") == LOINC_SYSTEM and c.get("code"))
    try:
        return _loinc_concept(loincs)
    except ReadingError as exc:
        raise ReadingError((*loc, *exc.loc), exc.msg, exc.kind) from None


@lru_cache(maxsize=4096)
def _loinc_concept(loincs: tuple):
    """:func:`_concept` of the LOINC codes of one CodeableConcept (errors located in ``coding``)."""
    if not loincs:
        raise ReadingError(("coding",), "no LOINC coding (system http://loinc.org)", "unknown_code")
    known = [set(loinc_concepts()[c]) for c in loincs if c in loinc_concepts()]
    if not known:
        return None, f"LOINC/{loincs[0]}"
    both = set.intersection(*known)
    if len(both) == 1:
        return both.pop(), f"LOINC/{loincs[0]}"
    if both:
        raise ReadingError(("coding",), f"LOINC {', '.join(loincs)} maps to several concepts "
                           f"({', '.join(sorted(both))}); add the specific coding (59408-5 for pulse oximetry)",
                           "ambiguous_code")
    raise ReadingError(("coding",), f"the LOINC codings {', '.join(loincs)} name different concepts",
                       "ambiguous_code")


def _value(part: dict, concept: str | None, loc):
    """(value, unit as sent) of an Observation or component, None when it carries no value."""
    if "valueQuantity" in part:
        q, qloc = part["valueQuantity"], (*loc, "valueQuantity")
        if "comparator" in q:
            raise ReadingError((*qloc, "comparator"), f"'{q['comparator']}' makes the value a bound, not a "
                               "measurement", "comparator")
        v = q.get("value")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ReadingError((*qloc, "value"), "a JSON number is required", "type")
        if q.get("system") not in (None, UCUM_SYSTEM):
            raise ReadingError((*qloc, "system"), f"units must be UCUM ({UCUM_SYSTEM}), got {q['system']}", "unit")
        return float(v), q.get("code") or q.get("unit")
    if "valueInteger" in part:
        return float(part["valueInteger"]), None
    if "valueBoolean" in part:
        return float(bool(part["valueBoolean"])), None
    keys = [k for k in part if k.startswith("value")]
    if keys and concept is not None:
        raise ReadingError((*loc, keys[0]), f"{keys[0]} is not read for {concept}; send valueQuantity", "type")
    return None


def _observation(res: dict, loc: tuple) -> tuple:
    """What one validated Observation says, independent of where it sits in its Bundle.

    ``("skip", reason)`` or ``("obs", encounter ref, subject ref, parts)`` where each part is
    ``(concept, code, time, value, unit, location inside the resource)``.
    """
    status = res.get("status")
    if status in SKIP_STATUS:
        return ("skip", f"status {status}")
    if status not in READ_STATUS:
        raise ReadingError((*loc, "status"), f"'{status}' is not an Observation status "
                           f"({', '.join(sorted(READ_STATUS | SKIP_STATUS))})", "fhir")
    encounter = (res.get("encounter") or {}).get("reference")
    subject = (res.get("subject") or {}).get("reference")
    if encounter is None and subject is None:
        raise ReadingError(loc, "no subject or encounter reference: whose measurement is it?", "missing")
    t = _effective_time(res, loc)
    parts = [(res, ())] + [(c, ("component", j)) for j, c in enumerate(res.get("component", []))]
    out = []
    for part, rel in parts:
        has_value = "valueQuantity" in part or any(k.startswith("value") for k in part)
        if part is res and not has_value and parts[1:]:
            continue  # a panel: its components hold the values
        concept, code = _concept(part.get("code") or {}, (*loc, *rel, "code"))
        v = _value(part, concept, (*loc, *rel))
        if v is not None:
            out.append((concept, code, t, v[0], v[1], rel))
    return ("obs", encounter, subject, tuple(out)) if out else ("skip", "no value")


@dataclass
class ParsedBundle:
    """What :func:`parse_bundle` read: readings, the Patient and Encounter resources, and what it skipped."""

    readings: list = field(default_factory=list)
    patients: dict = field(default_factory=dict)    # "Patient/<id>" -> resource
    subjects: dict = field(default_factory=dict)    # stay key -> "Patient/<id>" of its observations
    encounters: dict = field(default_factory=dict)  # "Encounter/<id>" -> resource
    skipped: list = field(default_factory=list)     # (loc, reason)


def parse_bundle(bundle: dict, *, loc: tuple = (), validate=validate_resource, errors: str = "raise",
                 out: ParsedBundle | None = None, report: IngestReport | None = None, cache=None) -> ParsedBundle:
    """Parse a Bundle (or a single resource) into readings.

    ``errors="count"`` counts bad entries in ``report`` and goes on. ``cache`` (an object with
    ``get(resource)`` and ``put(resource, value)``, such as the service's) keeps what each
    resource said once it was validated and read, so that a resource seen before is neither
    validated nor read again.
    """
    out = out or ParsedBundle()
    if not isinstance(bundle, dict) or "resourceType" not in bundle:
        raise ReadingError(loc or ("body",), "not a FHIR resource: a JSON object with resourceType is required", "fhir")
    if bundle["resourceType"] != "Bundle":
        entries, base = [{"resource": bundle}], loc
    else:
        shell = {k: v for k, v in bundle.items() if k != "entry"}
        if cache is None or cache.get(shell) is None:
            validate(shell, loc)
            if cache is not None:
                cache.put(shell, ("ref", "Bundle"))
        entries, base = bundle.get("entry") or [], (*loc, "entry")
    aliases = {}
    for e in entries:
        r = e.get("resource") if isinstance(e, dict) else None
        if isinstance(r, dict) and "id" in r and "fullUrl" in e:
            aliases[e["fullUrl"]] = f"{r.get('resourceType')}/{r['id']}"
    for i, e in enumerate(entries):
        eloc = (*base, i, "resource") if bundle["resourceType"] == "Bundle" else base
        try:
            _parse_entry(e, eloc, validate, aliases, out, cache)
        except ReadingError as exc:
            if errors == "raise":
                raise
            report.add(*where(exc.loc), exc.kind, "rejected_row", exc.msg)
    return out


def _parse_entry(entry, eloc, validate, aliases, out: ParsedBundle, cache) -> None:
    res = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        raise ReadingError(eloc, "an entry needs a resource with a resourceType", "fhir")
    kind = res["resourceType"]
    if kind not in READ_TYPES:
        out.skipped.append((eloc, f"{kind} is not read"))
        return
    said = cache.get(res) if cache is not None else None
    if said is None:
        validate(res, eloc)
        said = _observation(res, eloc) if kind == "Observation" else ("ref", f"{kind}/{res.get('id')}")
        if cache is not None:
            cache.put(res, said)
    if said[0] == "ref":
        (out.patients if kind == "Patient" else out.encounters)[said[1]] = res
    elif said[0] == "skip":
        out.skipped.append((eloc, said[1]))
    else:
        _, encounter, subject, parts = said
        subject = aliases.get(subject, subject)
        stay = aliases.get(encounter, encounter) or subject
        if subject:
            out.subjects.setdefault(stay, subject)
        sid = res.get("id")
        out.readings.extend(Reading(c, code, t, v, u, (*eloc, *rel), stay, sid) for c, code, t, v, u, rel in parts)


def _iter_documents(path: Path, report: IngestReport):
    files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")) if path.is_dir() else [path]
    if not files:
        raise IngestError(f"{path}: no .json or .ndjson file")
    for f in files:
        report.files_read += 1
        text = f.read_text(encoding="utf-8")
        lines = text.splitlines() if f.suffix == ".ndjson" else [text]
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            report.rows_read += 1
            try:
                yield (f.name, n), json.loads(line)
            except json.JSONDecodeError as exc:
                report.add(f.name, n, None, "not JSON", "rejected_row", str(exc))


def read_fhir(path, *, now=None) -> Cohort:
    """Read FHIR Bundles or NDJSON (a file or a directory) into a :class:`~ehr.cohort.Cohort` (with its report).

    Bad entries are counted in the report with file, line and field, and skipped; nothing valid is
    dropped. Raises :class:`IngestError` when no observation could be read.
    """
    path = Path(path)
    report = IngestReport(source=f"{SOURCE}:{path}")
    parsed = ParsedBundle()
    from .fhir_shapes import ShapeValidator  # (it builds on this module)

    validate = ShapeValidator()  # fhir.resources' verdicts, by leaf values for shapes seen before
    for loc, doc in _iter_documents(path, report):
        parse_bundle(doc, loc=loc, errors="count", out=parsed, report=report, validate=validate)
    for loc, reason in parsed.skipped:
        report.add(*where(loc), reason, "skipped")
    if not parsed.readings:
        raise IngestError(f"{path}: no observation could be read\n{report.summary()}")
    report.values_read = len(parsed.readings)
    keys = list(dict.fromkeys(r.stay for r in parsed.readings))
    stay_ids = {k: stay_id_for(k) for k in keys}
    subjects = {k: stay_id_for(_patient_of(k, parsed)) for k in keys}
    events = readings_to_events(parsed.readings, stay_ids=stay_ids, subject_ids=subjects, strict=False,
                                now=now, report=report)
    stays = stays_table(parsed, stay_ids, subjects, events)
    reader_flow(report, n_seen=len(keys), what="stays (encounters) with an observation", stays=stays)
    return Cohort(events, stays, meta={"source": SOURCE, "path": str(path)}, report=report)


def _patient_of(key: str, parsed: ParsedBundle) -> str:
    """The Patient reference of a stay: its Encounter's subject, else its observations' subject."""
    enc_subject = (parsed.encounters.get(key, {}).get("subject") or {}).get("reference")
    return enc_subject or parsed.subjects.get(key) or key


def stay_row(parsed: ParsedBundle, key: str, first, last) -> dict:
    """The ``stays`` fields of one stay key; ``first``/``last`` are its first and last reading times."""
    enc = parsed.encounters.get(key, {})
    period = enc.get("period") or {}
    admit = pd.Timestamp(_time(period["start"], ("period", "start")) if "start" in period else first)
    discharge = pd.Timestamp(_time(period["end"], ("period", "end")) if "end" in period else last)
    patient = parsed.patients.get(_patient_of(key, parsed), {})
    birth = patient.get("birthDate")
    age = (admit - pd.Timestamp(birth)).days / 365.25 if birth and pd.notna(admit) else np.nan
    service = enc.get("serviceType") or {}
    dept = service.get("text") or next((c.get("code") for c in service.get("coding", [])), None)
    return {"source": SOURCE, "admit_time": admit, "discharge_time": discharge, "hospital_admit_time": pd.NaT,
            "age": age, "sex": _SEX.get(patient.get("gender")), "department": dept, "sepsis": False,
            "onset_time": pd.NaT, "sepsis_label_time": pd.NaT, "antibiotic_time": pd.NaT, "surgery_time": pd.NaT,
            "death": None, "bsi": None, "onset_setting": None, "pneumonia": None, "hypercapnic": None,
            "fhir_reference": key}


def stays_table(parsed: ParsedBundle, stay_ids: dict, subject_ids: dict, events: pd.DataFrame) -> pd.DataFrame:
    """One ``stays`` row per stay key: admission from the Encounter or the first reading, age and sex."""
    span = events.groupby("stay_id")["time"].agg(["min", "max"])
    rows = []
    for key, sid in stay_ids.items():
        first, last = span.loc[sid] if sid in span.index else (pd.NaT, pd.NaT)
        rows.append({"subject_id": subject_ids[key], "stay_id": sid, **stay_row(parsed, key, first, last)})
    out = pd.DataFrame(rows)
    for c in ("admit_time", "discharge_time", "hospital_admit_time", "onset_time", "sepsis_label_time",
              "antibiotic_time", "surgery_time"):
        out[c] = pd.to_datetime(out[c])
    return out.dropna(subset=["admit_time"]).reset_index(drop=True)
