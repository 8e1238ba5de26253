"""Calibrated (data-aware) decomposition: refit factor chains so each layer reproduces the original's outputs.

:func:`calibrate_plan` takes a network compressed by :func:`automtd.plan.apply_plan` and a few hundred
training images, and for each factorized layer refits the chain's last linear factor in closed form
(ridge least squares on the original network's outputs at that layer), then in alternating sweeps the
factor before it where that one feeds a final 1x1 conv/linear, optionally distils the whole chain locally,
and re-estimates BatchNorm statistics.  :func:`refit_linear` is the pure least-squares step.
"""

from automtd.calibration._calibrate import (
    CALIBRATION_MODES,
    CalibrationReport,
    ChainStore,
    LayerCalibration,
    calibrate_plan,
)
from automtd.calibration._lstsq import LeastSquares, refit_linear

__all__ = [
    "CALIBRATION_MODES",
    "CalibrationReport",
    "ChainStore",
    "LayerCalibration",
    "LeastSquares",
    "calibrate_plan",
    "refit_linear",
]
