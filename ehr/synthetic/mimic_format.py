"""The synthetic cohort written as MIMIC-IV tables: a large, known input for the MIMIC reader.

:func:`write_mimic_tables` writes ``icu/icustays``, ``hosp/admissions``, ``hosp/patients``,
``icu/chartevents`` and ``hosp/labevents`` (gzip CSV, the official column names) from cohort
chunks, appending one chunk at a time, so a cohort of any size (``generate_chunks``) becomes a
copy of MIMIC-IV's largest tables without being held in memory. Each synthetic concept is
charted under the first MIMIC-IV item id that ``ehr/mimic_items.toml`` maps to it in the
concept's canonical unit (vital signs in ``chartevents``, labs in ``labevents``); concepts
without such an item (ACVPU, oxygen flags) are not written. Each ICU stay is its own hospital
admission (``hadm_id = stay_id``); ``anchor_year`` is the admission year, so age comes back whole.
No cultures or prescriptions are written, so the reader needs
``allow_missing=("microbiologyevents", "prescriptions")`` and finds no Sepsis-3 onsets: the tables
test the reader's streaming and scale, not the labels.

Examples
--------
>>> import tempfile, pathlib
>>> from ehr.synthetic import generate_chunks
>>> root = write_mimic_tables(generate_chunks(8, seed=1, chunk_stays=5), pathlib.Path(tempfile.mkdtemp()) / "m")
>>> sorted(str(p.relative_to(root)) for p in root.rglob("*.csv.gz"))[:3]
['hosp/admissions.csv.gz', 'hosp/labevents.csv.gz', 'hosp/patients.csv.gz']
>>> len(pd.read_csv(root / "icu" / "icustays.csv.gz"))
8
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ehr.cohort import Cohort
from ehr.concepts import load_concepts

__all__ = ["write_mimic_tables", "mimic_items_for_synthetic"]

_TABLE = {"chartevents": "icu/chartevents", "labevents": "hosp/labevents"}


def mimic_items_for_synthetic() -> pd.DataFrame:
    """Concept -> (MIMIC-IV item id, table, unit): the first item in the concept's canonical unit."""
    from ehr.sources.mimic.items import load_item_map

    items = load_item_map()["items"]
    concepts = load_concepts()
    iv = items.loc[(items["itemid"] >= 220000) | ((items["itemid"] >= 50000) & (items["itemid"] < 60000))]
    same_unit = iv.loc[[concepts[c].unit == u for c, u in zip(iv["concept"], iv["unit"])]]
    return same_unit.drop_duplicates("concept").set_index("concept")


def _append(path: Path, frame: pd.DataFrame) -> None:
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "at", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, index=False, header=new, date_format="%Y-%m-%d %H:%M:%S")


def _stays_tables(st: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = st["discharge_time"]
    return {
        "icu/icustays": pd.DataFrame({"subject_id": st["subject_id"], "hadm_id": st["stay_id"],
                                      "stay_id": st["stay_id"], "first_careunit": st["department"],
                                      "last_careunit": st["department"], "intime": st["admit_time"],
                                      "outtime": out, "los": (out - st["admit_time"]) / pd.Timedelta("1D")}),
        "hosp/admissions": pd.DataFrame({"subject_id": st["subject_id"], "hadm_id": st["stay_id"],
                                         "admittime": st["hospital_admit_time"].fillna(st["admit_time"]),
                                         "dischtime": out, "hospital_expire_flag": st["death"].astype(int)}),
        "hosp/patients": pd.DataFrame({"subject_id": st["subject_id"], "gender": st["sex"],
                                       "anchor_age": np.floor(st["age"]).astype(int),
                                       "anchor_year": st["admit_time"].dt.year}),
    }


def _event_tables(ev: pd.DataFrame, items: pd.DataFrame) -> dict[str, pd.DataFrame]:
    ev = ev.loc[ev["concept"].isin(items.index) & ev["numeric_value"].notna()]
    item = items.reindex(ev["concept"].to_numpy())
    out = {}
    for table, path in _TABLE.items():
        sel = (item["table"] == table).to_numpy()
        e, it = ev.loc[sel], item.loc[sel]
        value = e["numeric_value"].to_numpy()
        frame = pd.DataFrame({"subject_id": e["subject_id"].to_numpy(), "hadm_id": e["stay_id"].to_numpy()})
        if table == "chartevents":
            frame["stay_id"] = e["stay_id"].to_numpy()
        frame["itemid"] = it["itemid"].to_numpy()
        frame["charttime"] = e["time"].to_numpy()
        frame["value"] = [f"{v:g}" for v in value]
        frame["valuenum"] = value
        frame["valueuom"] = it["unit"].to_numpy()
        out[path] = frame
    return out


def write_mimic_tables(chunks: Iterable[Cohort], root) -> Path:
    """Append every chunk's stays and measurements to MIMIC-IV tables under ``root`` (created; must be new)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: exists and is not empty; write MIMIC tables into a new folder")
    items = mimic_items_for_synthetic()
    for chunk in chunks:
        tables = {**_stays_tables(chunk.stays), **_event_tables(chunk.events, items)}
        for name, frame in tables.items():
            _append(root / f"{name}.csv.gz", frame)
    return root
