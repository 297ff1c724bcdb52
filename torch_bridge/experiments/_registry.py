"""The experiments, one entry each: name -> the :class:`ExperimentKind` that plans its jobs,
runs one job and merges finished jobs into results.

Adding an experiment is one module defining an :class:`ExperimentKind` and one line in
:data:`_ENTRIES`; the CLI's choices, the job runner, ``status`` and the merge read this table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ExperimentKind", "get", "names"]


@dataclass(frozen=True)
class ExperimentKind:
    """How one experiment is split into jobs and put back together.

    ``batch_norm``: whether its zoo models have batch norm. ``n_models(cfg)``: how many zoo
    models (seeds ``cfg.seed ...``) it needs. ``plan(ctx, specs) -> (jobs, info)``: its jobs
    (the train jobs of ``specs`` are added by the caller) and the JSON ``info`` the merge needs.
    ``job_kind``: the kind of its jobs, run by ``run(ctx, job) -> dict``. ``merge(cfg, info,
    records, results) -> dict``: the results dictionary from the model records and the job
    results (in plan order). ``validate(cfg)``: raises ``ValueError`` for a configuration
    that cannot be run (e.g. more pairs than exist). ``rows``: (row keys, value key, unit).
    ``presets``: preset name -> configuration values of this experiment's own (applied over
    the common preset, under the user's overrides).
    """

    name: str
    batch_norm: bool
    n_models: Callable
    plan: Callable
    job_kind: str
    run: Callable
    merge: Callable
    validate: Callable = lambda cfg: None
    summary_key: str = ""
    value: str = "penalty"
    unit: str = "accuracy points"
    presets: dict = field(default_factory=dict, hash=False, compare=False)


#: experiment name -> (module, attribute holding its ExperimentKind)
_ENTRIES = {
    "sanity": ("._sanity", "SANITY"),
    "stitch": ("._stitch", "STITCH"),
    "similarity": ("._sweep", "SIMILARITY"),
    "leaky_sweep": ("._leaky", "LEAKY_SWEEP"),
    "l1_sparsity": ("._appendix_d", "L1_SPARSITY"),
    "alpha_cv": ("._appendix_d", "ALPHA_CV"),
    "transformer_stitch": ("._transformer", "TRANSFORMER_STITCH"),
}


def names() -> tuple:
    return tuple(_ENTRIES)


def get(name: str) -> ExperimentKind:
    if name not in _ENTRIES:
        raise ValueError(f"Argument 'experiment' must be one of {names()}, not {name!r}.")
    module, attr = _ENTRIES[name]
    return getattr(importlib.import_module(module, __package__), attr)
