"""MIMIC-III / MIMIC-IV reader (see :mod:`ehr.sources.mimic.reader` for what it reads and how).

``tables`` finds and reads the CSV tables, ``items`` maps item ids to events, ``infusions`` turns
interval rows (vasopressors, ventilation) into events, ``stays`` builds the stays table.
"""

from ehr.sources.mimic.items import ANTIBIOTIC_PATTERN, load_item_map
from ehr.sources.mimic.reader import read_mimic
from ehr.sources.mimic.stays import AGE_OVER_89

__all__ = ["read_mimic", "load_item_map", "ANTIBIOTIC_PATTERN", "AGE_OVER_89"]
