"""Display objects in the scikit-learn style: ``from_predictions``/``from_frames`` compute, ``plot`` draws.

Figures are made with :class:`matplotlib.figure.Figure` (Agg canvas), never through pyplot, so
nothing opens a window and no global figure state is touched.
"""

from evaluation.displays.alarms import RiskTraceDisplay, TrueAlarmTimingDisplay
from evaluation.displays.burden import AlarmBurdenDisplay
from evaluation.displays.curves import DecisionCurveDisplay, PrDisplay, ReliabilityDisplay, RocDisplay
from evaluation.displays.explanations import BayesFactorDisplay

__all__ = ["RocDisplay", "PrDisplay", "ReliabilityDisplay", "DecisionCurveDisplay", "TrueAlarmTimingDisplay",
           "RiskTraceDisplay", "BayesFactorDisplay", "AlarmBurdenDisplay"]
