"""Gradient-boosting comparator (LightGBM / XGBoost) on the screens table, with grid search and TreeSHAP."""

from .explain import contributions
from .features import ScreenFeatures
from .model import GBDTClassifier, cuda_available
from .search import DEFAULT_GRID, FULL_GRID, best_params, cross_validate, grid_search, write_grid_results

__all__ = ["GBDTClassifier", "ScreenFeatures", "contributions", "cuda_available", "grid_search",
           "best_params", "write_grid_results", "cross_validate", "DEFAULT_GRID", "FULL_GRID"]
