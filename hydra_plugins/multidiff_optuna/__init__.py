"""Hydra's ``hydra/sweeper=optuna``: an Optuna study over a run's hyperparameters, on Optuna's public API."""
