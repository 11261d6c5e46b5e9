"""The expert DAG: nodes, states, edges with their clinical reasons, prior CPDs, file IO, validation.

The shipped networks (``cpn/networks/sepsis_full.xml`` and ``sepsis_physionet.xml``) are generated
from :data:`EDGES` by :func:`build_expert_network` and written with pgmpy's XMLBIF writer, so the
structure and its documentation (``cpn/networks/README.md``) live in one place.

Node roles (stored as the XMLBIF property ``role``): ``target`` (time to sepsis onset), ``latent``,
``context`` (department, age band, hours since admission band), ``concept`` (one leaf per measured
concept, states from ``concepts.toml`` cuts), ``tested`` (informative missingness: was the test
ordered recently) and ``cxr`` (imaging findings).

Examples
--------
>>> net = load_network("physionet")
>>> int(net.get_cardinality("sepsis"))
5
>>> sorted(node_roles(net).values()).count("target")
1
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ehr.concepts import load_concepts
from ehr.schema import CXR_FINDINGS

from ._pgmpy import pgmpy_classes

__all__ = [
    "TARGET", "TARGET_STATES", "TARGET_EDGES_H", "SEPSIS_STATES", "CONTEXT", "TESTED", "DERIVED", "MEASUREMENT_AGE",
    "MEASUREMENT_AGE_EXTENDED", "DERIVED_LEAVES", "AGE_EDGES", "AGE_EDGES_EXTENDED", "AGE_SEPSIS_EDGES",
    "MEASUREMENT_AGE_SETS", "SHIPPED_OPTIONS", "EDGES",
    "NetworkError", "state_names", "build_expert_network", "load_network", "save_network",
    "validate_network", "node_roles", "network_path", "write_shipped_networks", "cuts_of_states",
    "with_concept_cuts",
]

TARGET = "sepsis"
#: time-to-onset bins (hours); the last state also holds stays that never become septic
TARGET_STATES = ("le6h", "h6to12", "h12to24", "h24to48", "gt48h_or_none")
TARGET_EDGES_H = (6.0, 12.0, 24.0, 48.0)
#: target states that count as "sepsis within 48 h" for risk and Bayes factors
SEPSIS_STATES = TARGET_STATES[:4]

#: context parents: name -> (states, cut-points on the source column or None for categorical).
#: ``hours_band`` keeps four bands. Finer ones (``build_expert_network(hours_cuts=(6, 12, 24, 36, 48,
#: 72))``, or a single split at 48 h) raise set A's 5-fold AUROC from 0.788 to 0.803, but the clock
#: then becomes the top in-context factor of 35 % of the alarms at the NEWS2>=5-matched point (7 %
#: with four bands): on set A a stay still running after 48 h is itself a sign of sepsis, which is
#: how the records were collected, not physiology (``docs/cpn_evidence_experiments.md``). Evidence
#: reads the cuts from a network's own state names (:func:`cuts_of_states`), so a network built or
#: saved with other bands scores with its own.
CONTEXT = {
    "age_band": (("lt40", "40to60", "60to75", "ge75"), (40.0, 60.0, 75.0)),
    "hours_band": (("lt6", "6to24", "24to72", "ge72"), (6.0, 24.0, 72.0)),
}
DEPARTMENTS = {"physionet": ("MICU", "SICU", "other"), "full": ("ward", "ED", "ICU", "other")}

#: informative-missingness leaves: name -> (concepts whose measurement counts, window in hours)
TESTED = {
    "lact_tested_24h": (("lact",), 24.0),
    "bloodgas_tested_24h": (("ph", "paco2", "pao2", "sao2", "base_excess"), 24.0),
    # "cxr" stands for the chest X-ray (``cxr_age_h``); only the "full" network has it
    "xray_taken_24h": (("cxr",), 24.0),
}

#: derived evidence leaves (issue 13 item 2; ``build_expert_network(..., derived=True)``): name ->
#: (concept, statistic, cut-points, a typical normal value). Statistics come from the stay's screens
#: (:mod:`ehr.trends`): ``max_24h``/``min_24h`` the worst carried-forward value in the last 24 h,
#: ``rise_6h`` the value minus its 6 h minimum, ``fall_6h`` the 6 h maximum minus the value, ``delta``
#: the change since the previous measurement, ``n_24h`` the measurements in the last 24 h (monitoring
#: intensity). Cuts are clinical (NEWS2 / SOFA / KDIGO bands) where they exist.
DERIVED = {
    "hr_max_24h": ("hr", "max_24h", (91.0, 111.0, 131.0), 80.0),
    "resp_max_24h": ("resp", "max_24h", (21.0, 25.0, 30.0), 16.0),
    "temp_max_24h": ("temp", "max_24h", (38.1, 39.1), 37.0),
    "temp_min_24h": ("temp", "min_24h", (35.1, 36.1), 37.0),
    "map_min_24h": ("map", "min_24h", (55.0, 65.0, 70.0), 85.0),
    "sbp_min_24h": ("sbp", "min_24h", (91.0, 101.0, 111.0), 120.0),
    "spo2_min_24h": ("spo2", "min_24h", (88.0, 92.0, 94.0), 97.0),
    "hr_rise_6h": ("hr", "rise_6h", (10.0, 20.0, 30.0), 0.0),
    "resp_rise_6h": ("resp", "rise_6h", (4.0, 8.0), 0.0),
    "temp_rise_6h": ("temp", "rise_6h", (0.5, 1.0), 0.0),
    "map_fall_6h": ("map", "fall_6h", (10.0, 20.0, 30.0), 0.0),
    "spo2_fall_6h": ("spo2", "fall_6h", (2.0, 4.0), 0.0),
    "crea_delta": ("crea", "delta", (-0.3, 0.3), 0.0),
    "plt_delta": ("plt", "delta", (-50.0, -15.0, 15.0), 0.0),
    "lact_delta": ("lact", "delta", (-0.5, 0.5), 0.0),
    "wbc_delta": ("wbc", "delta", (-3.0, 3.0), 0.0),
    "wbc_n_24h": ("wbc", "n_24h", (1.0, 2.0, 3.0), 1.0),
    "temp_n_24h": ("temp", "n_24h", (4.0, 8.0, 12.0), 6.0),
}

#: measurement-age leaves (issue 13; ``build_expert_network(..., measurement_age=True)``): name ->
#: (concept, "age_h", cut-points in hours, a typical value). The value is the hours since the concept was
#: last measured in the stay (``<concept>_age_h``); never measured in the stay counts as 10,000 h, the
#: last state (``ge1000``). How often clinicians measure is informative (monitoring patterns): a lactate
#: drawn in the last hour says someone suspects sepsis, whatever its value.
MEASUREMENT_AGE = {
    "lact_age": ("lact", "age_h", (1.0, 6.0, 24.0, 1000.0), 1000.0),
    "wbc_age": ("wbc", "age_h", (1.0, 6.0, 24.0, 1000.0), 12.0),
    "crea_age": ("crea", "age_h", (1.0, 6.0, 24.0, 1000.0), 12.0),
    "bili_age": ("bili", "age_h", (1.0, 6.0, 24.0, 1000.0), 1000.0),
    "ph_age": ("ph", "age_h", (1.0, 6.0, 24.0, 1000.0), 1000.0),
    "temp_age": ("temp", "age_h", (1.0, 2.0, 4.0, 1000.0), 2.0),
}
#: eight more measurement-age leaves (``build_expert_network(..., measurement_age="extended")``, with the six
#: above): platelets, glucose, potassium, FiO2, PTT, AST, bicarbonate and haemoglobin. Their prior CPDs are
#: anchored at "never measured" (typical 1000 h), as in the fold-0 probe that measured them (EM re-estimates
#: them; docs/cpn_evidence_experiments.md).
MEASUREMENT_AGE_EXTENDED = {
    f"{c}_age": (c, "age_h", (1.0, 6.0, 24.0, 1000.0), 1000.0)
    for c in ("plt", "glucose", "potassium", "fio2", "ptt", "ast", "hco3", "hgb")
}
#: every derived leaf (trend statistics and measurement ages): name -> (concept, statistic, cuts, typical)
DERIVED_LEAVES = {**DERIVED, **MEASUREMENT_AGE, **MEASUREMENT_AGE_EXTENDED}

#: edges of the measurement-age leaves: the ordering clinician's suspicion (as for ``*_tested_24h``)
AGE_EDGES: tuple[tuple[str, str, str], ...] = (
    ("infection", "lact_age", "lactate is drawn when clinicians suspect sepsis"),
    ("infection", "wbc_age", "blood counts are repeated when clinicians suspect infection"),
    ("kidney", "crea_age", "creatinine is rechecked when renal function worsens"),
    ("liver", "bili_age", "liver tests are ordered when the liver is suspected to fail"),
    ("respiration", "ph_age", "blood gases are drawn as gas exchange fails"),
    ("infection", "temp_age", "temperature is checked more often when clinicians suspect infection"),
)
#: edges of the extended measurement-age leaves (:data:`MEASUREMENT_AGE_EXTENDED`): the organ whose
#: suspected failure makes clinicians repeat the test
AGE_EDGES_EXTENDED: tuple[tuple[str, str, str], ...] = (
    ("coagulation", "plt_age", "platelets are rechecked when coagulopathy is suspected"),
    ("inflammation", "glucose_age", "glucose is checked more often in the unstable, stress-hyperglycaemic patient"),
    ("kidney", "potassium_age", "potassium is rechecked when renal function worsens"),
    ("respiration", "fio2_age", "FiO2 is charted when oxygen therapy or ventilation is started or titrated"),
    ("coagulation", "ptt_age", "clotting times are ordered when DIC is suspected"),
    ("liver", "ast_age", "liver enzymes are ordered when liver injury is suspected"),
    ("perfusion", "hco3_age", "bicarbonate is rechecked when metabolic acidosis is suspected"),
    ("circulation", "hgb_age", "haemoglobin is rechecked when bleeding or haemodilution is suspected"),
)
#: in the extended set, ``sepsis`` is a second parent of every measurement-age leaf (the six and the eight):
#: how recently a test was done depends on the approaching onset directly, not only through one organ node
AGE_SEPSIS_EDGES: tuple[tuple[str, str, str], ...] = tuple(
    ("sepsis", k, "tests are repeated as the patient deteriorates towards sepsis, beyond what one organ's state explains")
    for k in (*MEASUREMENT_AGE, *MEASUREMENT_AGE_EXTENDED))
#: ``build_expert_network``'s ``measurement_age`` options: name -> (leaves, edges); True means "six"
MEASUREMENT_AGE_SETS = {
    "six": (MEASUREMENT_AGE, AGE_EDGES),
    "extended": ({**MEASUREMENT_AGE, **MEASUREMENT_AGE_EXTENDED}, AGE_EDGES + AGE_EDGES_EXTENDED + AGE_SEPSIS_EDGES),
}

_LATENT_STATES = {
    "infection": ("no", "yes"),
    "resp_infection": ("no", "yes"),
    "inflammation": ("none", "moderate", "severe"),
    "circulation": ("normal", "impaired", "failing"),
    "respiration": ("normal", "impaired", "failing"),
    "kidney": ("normal", "impaired", "failing"),
    "liver": ("normal", "impaired", "failing"),
    "coagulation": ("normal", "impaired", "failing"),
    "cns": ("normal", "impaired", "failing"),
    "perfusion": ("normal", "impaired", "failing"),
}

#: (parent, child, clinical reason); "*" children are expanded per network variant below
EDGES: tuple[tuple[str, str, str], ...] = (
    ("department", "sepsis", "case mix and baseline sepsis risk differ between units"),
    ("age_band", "sepsis", "older patients become septic more often"),
    ("hours_band", "sepsis", "onset hazard changes with time since admission (community vs hospital onset)"),
    ("sepsis", "infection", "an approaching sepsis episode implies an infection is present now"),
    ("sepsis", "inflammation", "the host response grows as onset approaches"),
    ("infection", "inflammation", "infection triggers the systemic inflammatory response"),
    ("infection", "resp_infection", "a respiratory infection is one of the infections"),
    ("sepsis", "resp_infection", "the lung is the commonest source of sepsis: nearing onset makes a pulmonary source likelier"),
    ("sepsis", "circulation", "vasodilation and hypotension develop as sepsis approaches"),
    ("inflammation", "circulation", "cytokines cause vasodilation and capillary leak"),
    ("sepsis", "respiration", "respiratory failure is a sepsis organ dysfunction"),
    ("inflammation", "respiration", "inflammation causes tachypnoea and lung injury (ARDS)"),
    ("resp_infection", "respiration", "pneumonia impairs gas exchange directly"),
    ("sepsis", "kidney", "acute kidney injury is a sepsis organ dysfunction"),
    ("inflammation", "kidney", "inflammation and hypoperfusion injure the kidney"),
    ("age_band", "kidney", "renal reserve falls with age, so baseline creatinine is higher"),
    ("sepsis", "liver", "septic cholestasis and hypoxic hepatitis"),
    ("inflammation", "liver", "inflammatory cytokines impair bile excretion"),
    ("sepsis", "coagulation", "sepsis-induced coagulopathy (thrombocytopenia, DIC)"),
    ("inflammation", "coagulation", "inflammation activates and consumes coagulation factors"),
    ("sepsis", "cns", "septic encephalopathy lowers consciousness"),
    ("inflammation", "cns", "inflammatory mediators cause delirium"),
    ("circulation", "perfusion", "low blood pressure reduces tissue perfusion"),
    ("inflammation", "perfusion", "microcirculatory dysfunction causes hypoperfusion despite pressure"),
    ("infection", "lact_tested_24h", "lactate is ordered when clinicians suspect sepsis"),
    ("infection", "bloodgas_tested_24h", "blood gases are ordered when clinicians suspect deterioration"),
    ("infection", "xray_taken_24h", "a chest film is part of the infection work-up (respiratory symptoms)"),
    ("sepsis", "xray_taken_24h", "a chest film is ordered when the patient deteriorates towards sepsis"),
    ("circulation", "hr", "tachycardia compensates for low blood pressure"),
    ("inflammation", "hr", "fever and cytokines raise the heart rate"),
    ("circulation", "sbp", "systolic pressure measures circulatory failure"),
    ("circulation", "dbp", "diastolic pressure falls with vasodilation"),
    ("circulation", "map", "mean arterial pressure defines SOFA cardiovascular failure"),
    ("circulation", "troponin_i", "demand ischaemia and septic cardiomyopathy release troponin"),
    ("circulation", "hgb", "bleeding or haemodilution changes haemoglobin"),
    ("circulation", "hct", "haemoconcentration or dilution changes haematocrit"),
    ("respiration", "resp", "tachypnoea is the earliest sign of respiratory failure"),
    ("respiration", "spo2", "desaturation measures hypoxaemia"),
    ("respiration", "sao2", "arterial saturation measures hypoxaemia"),
    ("respiration", "pao2", "arterial oxygen tension defines SOFA respiratory failure"),
    ("respiration", "fio2", "more inspired oxygen is needed as gas exchange fails"),
    ("respiration", "o2_flow", "oxygen flow is turned up as gas exchange fails"),
    ("respiration", "on_o2", "supplemental oxygen is started for hypoxaemia (NEWS2 item)"),
    ("respiration", "etco2", "ventilation failure changes end-tidal CO2"),
    ("respiration", "paco2", "ventilation failure changes arterial CO2"),
    ("inflammation", "temp", "fever or hypothermia is part of the inflammatory response"),
    ("inflammation", "wbc", "leukocytosis or leukopenia is part of the inflammatory response"),
    ("inflammation", "crp", "CRP is an acute-phase protein driven by IL-6"),
    ("inflammation", "alb", "albumin is a negative acute-phase protein and leaks out of capillaries"),
    ("inflammation", "glucose", "stress hyperglycaemia accompanies inflammation"),
    ("inflammation", "calcium", "hypocalcaemia accompanies severe inflammation"),
    ("perfusion", "lact", "lactate rises with tissue hypoperfusion (Sepsis-3 shock criterion)"),
    ("perfusion", "hco3", "metabolic acidosis consumes bicarbonate"),
    ("perfusion", "ph", "lactic acidosis lowers pH"),
    ("perfusion", "base_excess", "base deficit measures metabolic acidosis"),
    ("kidney", "crea", "creatinine defines SOFA renal failure"),
    ("kidney", "bun", "urea accumulates when filtration falls"),
    ("kidney", "potassium", "the failing kidney cannot excrete potassium"),
    ("kidney", "magnesium", "the failing kidney cannot excrete magnesium"),
    ("kidney", "phosphate", "the failing kidney cannot excrete phosphate"),
    ("kidney", "chloride", "renal acid-base handling changes chloride"),
    ("liver", "bili", "bilirubin defines SOFA liver failure"),
    ("liver", "bili_direct", "conjugated bilirubin rises with septic cholestasis"),
    ("liver", "ast", "hepatocyte injury releases AST"),
    ("liver", "alk_phos", "cholestasis raises alkaline phosphatase"),
    ("coagulation", "plt", "platelet count defines SOFA coagulation failure"),
    ("coagulation", "ptt", "factor consumption prolongs PTT"),
    ("coagulation", "fibrinogen", "fibrinogen is consumed in DIC (and is an acute-phase protein)"),
    ("cns", "gcs", "GCS defines SOFA CNS failure"),
    ("cns", "acvpu", "new confusion or lower ACVPU is the NEWS2 consciousness item"),
    ("circulation", "hr_max_24h", "the worst tachycardia of the day marks circulatory stress between charted values"),
    ("respiration", "resp_max_24h", "the day's peak respiratory rate catches intermittent tachypnoea (qSOFA >= 22)"),
    ("inflammation", "temp_max_24h", "a fever spike in the last day is the inflammatory response even after it settles"),
    ("inflammation", "temp_min_24h", "hypothermia at any point of the day marks a severe inflammatory response"),
    ("circulation", "map_min_24h", "the day's lowest MAP defines SOFA cardiovascular failure (< 70 mmHg)"),
    ("circulation", "sbp_min_24h", "the day's lowest systolic pressure (qSOFA <= 100 mmHg) marks hypotension"),
    ("respiration", "spo2_min_24h", "the day's lowest saturation marks hypoxaemia between readings"),
    ("circulation", "hr_rise_6h", "a rising heart rate is early circulatory compensation"),
    ("respiration", "resp_rise_6h", "a rising respiratory rate precedes respiratory failure"),
    ("inflammation", "temp_rise_6h", "a rising temperature is a developing febrile response"),
    ("circulation", "map_fall_6h", "falling pressure is developing vasodilatory shock"),
    ("respiration", "spo2_fall_6h", "falling saturation is worsening gas exchange"),
    ("kidney", "crea_delta", "a creatinine rise of >= 0.3 mg/dL is acute kidney injury (KDIGO)"),
    ("coagulation", "plt_delta", "a falling platelet count is sepsis-induced coagulopathy in progress"),
    ("perfusion", "lact_delta", "rising lactate is worsening hypoperfusion; clearance is recovery"),
    ("inflammation", "wbc_delta", "a changing white count tracks the inflammatory response"),
    ("infection", "wbc_n_24h", "blood counts are repeated when clinicians suspect infection"),
    ("infection", "temp_n_24h", "temperature is checked more often when clinicians suspect infection"),
    ("resp_infection", "cxr_consolidation", "pneumonia shows as consolidation on the chest X-ray"),
    ("sepsis", "cxr_consolidation", "extensive (multilobar) consolidation marks the severe pneumonia that "
     "progresses to sepsis (an IDSA/ATS severe-pneumonia criterion)"),
    ("resp_infection", "cxr_effusion", "parapneumonic effusion accompanies pneumonia"),
    ("resp_infection", "cxr_atelectasis", "atelectasis accompanies and mimics pneumonia"),
    ("resp_infection", "cxr_edema", "infection-driven capillary leak shows as oedema"),
    ("circulation", "cxr_edema", "cardiogenic (circulatory) failure also causes oedema"),
)

#: a typical normal value per concept; the state holding it anchors the expert prior CPDs
_NORMAL = {
    "hr": 75, "sbp": 120, "dbp": 70, "map": 85, "resp": 16, "spo2": 97, "temp": 37, "etco2": 40,
    "o2_flow": 0, "on_o2": 0, "fio2": 0.21, "gcs": 15, "acvpu": 0, "crp": 3, "wbc": 8, "plt": 250,
    "bili": 0.6, "bili_direct": 0.2, "crea": 0.9, "bun": 14, "alb": 4, "lact": 1, "hco3": 24,
    "ph": 7.4, "paco2": 40, "pao2": 95, "sao2": 97, "base_excess": 0, "ast": 25, "alk_phos": 80,
    "calcium": 9.3, "chloride": 103, "glucose": 110, "magnesium": 2, "phosphate": 3.5,
    "potassium": 4.2, "troponin_i": 0.01, "hct": 40, "hgb": 13, "ptt": 30, "fibrinogen": 300,
}

_NETWORK_FILES = {"physionet": "sepsis_physionet.xml", "full": "sepsis_full.xml"}


class NetworkError(ValueError):
    """A network file or structure is invalid; the message names the file and node."""


def _num(x: float) -> str:
    s = f"{x:g}"
    return s.replace(".", "p").replace("-", "m")


def state_names(cuts) -> tuple[str, ...]:
    """XMLBIF-safe state names for the intervals a list of cut-points defines.

    Examples
    --------
    >>> state_names([35.1, 38.1])
    ('lt35p1', '35p1to38p1', 'ge38p1')
    """
    cuts = list(cuts)
    if not cuts:
        return ("all",)
    names = [f"lt{_num(cuts[0])}"]
    names += [f"{_num(a)}to{_num(b)}" for a, b in zip(cuts[:-1], cuts[1:])]
    names.append(f"ge{_num(cuts[-1])}")
    return tuple(names)


def cuts_of_states(states) -> tuple[float, ...] | None:
    """The cut-points that :func:`state_names` turned into ``states`` (None: not cut-point states).

    Examples
    --------
    >>> cuts_of_states(state_names([35.1, 38.1])), cuts_of_states(("all",)), cuts_of_states(("no", "yes"))
    ((35.1, 38.1), (), None)
    """
    from ehr.state_labels import parse_state

    states = tuple(states)
    if states == ("all",):
        return ()
    bounds = [parse_state(x) for x in states]
    if len(states) < 2 or any(b is None for b in bounds):
        return None
    cuts = tuple(b[1] for b in bounds[:-1])
    if any(c is None for c in cuts) or state_names(cuts) != states:
        return None
    return cuts


def _variant_concepts(variant: str) -> list[str]:
    concepts = load_concepts()
    if variant == "physionet":
        return [c for c, spec in concepts.items() if "physionet" in spec.sources]
    return list(concepts)


def _age_set(measurement_age) -> tuple[dict, tuple]:
    """The measurement-age leaves and edges that ``build_expert_network``'s ``measurement_age`` names."""
    if measurement_age is False or measurement_age is None:
        return {}, ()
    key = "six" if measurement_age is True else measurement_age
    if key not in MEASUREMENT_AGE_SETS:
        raise NetworkError(f"measurement_age must be False, True or one of {sorted(MEASUREMENT_AGE_SETS)}, "
                           f"got {measurement_age!r}")
    return MEASUREMENT_AGE_SETS[key]


def _nodes_and_edges(variant: str, drop=(), derived: bool = False, measurement_age: bool | str = False,
                     hours_cuts=None):
    import networkx as nx  # (here only: scoring a saved network does not need networkx)

    if variant not in DEPARTMENTS:
        raise NetworkError(f"unknown network variant '{variant}'; expected one of {sorted(DEPARTMENTS)}")
    drop = set(drop)
    concepts = load_concepts()
    # a list, not a set: the node order (and so the half-life search's order) must not depend on the
    # process's string-hash seed
    leaves = list(dict.fromkeys(_variant_concepts(variant)))
    states: dict[str, tuple[str, ...]] = {TARGET: TARGET_STATES, "department": DEPARTMENTS[variant]}
    roles = {TARGET: "target", "department": "context"}
    for k, (st, _) in CONTEXT.items():
        states[k], roles[k] = st, "context"
    if hours_cuts is not None:
        states["hours_band"] = state_names(sorted(float(c) for c in hours_cuts))
    for k, (measured, _) in TESTED.items():
        if "cxr" in measured and variant != "full":
            continue
        states[k], roles[k] = ("no", "yes"), "tested"
    for c in leaves:
        states[c], roles[c] = state_names(concepts[c].cuts), "concept"
    if derived:
        for k, (c, _, cuts, _) in DERIVED.items():
            if c in leaves:
                states[k], roles[k] = state_names(cuts), "derived"
    age_leaves, age_edges = _age_set(measurement_age)
    if age_leaves:
        for k, (c, _, cuts, _) in age_leaves.items():
            if c in leaves:
                states[k], roles[k] = state_names(cuts), "derived"
    if variant == "full":
        for f in CXR_FINDINGS:
            states[f"cxr_{f}"], roles[f"cxr_{f}"] = ("absent", "present"), "cxr"
    bad = sorted(drop & ({TARGET} | set(_LATENT_STATES)) | (drop - set(states) - set(_LATENT_STATES)))
    if bad:
        raise NetworkError(f"cannot drop node(s) {bad} from the '{variant}' network: only context, "
                           "tested, concept and cxr nodes of that network can be dropped")
    for v in drop:
        del states[v], roles[v]
    edges = []
    for parent, child, reason in EDGES + age_edges:
        if parent in drop or child in drop:
            continue
        if child in states or child in _LATENT_STATES:
            edges.append((parent, child, reason))
    # keep only latent nodes that have an observable descendant in this variant
    g = nx.DiGraph([(p, c) for p, c, _ in edges])
    observable = {n for n in states}
    keep = set(states)
    for lat in _LATENT_STATES:
        if lat in g and nx.descendants(g, lat) & (observable - {TARGET} - set(CONTEXT) - {"department"}):
            keep.add(lat)
            states[lat], roles[lat] = _LATENT_STATES[lat], "latent"
    edges = [(p, c, r) for p, c, r in edges if p in keep and c in keep]
    return states, roles, edges


def _severity(node: str, states) -> np.ndarray:
    """Each state's severity in [0, 1], used to build monotone expert priors."""
    k = len(states)
    if node == TARGET:
        return np.array([1.0, 0.8, 0.6, 0.4, 0.0])
    if node in CONTEXT or node == "department":
        return np.zeros(k)
    return np.linspace(0.0, 1.0, k)


def _prior_values(node, role, states, parent_states, concepts):
    """Expert prior CPD (node x parent configurations) from parent severities."""
    k = len(states)
    grids = np.meshgrid(*[_severity(p, s) for p, s in parent_states], indexing="ij") if parent_states else []
    sev = np.mean([g.ravel() for g in grids], axis=0) if parent_states else np.zeros(1)
    n_cols = sev.size
    if role == "context":
        return np.full((k, n_cols), 1.0 / k)
    if role == "target":
        base = np.array([0.01, 0.01, 0.02, 0.03, 0.93])
        return np.repeat(base[:, None], n_cols, axis=1)
    if role == "concept":
        cuts = cuts_of_states(states)  # the concept's own cuts, or learned ones (with_concept_cuts)
        normal = int(np.searchsorted(concepts[node].cuts if cuts is None else cuts, _NORMAL.get(node, np.nan),
                                     side="right")) if node in _NORMAL else k // 2
        dist = np.abs(np.arange(k) - normal)[:, None]
        logits = -dist * (2.0 - 2.5 * sev[None, :])
    elif role == "derived":
        normal = int(np.searchsorted(DERIVED_LEAVES[node][2], DERIVED_LEAVES[node][3], side="right"))
        dist = np.abs(np.arange(k) - normal)[:, None]
        logits = -dist * (2.0 - 2.5 * sev[None, :])
    elif role in ("tested", "cxr") or k == 2:
        p1 = 0.15 + 0.5 * sev
        return np.vstack([1 - p1, p1])
    else:  # ordered latent: mass moves up with parent severity
        pos = np.linspace(0.0, 1.0, k)[:, None]
        logits = -((pos - sev[None, :]) ** 2) / 0.08
    v = np.exp(logits - logits.max(axis=0))
    return v / v.sum(axis=0)


def build_expert_network(variant: str = "full", *, drop=(), derived: bool = False,
                         measurement_age: bool | str = False, hours_cuts=None) -> DiscreteBayesianNetwork:
    """The expert DAG of ``variant`` ("full" or "physionet") with monotone prior CPDs.

    ``drop`` removes observable nodes (context parents, ``*_tested_24h`` leaves, concept or CXR
    leaves) with their edges, for ablations; latent nodes left without an observable descendant
    go with them. ``derived=True`` adds the derived evidence leaves of :data:`DERIVED` (worst value
    in 24 h, 6 h trends, change since the previous lab, monitoring intensity) under their organ
    nodes (off by default; both shipped networks have them, :data:`SHIPPED_OPTIONS`).
    ``measurement_age=True`` adds the measurement-age leaves of :data:`MEASUREMENT_AGE` (hours since
    lactate, WBC, ... were last measured; role "derived", edges :data:`AGE_EDGES`; off by default, in
    the shipped physionet network); ``measurement_age="extended"`` adds those
    of :data:`MEASUREMENT_AGE_EXTENDED` too (14 in all; edges :data:`AGE_EDGES_EXTENDED`), each of the
    14 with ``sepsis`` as a second parent (:data:`AGE_SEPSIS_EDGES`). ``hours_cuts`` replaces the
    bands of ``hours_band`` (hours since admission; default :data:`CONTEXT`'s 6, 24 and 72 h), for
    experiments: finer bands lean on the clock (see :data:`CONTEXT`).

    Examples
    --------
    >>> net = build_expert_network("full")
    >>> "cxr_consolidation" in net.nodes() and "crp" in net.nodes()
    True
    >>> sorted(build_expert_network("physionet", drop=["hours_band"]).get_parents("sepsis"))
    ['age_band', 'department']
    >>> build_expert_network("physionet", measurement_age="extended").get_parents("plt_age")
    ['coagulation', 'sepsis']
    >>> build_expert_network("physionet", hours_cuts=(6, 24, 48, 72)).get_cpds("hours_band").state_names["hours_band"]
    ['lt6', '6to24', '24to48', '48to72', 'ge72']
    """
    DiscreteBayesianNetwork, TabularCPD, _, _ = pgmpy_classes()
    concepts = load_concepts()
    states, roles, edges = _nodes_and_edges(variant, drop, derived, measurement_age, hours_cuts)
    net = DiscreteBayesianNetwork()
    net.add_nodes_from(states)
    net.add_edges_from([(p, c) for p, c, _ in edges])
    net.name = f"sepsisscope_{variant}" + "".join(f"_no_{v}" for v in sorted(drop)) + ("_derived" if derived else "") \
        + ("" if not measurement_age else "_age" if measurement_age is True else f"_age_{measurement_age}")
    for v in net.nodes():
        parents = [p for p, c, _ in edges if c == v]
        vals = _prior_values(v, roles[v], states[v], [(p, states[p]) for p in parents], concepts)
        net.add_cpds(TabularCPD(v, len(states[v]), vals, evidence=parents or None,
                                evidence_card=[len(states[p]) for p in parents] or None,
                                state_names={u: list(states[u]) for u in [v, *parents]}))
        net.nodes[v]["role"] = roles[v]
    validate_network(net, origin=f"expert network '{variant}'")
    return net


def with_concept_cuts(net: DiscreteBayesianNetwork, cuts: dict) -> DiscreteBayesianNetwork:
    """A copy of ``net`` whose concept leaves in ``cuts`` (concept -> increasing cut-points) have the
    states those cut-points define, with the monotone expert prior CPD for the new states (EM
    re-estimates it). Other nodes keep their CPDs. The state names carry the cut-points, so a saved
    network scores with them (:func:`cpn.evidence.build_evidence` reads them back).

    Examples
    --------
    >>> net = with_concept_cuts(build_expert_network("physionet"), {"hr": (60.0, 75.0, 90.0, 110.0)})
    >>> net.get_cpds("hr").state_names["hr"]
    ['lt60', '60to75', '75to90', '90to110', 'ge110']
    """
    TabularCPD = pgmpy_classes()[1]
    concepts = load_concepts()
    roles = node_roles(net)
    out = net.copy()
    for v in net.nodes():  # pgmpy's copy() drops node attributes (the roles)
        out.nodes[v].update(net.nodes[v])
    for v, c in cuts.items():
        if roles.get(v) != "concept":
            raise NetworkError(f"with_concept_cuts: '{v}' is not a concept leaf of the network")
        old = out.get_cpds(v)
        parents = list(old.variables[1:])
        pstates = [(p, tuple(old.state_names[p])) for p in parents]
        states = state_names(c)
        vals = _prior_values(v, "concept", states, pstates, concepts)
        out.remove_cpds(old)
        out.add_cpds(TabularCPD(v, len(states), vals, evidence=parents or None,
                                evidence_card=[len(s) for _, s in pstates] or None,
                                state_names={v: list(states), **{p: list(s) for p, s in pstates}}))
    validate_network(out, origin="with_concept_cuts")
    return out


def node_roles(net: DiscreteBayesianNetwork) -> dict[str, str]:
    """Role of every node (from its ``role`` property)."""
    return {v: net.nodes[v].get("role", "latent") for v in net.nodes()}


def network_path(name: str) -> Path:
    """Path of a shipped network ("physionet" or "full")."""
    if name not in _NETWORK_FILES:
        raise NetworkError(f"unknown shipped network '{name}'; expected one of {sorted(_NETWORK_FILES)} "
                           "or a path to an XMLBIF file")
    return Path(str(resources.files("cpn").joinpath("networks", _NETWORK_FILES[name])))


def find_cycle(edges) -> list[tuple[str, str]]:
    """The edges of a directed cycle among ``edges`` (``[]`` when there is none), by depth-first search.

    >>> find_cycle([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]), find_cycle([("a", "b")])
    ([('a', 'b'), ('b', 'c'), ('c', 'a')], [])
    """
    children: dict = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    done: set = set()
    for start in list(children):
        if start in done:
            continue
        path, stack = [start], [iter(children[start])]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                done.add(path.pop())
                stack.pop()
            elif child in path:
                loop = path[path.index(child):] + [child]
                return list(zip(loop, loop[1:]))
            elif child not in done:
                path.append(child)
                stack.append(iter(children.get(child, ())))
    return []


def validate_network(net: DiscreteBayesianNetwork, *, origin: str = "network") -> DiscreteBayesianNetwork:
    """Check a network: acyclic, every node has a CPD whose columns sum to 1, roles known,
    concept leaves name known concepts with matching states, exactly one target.

    Raises :class:`NetworkError` naming ``origin`` and the node.
    """
    cycle = find_cycle(net.edges())
    if cycle:
        raise NetworkError(f"{origin}: the graph has a cycle {cycle}")
    concepts = load_concepts()
    roles = node_roles(net)
    targets = [v for v, r in roles.items() if r == "target"]
    if targets != [TARGET]:
        raise NetworkError(f"{origin}: expected exactly one target node '{TARGET}', found {targets}")
    for v in net.nodes():
        cpd = net.get_cpds(v)
        if cpd is None:
            raise NetworkError(f"{origin}: node '{v}' has no CPD")
        if sorted(cpd.variables[1:]) != sorted(net.get_parents(v)):
            raise NetworkError(f"{origin}: CPD of '{v}' is conditioned on {cpd.variables[1:]} but the "
                               f"node's parents are {list(net.get_parents(v))}")
        vals = np.asarray(cpd.values, dtype=float).reshape(cpd.variable_card, -1)
        if (vals < 0).any() or not np.isfinite(vals).all():
            raise NetworkError(f"{origin}: CPD of '{v}' has negative or non-finite entries")
        sums = vals.sum(axis=0)
        if not np.allclose(sums, 1.0, atol=1e-6):
            col = int(np.argmax(np.abs(sums - 1.0)))
            raise NetworkError(f"{origin}: CPD of '{v}' does not sum to 1 (column {col} sums to "
                               f"{sums[col]:.6g})")
        role = roles[v]
        if role not in ("target", "latent", "context", "concept", "tested", "cxr", "derived"):
            raise NetworkError(f"{origin}: node '{v}' has unknown role '{role}'")
        if role == "concept":
            if v not in concepts:
                raise NetworkError(f"{origin}: concept leaf '{v}' is not in ehr/concepts.toml")
            want = state_names(concepts[v].cuts)
            have = tuple(cpd.state_names[v])
            # learned states (with_concept_cuts): increasing cuts inside the plausible range
            cuts = cuts_of_states(have)
            learned = cuts is not None and all(a < b for a, b in zip(cuts, cuts[1:])) and \
                all(concepts[v].min < c <= concepts[v].max for c in cuts)
            if have != want and not learned:
                raise NetworkError(f"{origin}: concept leaf '{v}' has states {have}, but the cuts in "
                                   f"concepts.toml define {want} (learned cut-points must increase and lie "
                                   f"inside [{concepts[v].min:g}, {concepts[v].max:g}])")
        if role == "derived":
            if v not in DERIVED_LEAVES:
                raise NetworkError(f"{origin}: derived leaf '{v}' is not one of cpn.structure.DERIVED_LEAVES")
            if tuple(cpd.state_names[v]) != state_names(DERIVED_LEAVES[v][2]):
                raise NetworkError(f"{origin}: derived leaf '{v}' has states {tuple(cpd.state_names[v])}, but "
                                   f"its cuts define {state_names(DERIVED_LEAVES[v][2])}")
        if role == "cxr":
            finding = v[len("cxr_"):]
            if finding not in CXR_FINDINGS or tuple(cpd.state_names[v]) != ("absent", "present"):
                raise NetworkError(f"{origin}: CXR leaf '{v}' must be cxr_<finding> with states "
                                   f"(absent, present); findings are {CXR_FINDINGS}")
    if tuple(net.get_cpds(TARGET).state_names[TARGET]) != TARGET_STATES:
        raise NetworkError(f"{origin}: target '{TARGET}' must have states {TARGET_STATES}")
    return net


def load_network(name_or_path="physionet") -> DiscreteBayesianNetwork:
    """Read and validate a network: a shipped name ("physionet", "full") or an XMLBIF path."""
    path = network_path(name_or_path) if str(name_or_path) in _NETWORK_FILES else Path(name_or_path)
    if not path.exists():
        raise NetworkError(f"network file {path} does not exist")
    reader = pgmpy_classes()[2]
    try:
        net = reader(str(path)).get_model()
    except NetworkError:
        raise
    except Exception as exc:  # pgmpy raises bare ValueErrors (e.g. "Loops are not allowed")
        raise NetworkError(f"{path}: cannot read the network: {exc}") from exc
    return validate_network(net, origin=str(path))


def save_network(net: DiscreteBayesianNetwork, path) -> Path:
    """Write ``net`` as XMLBIF (full float precision) after validating it."""
    validate_network(net, origin=str(path))
    path = Path(path)
    pgmpy_classes()[3](net).write_xmlbif(str(path))
    return path


#: the :func:`build_expert_network` options of each shipped network, chosen per variant (issue 13).
#: ``physionet`` (``sepsis_physionet.xml``): derived leaves and the 14 measurement ages, by
#: patient-grouped 5-fold CV on PhysioNet set A (``docs/cpn_evidence_experiments.md``).
#: ``full`` (``sepsis_full.xml``): derived leaves only. No real data has its variable set, so it is
#: chosen on the synthetic linked cohort of the main job (``scripts/cpn_full_options.py``: 2,000
#: stays, 3-fold patient-grouped CV, cohort seeds 1-3; pooled AUROC, mean of the seeds, with the
#: default 40 refinement steps / EM only): core 0.825 / 0.824, derived 0.828 / 0.828, derived + six
#: ages 0.825 / 0.826, derived + 14 ages 0.811 / 0.787. The generator does not model when clinicians
#: order tests, so the age leaves cost AUROC there; the derived leaves are physiology (trends, worst
#: values) and add AUPRC (0.323 / 0.320 against 0.293 / 0.288 for the core network).
SHIPPED_OPTIONS = {"physionet": {"derived": True, "measurement_age": "extended"},
                   "full": {"derived": True, "measurement_age": False}}

#: the evidence for ``SHIPPED_OPTIONS["full"]`` in ``cpn/networks/README.md`` (written by
#: :func:`write_shipped_networks`)
_FULL_OPTIONS_README = (
    "Synthetic cohort, 2,000 stays per seed, 3-fold patient-grouped CV, the main job's CPN (`SepsisCPN`",
    "defaults: learned half-lives, 30 EM iterations; \"+ refinement\": the default 40 discriminative steps);",
    "pooled out-of-fold AUROC / AUPRC, the mean of cohort seeds 1, 2 and 3 (AUROC per seed in brackets):", "",
    "| `build_expert_network(\"full\", ...)` | EM only | + refinement |",
    "|---|---|---|",
    "| core (no options) | 0.824 / 0.288 (0.817, 0.818, 0.837) | 0.825 / 0.293 (0.817, 0.816, 0.842) |",
    "| **`derived=True` (shipped)** | **0.828 / 0.320** (0.821, 0.817, 0.847) "
    "| **0.828 / 0.323** (0.822, 0.811, 0.851) |",
    "| `derived=True, measurement_age=True` (six ages) | 0.826 / 0.308 (0.818, 0.817, 0.842) "
    "| 0.825 / 0.314 (0.817, 0.811, 0.849) |",
    "| `derived=True, measurement_age=\"extended\"` (14 ages, as physionet) | 0.787 / 0.186 (0.773, 0.794, 0.794) "
    "| 0.811 / 0.275 (0.799, 0.804, 0.831)\\* |", "",
    "\\* refinement with the pull of before (1e-4 per screen); the other refined rows use the default",
    "`discriminative_l2` (78.4 on the summed likelihood). The generator does not model when clinicians",
    "order tests, so the measurement ages add nothing there and the 14 cost AUROC; the derived leaves",
    "(worst values, trends) are physiology and add AUPRC. Refinement is a wash on this cohort and stays",
    "on, as for physionet. `SEPSISCOPE_THREADS=1 python scripts/cpn_full_options.py --seeds 1 2 3`.",
)


def write_shipped_networks(directory=None) -> list[Path]:
    """(Re)generate ``sepsis_full.xml``, ``sepsis_physionet.xml`` and the edge README.

    Run after editing :data:`EDGES`: ``python -c "from cpn.structure import *; write_shipped_networks()"``.
    """
    out = Path(directory) if directory is not None else network_path("full").parent
    out.mkdir(parents=True, exist_ok=True)
    written = [save_network(build_expert_network(v, **SHIPPED_OPTIONS[v]), out / _NETWORK_FILES[v])
               for v in ("full", "physionet")]
    _, _, full_edges = _nodes_and_edges("full")
    _, _, phys_edges = _nodes_and_edges("physionet")
    in_phys = {(p, c) for p, c, _ in phys_edges}
    lines = [
        "# Shipped networks", "",
        "Generated by `cpn.structure.write_shipped_networks()` from `cpn.structure.EDGES` and written with",
        "pgmpy's XMLBIF writer:", "",
        "- `sepsis_full.xml`: the full SepsisFinder-style variable set (CRP, albumin, GCS/ACVPU, oxygen, "
        "CXR findings).",
        "- `sepsis_physionet.xml`: the PhysioNet 2019 variable set (no CRP/albumin/consciousness/CXR; "
        "no CNS node).", "",
        "The target `sepsis` is the time to onset (<=6 h, 6-12 h, 12-24 h, 24-48 h, >48 h or none); risk is",
        "P(onset within 48 h). CPDs in the shipped files are monotone expert priors; `cpn.SepsisCPN.fit`",
        "re-estimates them (Dirichlet prior, EM for the latent nodes). Node roles are the XMLBIF property",
        "`role` (target, latent, context, concept, tested, cxr, derived). Concept leaves take their states from the",
        "`cuts` of `ehr/concepts.toml`; a missing value is no evidence, never a state. The `*_tested_24h`",
        "leaves model informative missingness (was the test ordered in the last 24 h). The extra leaves of each",
        "file are chosen per variant (`cpn.structure.SHIPPED_OPTIONS`, issue 13); `build_expert_network(variant)`",
        "is the core network without them:", "",
        "- `sepsis_physionet.xml`: the derived leaves and the 14 measurement-age leaves below, chosen by 5-fold",
        "  patient-grouped CV on PhysioNet set A.",
        "- `sepsis_full.xml`: the derived leaves only. No real data has the full variable set, so its options",
        "  are chosen on the synthetic linked cohort of the main job (`sepsiscope run`), which the table",
        "  below summarises.", "",
        *_FULL_OPTIONS_README, "",
        "Picture: `docs/cpn_network.png`.", "",
        "## Edges and their clinical reasons", "",
        "| parent | child | reason | in physionet |", "|---|---|---|---|"]
    lines += [f"| {p} | {c} | {r} | {'yes' if (p, c) in in_phys else 'no'} |" for p, c, r in full_edges]
    _, _, derived_edges = _nodes_and_edges("physionet", derived=True)
    lines += [
        "", "## Derived evidence leaves", "",
        "In both shipped files (`cpn.structure.SHIPPED_OPTIONS`, issue 13);",
        "`build_expert_network(variant, derived=True)` adds them to the core network.",
        "Each is computed from the stay's screens by `ehr.trends` (`cpn.structure.DERIVED`: the concept, the",
        "statistic and the clinical cut-points); a missing value is no evidence, a present one is hard evidence.", "",
        "| parent | child | reason |", "|---|---|---|"]
    lines += [f"| {p} | {c} | {r} |" for p, c, r in derived_edges if c in DERIVED]
    lines += [
        "", "## Measurement-age leaves", "",
        "In `sepsis_physionet.xml`, not in `sepsis_full.xml`. `build_expert_network(variant, measurement_age=True)`",
        "adds six (issue 13).",
        "Each is the hours since the concept was last measured in the stay (`<concept>_age_h`; never measured:",
        "the last state), cut at `cpn.structure.MEASUREMENT_AGE`'s hours; hard evidence.", "",
        "| parent | child | reason |", "|---|---|---|"]
    lines += [f"| {p} | {c} | {r} |" for p, c, r in AGE_EDGES]
    lines += [
        "", "`build_expert_network(variant, measurement_age=\"extended\")` (`sepsis_physionet.xml`) adds eight more",
        "(`cpn.structure.MEASUREMENT_AGE_EXTENDED`, cuts 1/6/24/1000 h) beside the six, and gives all 14",
        "`sepsis` as a second parent (`cpn.structure.AGE_SEPSIS_EDGES`):", "",
        "| parent | child | reason |", "|---|---|---|"]
    lines += [f"| {p} | {c} | {r} |" for p, c, r in AGE_EDGES_EXTENDED + AGE_SEPSIS_EDGES]
    readme = out / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return written + [readme]
