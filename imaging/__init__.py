"""CXR finding model: datasets and input contract, models, training, calibration, Grad-CAM, scoring.

The model's probabilities enter the CPN as ``cxr_<finding>`` evidence via :func:`score_cxr_table`.
"""

from imaging.contract import ImageContractError, check_images, load_image, prepare_images
from imaging.datasets import ImageSet, finding_columns, patient_groups, read_image_folder, read_npz
from imaging.estimator import CXRFindingClassifier, training_sets
from imaging.gradcam import grad_cam, overlay_heatmap, save_grad_cam
from imaging.models import ARCHS, CXRFindingModel, default_device
from imaging.scoring import finding_probabilities, score_cxr_table
from imaging.synthetic_images import render_cohort_images, render_study, sample_real_images
from imaging.train import FindingTrainer, augment_batch, classification_metrics

__all__ = [
    "ARCHS", "CXRFindingClassifier", "CXRFindingModel", "FindingTrainer", "ImageContractError", "ImageSet",
    "augment_batch", "check_images", "classification_metrics", "default_device",
    "finding_columns", "finding_probabilities", "grad_cam", "load_image", "overlay_heatmap",
    "patient_groups", "prepare_images", "read_image_folder", "read_npz", "render_cohort_images", "render_study",
    "sample_real_images", "save_grad_cam", "score_cxr_table", "training_sets",
]
