"""MIMIC item ids -> contract events: the item map, concept values, GCS, weights, ventilation.

``ehr/mimic_items.toml`` maps CareVue and MetaVision item ids to the concepts of
``ehr/concepts.toml`` (``[concepts]``) and lists the item ids of the signals that are not
concepts (``[signals]``: GCS components, weight, ventilation, vasopressors, urine output).
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from ehr.concepts import convert, load_concepts
from ehr.schema import columns
from ehr.sources.plausibility import check_values
from ehr.sources.report import IngestReport

__all__ = ["ANTIBIOTIC_PATTERN", "EVENT_COLUMNS", "load_item_map", "is_antibiotic", "make_events",
           "concept_events", "chart_signals"]

EVENT_COLUMNS = columns("events")
_ETT = re.compile(r"ETT|ET/Trach", re.IGNORECASE)

#: antibiotic drug names (lower-case substrings), after MIT-LCP mimic-code ``antibiotic.sql``
ANTIBIOTIC_PATTERN = re.compile(
    "adoxa|ala-tet|alodox|amikacin|amikin|amoxicil|amphotericin|anidulafungin|ancef|clavulanate|"
    "ampicillin|augmentin|avelox|avidoxy|azactam|azithromycin|aztreonam|axetil|bactocill|bactrim|"
    "bactroban|bethkis|biaxin|bicillin l-a|cayston|cefazolin|cedax|cefoxitin|ceftazidime|cefaclor|"
    "cefadroxil|cefdinir|cefditoren|cefepime|cefotan|cefotetan|cefotaxime|ceftaroline|cefpodoxime|"
    "cefpirome|cefprozil|ceftibuten|ceftin|ceftriaxone|cefuroxime|cephalexin|cephalothin|cephapririn|"
    "chloramphenicol|cipro|claforan|clarithromycin|cleocin|clindamycin|cubicin|dicloxacillin|"
    "dirithromycin|doryx|doxycy|duricef|dynacin|ery-tab|eryped|eryc|erythrocin|erythromycin|factive|"
    "flagyl|fortaz|furadantin|garamycin|gentamicin|kanamycin|keflex|kefzol|ketek|levaquin|"
    "levofloxacin|lincocin|linezolid|macrobid|macrodantin|maxipime|mefoxin|metronidazole|meropenem|"
    "methicillin|minocin|minocycline|monodox|monurol|morgidox|moxatag|moxifloxacin|mupirocin|myrac|"
    "nafcillin|neomycin|nicazel doxy 30|nitrofurantoin|norfloxacin|noroxin|ocudox|ofloxacin|omnicef|"
    "oracea|oraxyl|oxacillin|pc pen vk|pce dispertab|penicillin|periostat|pfizerpen|piperacillin|"
    "tazobactam|primsol|proquin|raniclor|rifadin|rifampin|rocephin|smz-tmp|septra|solodyn|"
    "spectracef|streptomycin|sulfadiazine|sulfamethoxazole|trimethoprim|sulfatrim|sulfisoxazole|"
    "suprax|synercid|tazicef|tetracycline|timentin|tobramycin|unasyn|vancocin|vancomycin|vantin|"
    "vibativ|vibra-tabs|vibramycin|zinacef|zithromax|zosyn|zyvox|daptomycin|tigecycline|ertapenem|"
    "imipenem|doripenem|colistin|polymyxin"
)
_ABX_EXCLUDE_DRUG = re.compile("cream|desensitization|ophth oint|gel|ointment|drops|ophth")
_ABX_EXCLUDE_ROUTE = {"ou", "os", "od", "au", "as", "ad", "tp", "both eyes", "left eye", "right eye",
                      "both ears", "left ear", "right ear", "ophthalmic", "topical"}


def is_antibiotic(drug: pd.Series, route: pd.Series) -> pd.Series:
    """Prescriptions of a systemic antibiotic (mimic-code's list, less topical forms and routes)."""
    drug = drug.fillna("").str.lower()
    route = route.fillna("").str.lower().str.strip()
    return drug.str.contains(ANTIBIOTIC_PATTERN) & ~drug.str.contains(_ABX_EXCLUDE_DRUG) & ~route.isin(_ABX_EXCLUDE_ROUTE)


@lru_cache(maxsize=1)
def load_item_map() -> dict:
    """Load ``ehr/mimic_items.toml``: ``{"items": DataFrame(itemid, table, concept, unit), "signals": {...}}``.

    Every concept must exist in ``concepts.toml`` (ValueError naming it otherwise).

    Examples
    --------
    >>> items = load_item_map()["items"]
    >>> sorted(items.loc[items.itemid == 220045, ["table", "concept"]].iloc[0])
    ['chartevents', 'hr']
    """
    text = resources.files("ehr").joinpath("mimic_items.toml").read_text(encoding="utf-8")
    origin = "ehr/mimic_items.toml"
    raw = tomllib.loads(text)
    known = load_concepts()
    rows = []
    for concept, entry in raw.get("concepts", {}).items():
        if concept not in known:
            raise ValueError(f"{origin}: concept '{concept}' is not in concepts.toml")
        for it in entry.get("items", []):
            rows.append((int(it["id"]), it["table"], concept, it["unit"]))
    items = pd.DataFrame(rows, columns=["itemid", "table", "concept", "unit"])
    dup = items.duplicated(["itemid", "table"])
    if dup.any():
        raise ValueError(f"{origin}: item id {int(items.loc[dup, 'itemid'].iloc[0])} is mapped twice")
    return {"items": items, "signals": raw.get("signals", {})}


def make_events(df: pd.DataFrame, code, numeric=None, text=None, unit=None, concept=None) -> pd.DataFrame:
    """An ``events`` frame from rows with ``subject_id, stay_id, time``; other fields arrays or scalars."""
    n = len(df)

    def col(x, dtype):
        if isinstance(x, (pd.Series, np.ndarray)):
            return np.asarray(x)
        return np.full(n, x, dtype=dtype)

    text_value = col(text, object).astype(object)
    text_value[pd.isna(text_value)] = None  # CSV cells read as NaN: null is None in object columns
    return pd.DataFrame({
        "subject_id": df["subject_id"].to_numpy(dtype="int64"), "stay_id": df["stay_id"].to_numpy(dtype="int64"),
        "time": df["time"].to_numpy(dtype="datetime64[ns]"), "code": col(code, object),
        "numeric_value": col(numeric, "float64").astype("float64") if numeric is not None else np.full(n, np.nan),
        "text_value": text_value, "unit": col(unit, object), "concept": col(concept, object),
    })


def item_codes(df: pd.DataFrame, ns: str) -> np.ndarray:
    """``<NS>/<itemid>`` for every row."""
    return (ns + "/" + df["itemid"].astype(str)).to_numpy()


def concept_events(df: pd.DataFrame, table: str, ns: str, report: IngestReport, file: str) -> pd.DataFrame:
    """Concept-mapped rows -> events in canonical units (text-only values kept as text)."""
    items = load_item_map()["items"]
    items = items.loc[items["table"] == table].set_index("itemid")
    df = df.loc[df["itemid"].isin(items.index)]
    if df.empty:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    concept = df["itemid"].map(items["concept"])
    unit = df["itemid"].map(items["unit"])
    num = pd.to_numeric(df["valuenum"], errors="coerce") if "valuenum" in df else pd.Series(np.nan, index=df.index)
    text = df["value"] if "value" in df else pd.Series(None, index=df.index, dtype=object)
    # MIMIC sometimes leaves valuenum empty although value is a number
    num = num.fillna(pd.to_numeric(text, errors="coerce"))
    text_only = num.isna() & text.notna()
    if text_only.any():
        ex = df.loc[text_only].iloc[0]
        report.add(file, int(ex["_row"]), "valuenum", "charted value with text only", "repaired",
                   f"kept as text_value {str(ex['value'])!r} (itemid {ex['itemid']})", n=int(text_only.sum()))
    out_val = np.full(len(df), np.nan)
    keep = np.ones(len(df), dtype=bool)
    rows = df["_row"].to_numpy()
    for (c, u), idx in df.groupby([concept.to_numpy(), unit.to_numpy()]).indices.items():
        v = num.to_numpy(dtype="float64")[idx]
        if u == "fraction_or_percent":
            v = np.where(v > 1.0, v / 100.0, v)
        else:
            v = convert(c, v, u)
        present = ~np.isnan(v)
        vv, ok = check_values(c, v, report, file, rows[idx], field=f"valuenum (itemid→{c})")
        out_val[idx] = vv
        keep[idx] = ok | ~present
    canon = concept.map({k: c.unit for k, c in load_concepts().items()})
    ev = make_events(df, code=item_codes(df, ns), numeric=out_val,
                     text=text.where(text_only).to_numpy(), unit=canon.to_numpy(), concept=concept.to_numpy())
    return ev.loc[keep]


def chart_signals(ce: pd.DataFrame, ns: str) -> list[pd.DataFrame]:
    """GCS components and the MetaVision GCS total, weights, and the ventilation flag."""
    sig = load_item_map()["signals"]
    out = []
    num = pd.to_numeric(ce["valuenum"], errors="coerce") if "valuenum" in ce else pd.Series(np.nan, index=ce.index)
    value = ce["value"] if "value" in ce else pd.Series(None, index=ce.index, dtype=object)
    # GCS components (raw) and the MetaVision total
    comp_ids = {k: set(sig[f"gcs_{k}"]["chartevents"]) for k in ("eye", "verbal", "motor")}
    all_comp = set().union(*comp_ids.values())
    m = ce["itemid"].isin(all_comp)
    if m.any():
        g = ce.loc[m]
        out.append(make_events(g, code=item_codes(g, ns), numeric=num[m].to_numpy(), text=value[m].to_numpy(),
                               unit="{score}"))
        total = _gcs_total(g, num, value)
        if total is not None:
            t = total.reset_index()
            out.append(make_events(t, code=ns + "/gcs_total", numeric=t[0].to_numpy(), unit="{score}",
                                   concept="gcs"))
    # weights
    w = ce["itemid"].isin(sig["weight"]["chartevents"]) & num.gt(0)
    if w.any():
        g = ce.loc[w]
        out.append(make_events(g, code=item_codes(g, ns), numeric=num[w].to_numpy(), unit="kg"))
    # ventilation
    v = ce["itemid"].isin(sig["vent"]["chartevents"])
    text = value.fillna("").str.lower()
    device = ce["itemid"].isin([467, 226732])
    v &= ~device | text.str.contains("ventilator")
    v &= ~ce["itemid"].isin([720, 223848]) | ~text.str.startswith("other")
    v &= value.notna() | num.notna()
    if v.any():
        g = ce.loc[v].drop_duplicates(["stay_id", "time"])
        out.append(make_events(g, code=ns + "/vent", numeric=1.0, text=g["itemid"].astype(str).to_numpy(), unit="1"))
    return out


def _gcs_total(g: pd.DataFrame, num: pd.Series, value: pd.Series) -> pd.Series | None:
    """MetaVision GCS total: eye + verbal + motor at one charttime; an intubated verbal gives 15."""
    mv = g.loc[g["itemid"].isin([220739, 223900, 223901])].copy()
    if not len(mv):
        return None
    mv["num"] = num[mv.index]
    mv["ett"] = (mv["itemid"] == 223900) & value[mv.index].fillna("").str.contains(_ETT)
    mv["part"] = mv["itemid"].map({220739: "eye", 223900: "verbal", 223901: "motor"})
    piv = mv.pivot_table(index=["subject_id", "stay_id", "time"], columns="part", values="num", aggfunc="min")
    ett = mv.groupby(["subject_id", "stay_id", "time"])["ett"].any()
    piv = piv.reindex(columns=["eye", "verbal", "motor"])
    total = piv.sum(axis=1, min_count=3)
    total = total.where(~ett.reindex(piv.index).fillna(False), 15.0).dropna()
    return total.loc[(total >= 3) & (total <= 15)]
