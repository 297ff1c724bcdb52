"""Run one experiment and write its results (JSON, CSV, figures)."""

from __future__ import annotations

from pathlib import Path

from ._config import ExperimentConfig, write_results
from ._plots import plot_results

__all__ = ["run_experiment"]


def run_experiment(cfg: ExperimentConfig, *, write: bool = True) -> dict:
    """Run ``cfg.experiment``; with ``write``, store results.json, results.csv and PNG
    figures in ``cfg.out`` (the figure paths are listed under ``"figures"``)."""
    if cfg.experiment == "sanity":
        from ._sanity import run_sanity as run
    elif cfg.experiment == "stitch":
        from ._stitch import run_stitch as run
    else:
        from ._sweep import run_similarity as run
    results = run(cfg)
    if write:
        out = Path(cfg.out)
        figures = plot_results(results, out)
        results["figures"] = [str(p) for p in figures]
        write_results(out, results)
    return results
