"""Run one experiment: check the output and cache, plan its jobs, run them (in this process or
as submitit jobs on the local machine or a SLURM cluster), and merge the finished jobs into
results.json, results.csv and the figures.

The executors run the same worker loop (:func:`._jobs.work`): ``inline`` in this process;
``local`` and ``slurm`` start ``workers`` submitit jobs that each take the next unclaimed job
until none is left. Model training is a job of its own and the zoo's claim files make one
worker train each model while others wait for it, so a job that needs a model being trained
elsewhere waits and then loads it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import _registry
from ._config import ExperimentConfig, write_results
from ._jobs import JobStore, Plan, make_job, work
from ._locks import atomic_write_text

__all__ = ["run_experiment", "plan_experiment", "merge_results", "ExecutorConfig", "JobsUnfinished", "EXECUTORS"]

EXECUTORS = ("inline", "local", "slurm")


class JobsUnfinished(RuntimeError):
    """Some jobs failed or did not finish; their finished siblings are kept (rerun to resume)."""


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the jobs run: ``inline`` (this process), ``local`` (submitit's LocalExecutor,
    ``workers`` processes) or ``slurm`` (``workers`` SLURM jobs; ``partition``,
    ``gpus_per_node`` and ``time_min`` are passed to sbatch)."""

    executor: str = "inline"
    workers: int = 1
    partition: str | None = None
    gpus_per_node: int | None = None
    time_min: int = 24 * 60

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"Argument 'executor' must be one of {EXECUTORS}, not {self.executor!r}.")
        if int(self.workers) < 1:
            raise ValueError(f"Argument 'workers' must be a positive integer, not {self.workers!r}.")
        if int(self.time_min) < 1:
            raise ValueError(f"Argument 'slurm_time' must be a positive number of minutes, not {self.time_min!r}.")
        if self.executor != "slurm" and (self.partition is not None or self.gpus_per_node is not None):
            raise ValueError("Arguments '--slurm-partition' and '--slurm-gpus-per-node' need --executor slurm.")
        if self.executor == "inline" and self.workers != 1:
            raise ValueError("Argument '--workers' needs --executor local or slurm (inline runs one worker).")


def preflight(cfg: ExperimentConfig, ex: ExecutorConfig) -> None:
    """Every check that needs no compute: output and cache writable, device present, sbatch
    on PATH for SLURM. Raises ``ValueError`` (exit code 2 in the CLI)."""
    from ._setup import cache_dir, check_writable
    from ._train import resolve_device

    check_writable(cfg.out, "--out")
    check_writable(cache_dir(cfg), "--cache-dir")
    resolve_device(cfg.device)
    if ex.executor == "slurm":
        missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
        if missing:
            raise ValueError(f"Argument '--executor' is 'slurm' but {' and '.join(repr(c) for c in missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not on PATH (not a SLURM login node?).")


def plan_experiment(cfg: ExperimentConfig) -> Plan:
    """The jobs of ``cfg`` (train jobs first) and the information the merge needs."""
    from ._setup import context, model_spec

    kind = _registry.get(cfg.experiment)
    ctx = context(cfg)
    specs = [model_spec(ctx, s, kind.batch_norm) for s in range(cfg.seed, cfg.seed + kind.n_models(cfg))]
    train = [make_job("train", f"train-s{sp.seed}", {"model": sp.key, "seed": sp.seed, "batch_norm": sp.batch_norm},
                      {"data": ctx.dataset_tag}) for sp in specs]
    jobs, info = kind.plan(ctx, specs)
    info = dict(info, data=ctx.dataset_tag, num_classes=ctx.data.num_classes)
    return Plan(cfg.experiment, tuple(train) + tuple(jobs), info)


def _execute(cfg: ExperimentConfig):
    """The job runner of one process: ``execute(job) -> result``."""
    from ._setup import context, zoo_model

    kind = _registry.get(cfg.experiment)

    def execute(job):
        ctx = context(cfg)
        if job.kind == "train":
            _, rec = zoo_model(ctx, job.params["seed"], job.params["batch_norm"])
            if rec["key"] != job.params["model"]:  # the data or configuration changed under the plan
                raise RuntimeError(f"zoo model {rec['key']!r} does not match the planned {job.params['model']!r}")
            return rec
        if job.kind != kind.job_kind:
            raise ValueError(f"job kind {job.kind!r} does not belong to experiment {cfg.experiment!r}")
        return kind.run(ctx, job)

    return execute


def worker_main(cfg: ExperimentConfig, threads: int | None = None, plan: Plan | None = None) -> dict:
    """One worker (the function submitit runs): take jobs of ``plan`` (the driver's; default
    ``cfg.out/plan.json``, which another command on the same folder may have rewritten since)
    until none is left."""
    import torch

    torch.set_num_threads(int(threads or cfg.threads or 1))
    if plan is None:
        plan = Plan.from_json(json.loads((Path(cfg.out) / "plan.json").read_text()))
    return work(plan, JobStore(cfg.out), _execute(cfg))


def _submitit_executor(cfg: ExperimentConfig, ex: ExecutorConfig):
    import submitit

    folder = Path(cfg.out) / "submitit" / "%j"
    if ex.executor == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=ex.time_min)
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        params = {"timeout_min": ex.time_min, "name": f"groupcalc-{cfg.experiment}", "cpus_per_task": cfg.threads or 1}
        if ex.partition:
            params["slurm_partition"] = ex.partition
        if ex.gpus_per_node:
            params["gpus_per_node"] = ex.gpus_per_node
        executor.update_parameters(**params)
    return executor


def _run_jobs(cfg: ExperimentConfig, plan: Plan, ex: ExecutorConfig) -> list[str]:
    """Run the plan's jobs; returns the workers' failure messages (empty when all returned)."""
    if ex.executor == "inline":
        work(plan, JobStore(cfg.out), _execute(cfg))
        return []
    threads = cfg.threads or 1  # workers share the machine (local) or get one CPU each (slurm cpus_per_task)
    # absolute paths: a SLURM job may start in another folder
    cfg = replace(cfg, out=str(Path(cfg.out).resolve()),
                  cache_dir=None if cfg.cache_dir is None else str(Path(cfg.cache_dir).expanduser().resolve()),
                  data_dir=None if cfg.data_dir is None else str(Path(cfg.data_dir).expanduser().resolve()))
    executor = _submitit_executor(cfg, ex)
    if ex.executor == "slurm":
        with executor.batch():  # one sbatch call: a job array of the workers
            jobs = [executor.submit(worker_main, cfg, threads, plan) for _ in range(ex.workers)]
    else:
        jobs = [executor.submit(worker_main, cfg, threads, plan) for _ in range(ex.workers)]
    problems = []
    for j in jobs:
        try:
            j.result()
        except Exception as e:  # noqa: BLE001 - a killed or failed worker: its job is rerun next time
            first = str(e).strip().splitlines()
            problems.append(f"worker {j.job_id}: {type(e).__name__}: {first[0] if first else ''}")
    return problems


def warnings_for(results: dict, num_classes: int, near_chance: float) -> list[str]:
    """What a reader must know before trusting ``results``: models near chance, or every
    penalty equal (models that predict one class give the same penalty everywhere)."""
    out = []
    chance = 100.0 / num_classes
    low = [r for r in results.get("models", []) if r.get("test_acc") is not None
           and r["test_acc"] < near_chance * chance]
    if low:
        accs = ", ".join(f"seed {r['seed']}: {r['test_acc']:.1f}" for r in low)
        out.append(f"{len(low)} of {len(results['models'])} models are near chance (test accuracy below "
                   f"{near_chance:g} x chance = {near_chance * chance:.0f} accuracy points; {accs}): "
                   f"their penalties say little about representations.")
    vals = [r["penalty"] for r in results.get("rows", []) if "penalty" in r and r["penalty"] is not None]
    if len(vals) > 1 and float(np.ptp(vals)) == 0.0:
        out.append(f"every penalty is equal ({vals[0]:.4g} accuracy points in all {len(vals)} rows): the models "
                   f"probably predict one class whatever the input.")
    return out


def merge_results(cfg: ExperimentConfig, plan: Plan, *, write: bool = True) -> dict:
    """Assemble the results dictionary from the plan's finished jobs (and, with ``write``,
    results.json, results.csv and the figures). Raises :class:`JobsUnfinished` if any job has
    no result."""
    from ._plots import plot_results

    kind = _registry.get(cfg.experiment)
    store = JobStore(cfg.out)
    results, missing = {}, []
    for job in plan.jobs:
        r = store.result(job)
        if r is None:
            err = store.error(job)
            missing.append(f"{job.label}" + (f" ({err.strip()})" if err else ""))
        results[job.key] = r
    if missing:
        raise JobsUnfinished(f"{len(missing)} of {len(plan.jobs)} jobs did not finish (first: {missing[0]}); "
                             f"the other results are kept in {str(Path(cfg.out) / 'jobs')!r}; rerun the same "
                             f"command to resume.")
    records = [results[j.key] for j in plan.jobs if j.kind == "train"]
    work_results = [results[j.key] for j in plan.jobs if j.kind != "train"]
    out = kind.merge(cfg, plan.info, records, work_results)
    out["warnings"] = warnings_for(out, plan.info.get("num_classes", 10), cfg.near_chance)
    out["jobs"] = len(plan.jobs)
    if write:
        out["figures"] = [str(p) for p in plot_results(out, Path(cfg.out))]
        write_results(cfg.out, out)
    return out


def run_experiment(cfg: ExperimentConfig, *, write: bool = True, executor: ExecutorConfig | None = None) -> dict:
    """Run ``cfg.experiment``: its jobs (finished ones from an earlier run are kept) and the
    merge. With ``write``, store results.json, results.csv and PNG figures in ``cfg.out``
    (the figure paths are listed under ``"figures"``). Job results always go to
    ``cfg.out/jobs``, so an interrupted run resumes."""
    ex = executor or ExecutorConfig()
    t0 = time.time()
    preflight(cfg, ex)
    plan = plan_experiment(cfg)
    atomic_write_text(Path(cfg.out) / "plan.json",
                      json.dumps({**plan.to_json(), "config": cfg.to_json(), "executor": ex.__dict__}, indent=1))
    problems = _run_jobs(cfg, plan, ex)
    try:
        results = merge_results(cfg, plan, write=False)
    except JobsUnfinished as e:
        if problems:
            raise JobsUnfinished(f"{e} Workers: {'; '.join(problems)}") from None
        raise
    results["elapsed_s"] = time.time() - t0
    results["executor"] = {"executor": ex.executor, "workers": ex.workers}
    if write:
        from ._plots import plot_results

        results["figures"] = [str(p) for p in plot_results(results, Path(cfg.out))]
        write_results(cfg.out, results)
    return results
