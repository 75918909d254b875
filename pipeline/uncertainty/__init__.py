"""Temporal-dropout uncertainty for regression on EO time series (Miranda, Mena & Dengel 2025).

``fit(X, y, method=...) -> UncertaintyModel``; ``model.predict(X) -> Prediction`` with mean,
epistemic/aleatoric/total σ and a calibrated interval. Methods: MC-ConcTD (learned temporal
dropout rate), MC-TD (fixed rate), MC-Dropout, deterministic, deep ensemble.
"""
from pipeline.uncertainty.api import FitOptions, Prediction, UncertaintyModel, fit
from pipeline.uncertainty.calibration import Calibration, calibrate
from pipeline.uncertainty.metrics import RegressionReport, evaluate
from pipeline.uncertainty.network import METHODS, NetworkConfig, SequenceRegressor
from pipeline.uncertainty.train import TrainConfig

__all__ = ["METHODS", "Calibration", "FitOptions", "NetworkConfig", "Prediction", "RegressionReport",
           "SequenceRegressor", "TrainConfig", "UncertaintyModel", "calibrate", "evaluate", "fit"]
