"""Deep EHR+CXR models: sequence inputs, the EHR sequence model, fusion variants, robustness.

``fusion`` stands on ``ehr``, ``imaging`` and ``evaluation``; nothing below imports it.
"""

from fusion.ablations import (ABLATION_MODELS, FINETUNED_MODELS, fit_ablation_models, fusion_table, pneumonia_groups,
                              robustness_ci_table, synthetic_fusion_data)
from fusion.embeddings import attach_embeddings, embed_cxr_table, embedding_names, synthetic_cxr_embeddings
from fusion.models import FINETUNE, STRATEGIES, FusionModel, SequenceModel
from fusion.robustness import (CONDITIONS, robustness_predictions, robustness_table, with_older_images,
                               without_images)
from fusion.sequences import EMB_AGE, EMB_IMAGE, EMB_PREFIX, SequenceInputs, Sequences, embedding_columns, studies_from_screens

__all__ = [
    "ABLATION_MODELS", "CONDITIONS", "EMB_AGE", "EMB_IMAGE", "EMB_PREFIX", "FINETUNE", "FINETUNED_MODELS",
    "STRATEGIES", "FusionModel", "SequenceInputs",
    "SequenceModel", "Sequences", "attach_embeddings", "embed_cxr_table", "embedding_columns", "embedding_names",
    "fit_ablation_models", "fusion_table", "pneumonia_groups", "robustness_ci_table", "robustness_predictions",
    "robustness_table", "studies_from_screens", "synthetic_cxr_embeddings", "synthetic_fusion_data",
    "with_older_images", "without_images",
]
