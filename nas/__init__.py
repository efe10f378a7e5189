"""Orchestration: experiments, Optuna/Ray backends, results, Pareto, export, CLI."""

__version__ = "0.1.0"
