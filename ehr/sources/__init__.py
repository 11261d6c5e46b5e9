"""Readers from real sources into the contract: each returns an :class:`ehr.cohort.Cohort`."""

from ehr.sources.mimic import read_mimic
from ehr.sources.physionet import read_physionet
from ehr.sources.report import IngestError, IngestReport

__all__ = ["read_physionet", "read_mimic", "IngestError", "IngestReport"]
