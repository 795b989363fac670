"""Experiment tracking of training and tuning runs: TensorBoard event files with a version's artifacts
(``tensorboard.py``) and MLflow runs (``mlflow_log.py``), called through ``hooks.py``."""

from deeptrain.tracking.hooks import track_version, tracking_tune_run

__all__ = ["track_version", "tracking_tune_run"]
