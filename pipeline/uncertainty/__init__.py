"""Temporal-dropout uncertainty for regression on EO time series (Miranda, Mena & Dengel 2025).

``fit(X, y, method=...) -> UncertaintyModel``; ``model.predict(X) -> Prediction`` with mean,
epistemic/aleatoric/total σ and a calibrated interval. Methods: MC-ConcTD (learned temporal
dropout rate), MC-TD (fixed rate), MC-Dropout, deterministic, deep ensemble. Trained models are
artefacts (``weights.safetensors`` + ``card.json``): ``load_artefact``, ``check_inputs``, ``predict_tile``.
"""

from pipeline._lazy import lazy_exports

_EXPORTS = {
    "FitOptions": "pipeline.uncertainty.api",
    "Prediction": "pipeline.uncertainty.api",
    "UncertaintyModel": "pipeline.uncertainty.api",
    "fit": "pipeline.uncertainty.api",
    "Calibration": "pipeline.uncertainty.calibration",
    "calibrate": "pipeline.uncertainty.calibration",
    "RegressionReport": "pipeline.uncertainty.metrics",
    "evaluate": "pipeline.uncertainty.metrics",
    "METHODS": "pipeline.uncertainty.network",
    "NetworkConfig": "pipeline.uncertainty.network",
    "SequenceRegressor": "pipeline.uncertainty.network",
    "TrainConfig": "pipeline.uncertainty.train",
    "ArtefactError": "pipeline.uncertainty.artefact_io",
    "UncertaintyArtefact": "pipeline.uncertainty.artefact",
    "artefact_summary": "pipeline.uncertainty.artefact",
    "check_inputs": "pipeline.uncertainty.artefact",
    "load_artefact": "pipeline.uncertainty.artefact",
    "predict_tile": "pipeline.uncertainty.artefact",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # torch loads with the first name used
