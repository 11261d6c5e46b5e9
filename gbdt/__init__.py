"""Gradient-boosting comparator (LightGBM / XGBoost) on the screens table, with grid search and TreeSHAP."""

from .explain import contributions, explanations_table
from .features import ScreenFeatures
from .io import ModelFormatError, load_model, save_model
from .model import GBDTClassifier, cuda_available, predictions_table
from .search import DEFAULT_GRID, FULL_GRID, best_params, cross_validate, grid_search, write_grid_results

__all__ = ["GBDTClassifier", "ScreenFeatures", "contributions", "explanations_table", "save_model",
           "load_model", "ModelFormatError", "predictions_table", "cuda_available", "grid_search",
           "best_params", "write_grid_results", "cross_validate", "DEFAULT_GRID", "FULL_GRID"]
