"""Deep EHR+CXR models: sequence inputs, the EHR sequence model, fusion variants, robustness.

``fusion`` stands on ``ehr``, ``imaging`` and ``evaluation``; nothing below imports it.
"""

from fusion.embeddings import attach_embeddings, embed_cxr_table, embedding_names, synthetic_cxr_embeddings
from fusion.models import STRATEGIES, FusionModel, SequenceModel
from fusion.robustness import (CONDITIONS, robustness_predictions, robustness_table, with_older_images,
                               without_images)
from fusion.sequences import EMB_AGE, EMB_PREFIX, SequenceInputs, Sequences, embedding_columns, studies_from_screens

__all__ = [
    "CONDITIONS", "EMB_AGE", "EMB_PREFIX", "STRATEGIES", "FusionModel", "SequenceInputs", "SequenceModel",
    "Sequences", "attach_embeddings", "embed_cxr_table", "embedding_columns", "embedding_names",
    "robustness_predictions", "robustness_table", "studies_from_screens", "synthetic_cxr_embeddings",
    "with_older_images", "without_images",
]
