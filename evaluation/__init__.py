"""Evaluation the SepsisFinder way: screening protocol, metrics with cluster-bootstrap CIs, NEWS2, utility, report.

Reads only the contract tables (``predictions``, ``screens``, ``stays``, ``alarms``,
``explanations``; see ``ehr/schema.py``) and never imports a model. The names below are what a
statistician reaches for; everything else stays importable from its module:

=============================  ==============================================================
``evaluation.protocol``        alarms, silencing, alarm windows (``run_protocol``)
``evaluation.metrics``         AUROC, AUPRC, FPR at a TPR, threshold metrics
``evaluation.calibration``     Brier score, reliability curve, ECE, temperature/Platt scaling
``evaluation.recalibration``   scalers fitted on dev and reported on test (``calibration_table``)
``evaluation.bootstrap``       patient-level bootstrap CIs (and ROC/PR bands) on shared resamples
``evaluation.paired``          every pair of models: paired differences, bootstrap p-values, DeLong
``evaluation.delong``          DeLong's test of two AUROCs, clustered by stay (Obuchowski)
``evaluation.operating_points``  thresholds matched to NEWS2 >= 5 / >= 7 / 85 % sensitivity
``evaluation.burden``          alarm burden (alarms per admission, false per true) against sensitivity
``evaluation.decision``        decision curves on Platt-calibrated probabilities
``evaluation.news2``           NEWS2 from events, as a ``predictions`` table
``evaluation.utility``         PhysioNet 2019 normalised utility
``evaluation.timeliness``      hours before onset / antibiotics, Mann-Whitney U
``evaluation.subgroups``       subgroup definitions and per-subgroup runs of any metric
``evaluation.subgroup_metrics``  the subgroup table with CIs on the evaluated split
``evaluation.sensitivity``     window / silencing / outcome sensitivity analyses
``evaluation.stratified``      AUROC within hours-since-admission bands; context as an alarm's top factor
``evaluation.explained_alarms``  true and false alarms, every evidence item in words
``evaluation.displays``        ROC, PR, reliability, decision curve, alarm burden, timing, traces, Bayes factors
``evaluation.summary``         ``evaluate_run``: every table of a run, computed once, per evaluated split
``evaluation.counts``          the main tables from per-part counts that add up (a partitioned run)
``evaluation.report``          ``write_report``: the HTML report renders what ``evaluate_run`` wrote
``evaluation.render``          Jinja2 templates (autoescaped) and figure encoding, shared with the service
=============================  ==============================================================

Examples
--------
>>> import evaluation
>>> evaluation.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
"""

from evaluation.bootstrap import BootstrapResult, bootstrap_metrics
from evaluation.burden import alarm_burden
from evaluation.delong import delong_test
from evaluation.calibration import (PlattScaler, TemperatureScaler, brier_score, expected_calibration_error,
                                    reliability_curve)
from evaluation.displays import (AlarmBurdenDisplay, BayesFactorDisplay, DecisionCurveDisplay, PrDisplay,
                                 ReliabilityDisplay, RiskTraceDisplay, RocDisplay, TrueAlarmTimingDisplay)
from evaluation.metrics import average_precision, fpr_at_tpr, roc_auc, threshold_metrics
from evaluation.news2 import news2_predictions, news2_score
from evaluation.operating_points import apply_thresholds, choose_thresholds
from evaluation.paired import paired_comparisons
from evaluation.protocol import ProtocolResult, run_protocol
from evaluation.recalibration import calibration_table
from evaluation.report import write_report
from evaluation.summary import RunEvaluation, evaluate_run
from evaluation.utility import physionet_utility, utility_from_tables

__all__ = [
    # protocol and operating points
    "run_protocol", "ProtocolResult", "choose_thresholds", "apply_thresholds",
    # discrimination and calibration
    "roc_auc", "average_precision", "fpr_at_tpr", "threshold_metrics",
    "brier_score", "expected_calibration_error", "reliability_curve", "PlattScaler", "TemperatureScaler",
    "calibration_table",
    # uncertainty and comparisons
    "bootstrap_metrics", "BootstrapResult", "paired_comparisons", "delong_test", "alarm_burden",
    # comparators and utility
    "news2_score", "news2_predictions", "physionet_utility", "utility_from_tables",
    # displays
    "RocDisplay", "PrDisplay", "ReliabilityDisplay", "DecisionCurveDisplay", "TrueAlarmTimingDisplay",
    "RiskTraceDisplay", "BayesFactorDisplay", "AlarmBurdenDisplay",
    # the whole run
    "evaluate_run", "RunEvaluation", "write_report",
]
