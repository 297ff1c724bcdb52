"""Jobs: the units an experiment is split into, their results on disk, and the worker loop.

A job (train one model, stitch one pair at one layer with one method, one sanity repeat at
one layer with one transform, the similarity of one pair) is keyed by a hash of everything
that determines its result: its parameters, the configuration fields it reads and the
content hash of the data. It writes its result atomically to
``OUT/jobs/<label>-<key>.json``; while it runs, ``...claim`` (a claim file, :mod:`._locks`)
says who runs it; a job that raised leaves ``...error`` with the one-line error. A killed
worker leaves only a stale claim (and perhaps a temporary file, which the next worker removes),
so rerunning loses at most the job it was running. Keys carry the version of each job kind's
code (see :mod:`._registry`).

``plan.json`` in the output folder lists the jobs of the last run; ``groupcalc experiment
status OUT`` reads it (:func:`status`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._data import CacheWarning
from ._locks import STALE_AFTER_S, atomic_write_text, claim_state, sweep_temporaries, try_claim

__all__ = ["Job", "make_job", "Plan", "JobStore", "work", "status", "STATES"]

STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class Job:
    """One unit of work: ``kind`` (the job runner), a readable ``label``, JSON ``params``
    and the ``key`` (hash of everything that determines the result)."""

    kind: str
    label: str
    params: dict = field(hash=False)
    key: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "label": self.label, "params": self.params, "key": self.key}

    @classmethod
    def from_json(cls, d: dict) -> "Job":
        return cls(d["kind"], d["label"], dict(d["params"]), d["key"])


def make_job(kind: str, label: str, params: dict, basis: dict) -> Job:
    """A job whose key hashes ``kind``, ``params``, ``basis`` (the configuration fields and
    data hash its result depends on) and the versions of ``kind``'s code that are not 1
    (:func:`._registry.job_versions`; version 1 keeps the keys of earlier runs)."""
    from ._registry import job_versions

    doc = {"kind": kind, "params": params, "basis": basis}
    versions = job_versions(kind)
    if versions:
        doc["versions"] = versions
    text = json.dumps(doc, sort_keys=True, default=str)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
    return Job(kind, safe, params, hashlib.sha256(text.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class Plan:
    """The jobs of one experiment run (train jobs first) and what the merge step needs."""

    experiment: str
    jobs: tuple
    info: dict = field(hash=False)

    def to_json(self) -> dict:
        return {"experiment": self.experiment, "jobs": [j.to_json() for j in self.jobs], "info": self.info}

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(d["experiment"], tuple(Job.from_json(j) for j in d["jobs"]), d["info"])


class JobStore:
    """Job results, claims and errors under ``OUT/jobs``."""

    def __init__(self, out_dir: str | os.PathLike, stale_after: float = STALE_AFTER_S):
        self.root = Path(out_dir) / "jobs"
        self.stale_after = stale_after

    def _path(self, job: Job, suffix: str) -> Path:
        return self.root / f"{job.label}-{job.key}.{suffix}"

    def result(self, job: Job) -> dict | None:
        """The job's result, or ``None`` if it has none (a damaged file is removed, with a warning)."""
        path = self._path(job, "json")
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            d = None
        if not isinstance(d, dict) or d.get("key") != job.key or "result" not in d:
            warnings.warn(f"Job result {str(path)!r} is unreadable or belongs to another job; rerunning it.",
                          CacheWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return d["result"]

    def write_result(self, job: Job, result: dict) -> None:
        from ._config import jsonable

        doc = {"key": job.key, "kind": job.kind, "label": job.label, "params": job.params,
               "host": socket.gethostname(), "pid": os.getpid(), "finished": time.time(), "result": result}
        atomic_write_text(self._path(job, "json"), json.dumps(jsonable(doc), indent=1))
        self._path(job, "error").unlink(missing_ok=True)

    def write_error(self, job: Job, message: str) -> None:
        atomic_write_text(self._path(job, "error"), message)

    def error(self, job: Job) -> str | None:
        try:
            return self._path(job, "error").read_text()
        except FileNotFoundError:
            return None

    def claim(self, job: Job):
        return try_claim(self._path(job, "claim"), stale_after=self.stale_after, what=f"job {job.label}")

    def state(self, job: Job) -> str:
        if self._path(job, "json").exists():
            return "done"
        claim, _ = claim_state(self._path(job, "claim"), stale_after=self.stale_after)
        if claim == "held":
            return "running"
        if self._path(job, "error").exists():
            return "failed"
        return "pending"

    def log(self, event: str, job: Job) -> None:
        """One line per job start/finish in ``OUT/jobs/jobs.log`` (O_APPEND: lines of several
        workers never interleave)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "jobs.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} {os.getpid()} "
                     f"{event} {job.label}-{job.key}\n")


def work(plan: Plan, store: JobStore, execute, *, stop_on_error: bool = False) -> dict:
    """Run every job of ``plan`` that has no result and that no live worker has claimed.

    ``execute(job) -> dict`` computes one result. A job that raises is recorded as failed
    (``...error``) and the worker goes on with the next one (``stop_on_error``: re-raise it).
    ``KeyboardInterrupt`` releases the claim of the running job and propagates. Starting, it
    removes the orphaned temporary files of ``OUT`` and ``OUT/jobs`` (killed workers' partial
    writes; :func:`._locks.sweep_temporaries`). Returns counts ``{"ran", "failed", "skipped"}``.
    """
    counts = {"ran": 0, "failed": 0, "skipped": 0}
    # what killed workers left; OUT may be a folder of the user's: only names of our own writer there
    sweep_temporaries(store.root.parent, stale_after=store.stale_after, only_tagged=True)
    sweep_temporaries(store.root, stale_after=store.stale_after)
    for job in plan.jobs:
        if store.result(job) is not None:
            continue
        claim = store.claim(job)
        if claim is None:
            counts["skipped"] += 1
            continue
        with claim:
            if store.result(job) is not None:  # finished by another worker in the meantime
                continue
            store.log("start", job)
            try:
                result = execute(job)
            except Exception as e:
                store.write_error(job, " ".join(f"{type(e).__name__}: {e}".split()))  # one line
                store.log("failed", job)
                counts["failed"] += 1
                if stop_on_error:
                    raise
                continue
            store.write_result(job, result)
            store.log("done", job)
            counts["ran"] += 1
    return counts


def status(out_dir: str | os.PathLike) -> dict:
    """Counts of the jobs of ``OUT/plan.json`` by state (:data:`STATES`), per job kind too."""
    out = Path(out_dir)
    try:
        plan = Plan.from_json(json.loads((out / "plan.json").read_text()))
    except FileNotFoundError:
        raise ValueError(f"Argument 'DIR' ({str(out)!r}) holds no plan.json: "
                         f"not an experiment output folder.") from None
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"File {str(out / 'plan.json')!r} is not a valid experiment plan.") from None
    store = JobStore(out)
    totals = {s: 0 for s in STATES}
    by_kind: dict = {}
    failed = []
    for job in plan.jobs:
        s = store.state(job)
        totals[s] += 1
        by_kind.setdefault(job.kind, {k: 0 for k in STATES})[s] += 1
        if s == "failed":
            failed.append({"job": job.label, "error": (store.error(job) or "").strip()})
    return {"experiment": plan.experiment, "jobs": len(plan.jobs), **totals, "by_kind": by_kind,
            "failed_jobs": failed, "merged": (out / "results.json").exists()}
