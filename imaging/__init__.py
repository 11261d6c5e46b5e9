"""CXR finding model: datasets and input contract, models, augmentation, training, calibration and operating points, evaluation, Grad-CAM with the lung-heat check, scoring.

The model's probabilities enter the CPN as ``cxr_<finding>`` evidence via :func:`score_cxr_table`.
"""

from imaging.architectures import TRUNKS, HistogramEqualise, build_trunk
from imaging.augment import SHIFTS, apply_shift, augment_cxr
from imaging.contract import ImageContractError, check_images, load_image, prepare_images
from imaging.datasets import (ImageSet, cached_image_folder, finding_columns, internal_splits, patient_groups,
                              read_class_folders, read_image_folder, read_labelled, read_npz)
from imaging.estimator import CXRFindingClassifier, training_sets
from imaging.evaluate import evaluate_model, evaluate_probabilities, shift_report, stored_thresholds
from imaging.gradcam import grad_cam, grad_cams, lung_heat_fraction, overlay_heatmap, save_grad_cam, target_layer
from imaging.lungs import heat_fraction_inside, lung_mask, marker_mask, mask_markers
from imaging.models import ARCHS, CXRFindingModel, default_device
from imaging.operating_points import class_pos_weight, threshold_for_sensitivity
from imaging.scoring import finding_probabilities, score_cxr_table
from imaging.synthetic_images import render_cohort_images, render_study, sample_real_images
from imaging.train import FindingTrainer, augment_batch, classification_metrics

__all__ = [
    "ARCHS", "CXRFindingClassifier", "CXRFindingModel", "FindingTrainer", "HistogramEqualise", "ImageContractError",
    "ImageSet", "SHIFTS", "TRUNKS", "apply_shift", "augment_batch", "augment_cxr", "build_trunk", "cached_image_folder",
    "check_images", "class_pos_weight", "classification_metrics", "default_device", "evaluate_model",
    "evaluate_probabilities", "finding_columns", "finding_probabilities", "grad_cam", "grad_cams",
    "heat_fraction_inside", "internal_splits", "load_image", "lung_heat_fraction", "lung_mask", "marker_mask",
    "mask_markers", "overlay_heatmap", "patient_groups", "prepare_images", "read_class_folders", "read_image_folder",
    "read_labelled", "read_npz", "render_cohort_images", "render_study", "sample_real_images", "save_grad_cam",
    "score_cxr_table", "shift_report", "stored_thresholds", "target_layer", "threshold_for_sensitivity",
    "training_sets",
]
