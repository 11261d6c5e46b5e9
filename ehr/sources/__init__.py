"""Readers from real sources into the events/stays contract."""

from ehr.sources.mimic import MimicCohort, read_mimic
from ehr.sources.physionet import read_physionet
from ehr.sources.report import IngestError, IngestReport

__all__ = ["read_physionet", "read_mimic", "MimicCohort", "IngestError", "IngestReport"]
