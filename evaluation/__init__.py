"""Evaluation: the screening protocol, metrics with cluster-bootstrap CIs, NEWS2, utility, plots, report.

Reads only the contract tables (``predictions``, ``screens``, ``stays``); never imports a model.
"""

from evaluation.bootstrap import BootstrapResult, bootstrap_metrics, cluster_counts, percentile_ci
from evaluation.metrics import (
    SortedScores,
    average_precision,
    brier_score,
    expected_calibration_error,
    fpr_at_tpr,
    reliability_curve,
    roc_auc,
    screen_labels,
    threshold_metrics,
)
from evaluation.news2 import NEWS2_COMPONENTS, news2_components, news2_from_events, news2_predictions, news2_score
from evaluation.operating_points import (
    OperatingPointResult,
    apply_thresholds,
    choose_thresholds,
    threshold_for_sensitivity,
)
from evaluation.protocol import ProtocolResult, ScreenSet, prepare_screens, run_protocol, silence, validate_predictions
from evaluation.utility import physionet_utility, row_utilities, utility_from_tables

__all__ = [
    # protocol, metrics, bootstrap, operating points, NEWS2, utility
    "BootstrapResult", "bootstrap_metrics", "cluster_counts", "percentile_ci",
    "SortedScores", "average_precision", "brier_score", "expected_calibration_error", "fpr_at_tpr",
    "reliability_curve", "roc_auc", "screen_labels", "threshold_metrics",
    "NEWS2_COMPONENTS", "news2_components", "news2_from_events", "news2_predictions", "news2_score",
    "OperatingPointResult", "apply_thresholds", "choose_thresholds", "threshold_for_sensitivity",
    "ProtocolResult", "ScreenSet", "prepare_screens", "run_protocol", "silence", "validate_predictions",
    "physionet_utility", "row_utilities", "utility_from_tables",
    # timeliness, subgroups, calibration, displays, report: re-exported below
]

# timeliness, subgroups and sensitivity analyses, calibration, displays, report
from evaluation.calibration import (PlattScaler, TemperatureScaler, calibrate_predictions, calibration_table,
                                    join_labels)
from evaluation.displays import (BayesFactorDisplay, DecisionCurveDisplay, PrDisplay, ReliabilityDisplay,
                                 RiskTraceDisplay, RocDisplay, TrueAlarmTimingDisplay)
from evaluation.report import load_run, write_report
from evaluation.subgroups import (Subgroup, alternative_outcome, define_subgroups, protocol_sensitivity,
                                  run_by_subgroup, sensitivity_grid)
from evaluation.timeliness import alarm_lead_times, compare_timeliness, summarize_timeliness, timeliness_table

__all__ += [
    "alarm_lead_times", "summarize_timeliness", "compare_timeliness", "timeliness_table",
    "Subgroup", "define_subgroups", "run_by_subgroup", "sensitivity_grid", "protocol_sensitivity",
    "alternative_outcome",
    "PlattScaler", "TemperatureScaler", "calibrate_predictions", "calibration_table", "join_labels",
    "RocDisplay", "PrDisplay", "ReliabilityDisplay", "DecisionCurveDisplay", "TrueAlarmTimingDisplay",
    "RiskTraceDisplay", "BayesFactorDisplay",
    "write_report", "load_run",
]
