"""The experiments, one entry each: name -> the :class:`ExperimentKind` that plans its jobs,
runs one job and merges finished jobs into results.

Adding an experiment is one module defining an :class:`ExperimentKind` and one line in
:data:`_ENTRIES`; the CLI's choices, the job runner, ``status`` and the merge read this table.

Versions: a job's key hashes everything that determines its result, and the *version* of its
job kind (:func:`job_version`) stands for the code that computes it. Bump
``ExperimentKind.version`` (an int, default 1) when a kind's computation changes so that old
results must not be reused; version 1 is left out of the keys, so the finished jobs of every
kind that never changed keep their keys. A job kind is named after the experiment that defines
it (``transformer_stitch`` runs ``stitch`` jobs: they share one version). An experiment whose
own jobs call another kind's code lists it in ``uses`` (``leaky_sweep``, ``l1_sparsity`` and
``alpha_cv`` train stitching layers with ``stitch``'s code), and its keys hash that kind's
version too: bumping ``stitch`` recomputes them. Model training is versioned by the zoo key,
not here. No source hash: every edit would recompute everything.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ExperimentKind", "get", "names", "job_versions"]


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
    the common preset, under the user's overrides). ``version``: the version of the code that
    computes its jobs; ``uses``: the experiments whose job code its jobs call (see the module
    docstring).
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
    version: int = 1
    uses: tuple = ()

    def __post_init__(self):
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"Argument 'version' of experiment {self.name!r} must be a positive integer, "
                             f"not {self.version!r}.")


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


def job_versions(job_kind: str) -> dict:
    """``{experiment: version}`` of the code behind jobs of ``job_kind``: the experiment the
    kind is named after and those it ``uses``, leaving out version 1 (``"train"``, versioned
    by the zoo key, and kinds of no experiment: ``{}``)."""
    out, todo, seen = {}, [job_kind], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in _ENTRIES:
            continue
        seen.add(name)
        kind = get(name)
        if kind.version != 1:
            out[name] = kind.version
        todo.extend(kind.uses)
    return dict(sorted(out.items()))
