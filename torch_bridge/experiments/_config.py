"""Experiment configuration, presets, and writing results (JSON, CSV)."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._train import TrainConfig

__all__ = ["ExperimentConfig", "PRESETS", "make_config", "write_results", "mean_ci", "summarize"]

EXPERIMENTS = ("sanity", "stitch", "similarity")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one experiment run depends on (stored in ``results.json``)."""

    experiment: str
    preset: str = "smoke"
    dataset: str = "digits"
    data_dir: str | None = None
    cache_dir: str | None = None
    arch: str = "myrtle"
    activation: str = "relu"
    width: int = 4
    device: str = "auto"
    out: str = "experiment-out"
    seed: int = 0
    # subsampling of the dataset (None: all); applied before anything else
    n_train: int | None = None
    n_test: int | None = None
    # the zoo
    models: int = 2
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, batch_size=32))
    # sanity
    repeats: int = 1
    transforms: tuple = ("group", "orthogonal", "identity")
    finetune_epochs: int = 1
    finetune_n_train: int | None = None
    # stitching
    pairs: int = 1
    methods: tuple = ("full", "rank1", "rank2", "rank4", "group")
    stitch_epochs: int = 1
    stitch_n_train: int | None = None
    stitch_batch_size: int = 32
    stitch_lr: float = 1e-3
    stitch_momentum: float = 0.9
    alpha: float = 0.1
    sinkhorn_iters: int = 16
    head_start: float = 0.5
    bn_images: int | None = None
    eval_relaxed: bool = True  # also test the group stitch before Hungarian rounding
    # similarity
    similarity_images: int = 500
    measures: tuple = ("g_procrustes", "orthogonal_procrustes", "g_cka", "linear_cka")
    progress: bool = True
    threads: int | None = None  # torch CPU threads (None: torch's default)

    def __post_init__(self):
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"Argument 'experiment' must be one of {EXPERIMENTS}, not {self.experiment!r}.")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"Argument 'threads' must be a positive integer, not {self.threads!r}.")
        for name in ("width", "models", "repeats", "pairs", "finetune_epochs", "stitch_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Argument '{name}' must be a positive integer, not {getattr(self, name)!r}.")
        if self.models < 2 and self.experiment != "sanity":
            raise ValueError(f"Argument 'models' must be at least 2 for pairs of models, not {self.models!r}.")
        for m in self.methods:
            if m not in ("full", "group") and not (m.startswith("rank") and m[4:].isdigit()):
                raise ValueError(f"Argument 'methods' holds {m!r}; expected 'full', 'group' or 'rankR'.")
        for t in self.transforms:
            if t not in ("group", "orthogonal", "identity"):
                raise ValueError(f"Argument 'transforms' holds {t!r}; expected 'group', 'orthogonal' or 'identity'.")

    def to_json(self) -> dict:
        d = asdict(self)
        d["train"] = self.train.to_json()
        return d


_PRESETS = {
    # Seconds to a couple of minutes on CPU, for tests.
    "smoke": dict(threads=1, width=8, models=2, pairs=1, repeats=1, finetune_epochs=1, stitch_epochs=1,
                  train=dict(epochs=6, batch_size=64, lr=3e-3), similarity_images=200, bn_images=500,
                  methods=("full", "rank1", "group"), transforms=("group", "orthogonal"), eval_relaxed=False,
                  stitch_lr=1e-2),
    # A reduced reproduction on CIFAR-10 for a 2-core CPU.
    "cpu": dict(dataset="cifar10", width=8, n_test=5000, models=3, pairs=3, repeats=2, finetune_epochs=2,
                finetune_n_train=8000, stitch_epochs=1, stitch_n_train=6000, bn_images=2000,
                train=dict(epochs=4, batch_size=64, lr=2e-3, n_train=20000), similarity_images=1000,
                stitch_lr=5e-2, threads=1),
    # Appendix D's hyperparameters (a GPU is advised).
    "paper": dict(dataset="cifar10", width=64, models=32, pairs=32, repeats=10, finetune_epochs=50,
                  stitch_epochs=20, train=dict(epochs=50, batch_size=32), similarity_images=10000,
                  stitch_lr=1e-3),
}
PRESETS = tuple(_PRESETS)

#: On CIFAR-10 the smoke preset subsamples the data to stay within seconds.
_SMOKE_CIFAR = dict(n_train=600, n_test=300, width=4, train=dict(epochs=1, batch_size=64))


def make_config(experiment: str, preset: str = "smoke", **overrides) -> ExperimentConfig:
    """The preset's configuration with ``overrides`` (``None`` values are ignored)."""
    if preset not in _PRESETS:
        raise ValueError(f"Argument 'preset' must be one of {PRESETS}, not {preset!r}.")
    values = dict(_PRESETS[preset])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    dataset = overrides.get("dataset", values.get("dataset", "digits"))
    if preset == "smoke" and dataset == "cifar10":
        values.update(_SMOKE_CIFAR)
    train = dict(values.pop("train", {}))
    epochs = overrides.pop("epochs", None)
    if epochs is not None:
        train["epochs"] = epochs
    if "train" in overrides:
        train.update(overrides.pop("train"))
    values.update(overrides)
    values["train"] = TrainConfig(**train)
    return ExperimentConfig(experiment=experiment, preset=preset, **values)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean and half-width of a Student-t confidence interval (0 for a single value)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), 0.0, 1
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half), int(len(v))


def summarize(rows: list[dict], keys: tuple, value: str) -> list[dict]:
    """Mean and 95% CI of ``value`` grouped by ``keys`` (first-seen order)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    out = []
    for k, vals in groups.items():
        m, ci, n = mean_ci(vals)
        out.append(dict(zip(keys, k), mean=m, ci95=ci, n=n))
    return out


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o


def write_results(out_dir: str | os.PathLike, results: dict) -> Path:
    """Write ``results.json`` and ``results.csv`` (the rows) atomically into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    results = dict(results, versions={"python": platform.python_version(), "torch": torch.__version__,
                                      "numpy": np.__version__}, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    path = out / "results.json"
    tmp = out / f".results.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(_jsonable(results), indent=2))
    os.replace(tmp, path)
    rows = results.get("rows", [])
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    tmp = out / f".results.csv.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(_jsonable(r))
    os.replace(tmp, out / "results.csv")
    return path
