"""Experiment configuration, presets, and writing results (JSON, CSV)."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ._train import TrainConfig

__all__ = ["ExperimentConfig", "PRESETS", "make_config", "write_results", "mean_ci", "summarize", "jsonable",
           "NOT_IN_JOB_KEYS"]

EXPERIMENTS = ("sanity", "stitch", "similarity", "leaky_sweep", "l1_sparsity", "alpha_cv",
               "transformer_stitch")  # the registry (_registry.py) is the source; checked in tests

#: Configuration fields that do not change any job's result (where and how a run happens, how
#: many jobs it has), so job keys leave them out; ``data_dir`` is replaced by the data's content hash.
NOT_IN_JOB_KEYS = ("experiment", "preset", "out", "progress", "threads", "cache_dir", "data_dir", "device",
                   "models", "pairs", "repeats", "methods", "transforms", "near_chance")


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
    #: the recipe of the models without batch norm (the sanity test's), where it differs from
    #: ``train`` (None: ``train``): SGD at the learning rate of a batch-norm network diverges
    train_plain: TrainConfig | None = None
    #: the sanity test's fine-tuning recipe (None: the model's own, as in the paper; its epochs
    #: and training images are ``finetune_epochs`` and ``finetune_n_train``)
    finetune: TrainConfig | None = None
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
    #: a model whose test accuracy is below ``near_chance`` times chance (1 / classes) is
    #: reported as near chance (a warning in the output and in results.json)
    near_chance: float = 2.0
    # Fields added with the experiments of appendix D (see _ADDED_FIELDS: at their default
    # they are left out of job keys, so the keys of earlier runs stay valid).
    #: activation site names to use (None: every site); stitch, similarity and the D experiments
    layers: tuple | None = None
    #: leaky_sweep: LeakyReLU negative slopes (table 3 and -1, whose group has sign flips)
    slopes: tuple = (-1.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 1.0)
    #: l1_sparsity: the l1 multipliers lambda of appendix D.6, and the threshold tau of eq. D.1
    l1_strengths: tuple = (1e-3, 1e-2, 1e-1)
    sparsity_threshold: float = 1e-3
    #: alpha_cv: the alphas of appendix D.5, the held-out fraction of the training set and the epochs
    cv_alphas: tuple = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    cv_fraction: float = 0.2
    cv_epochs: int = 5
    #: softsort stitching (appendix D.2.2): the temperature (None: 1 / channels, as in the paper)
    softsort_tau: float | None = None

    def __post_init__(self):
        from . import _registry
        from ._activation import parse_activation

        parse_activation(self.activation)  # the form only; the CLI checks the name against the catalogue
        if self.experiment not in _registry.names():
            raise ValueError(f"Argument 'experiment' must be one of {_registry.names()}, not {self.experiment!r}.")
        if self.data_dir is not None and self.dataset == "digits":
            raise ValueError("Argument 'data_dir' is given but the dataset is 'digits' (embedded); "
                             "--data-dir implies --dataset cifar10, so drop one of them.")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"Argument 'threads' must be a positive integer, not {self.threads!r}.")
        for name in ("width", "models", "repeats", "pairs", "finetune_epochs", "stitch_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Argument '{name}' must be a positive integer, not {getattr(self, name)!r}.")
        for name in ("finetune_n_train", "stitch_n_train"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"Argument '{name}' must be a positive integer or None, not {getattr(self, name)!r}.")
        if self.arch == "vit" and self.experiment not in ("stitch", "transformer_stitch"):
            raise ValueError(f"Argument 'arch' is 'vit', whose sites are the residual stream after each block; only "
                             f"stitch and transformer_stitch handle them, not {self.experiment!r}.")
        if self.models < 2 and self.experiment != "sanity":
            raise ValueError(f"Argument 'models' must be at least 2 for pairs of models, not {self.models!r}.")
        for m in self.methods:
            if m not in ("full", "group", "softsort") and not (m.startswith("rank") and m[4:].isdigit()):
                raise ValueError(f"Argument 'methods' holds {m!r}; expected 'full', 'group', 'softsort' or 'rankR'.")
        for name in ("slopes", "l1_strengths", "cv_alphas"):
            vals = getattr(self, name)
            if not vals or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
                raise ValueError(f"Argument '{name}' must be a non-empty tuple of finite numbers, not {vals!r}.")
        if any(v < 0 for v in self.l1_strengths) or any(v <= 0 for v in self.cv_alphas):
            raise ValueError(f"Arguments 'l1_strengths' must be >= 0 and 'cv_alphas' > 0, not "
                             f"{self.l1_strengths!r} and {self.cv_alphas!r}.")
        if not 0 < self.cv_fraction < 1:
            raise ValueError(f"Argument 'cv_fraction' must be in (0, 1), not {self.cv_fraction!r}.")
        if int(self.cv_epochs) < 1:
            raise ValueError(f"Argument 'cv_epochs' must be a positive integer, not {self.cv_epochs!r}.")
        if self.softsort_tau is not None and not self.softsort_tau > 0:
            raise ValueError(f"Argument 'softsort_tau' must be positive, not {self.softsort_tau!r}.")
        if self.layers is not None and (not self.layers or not all(isinstance(l, str) for l in self.layers)):
            raise ValueError(f"Argument 'layers' must be a non-empty tuple of site names, not {self.layers!r}.")
        for t in self.transforms:
            if t not in ("group", "orthogonal", "identity"):
                raise ValueError(f"Argument 'transforms' holds {t!r}; expected 'group', 'orthogonal' or 'identity'.")
        _registry.get(self.experiment).validate(self)

    def job_basis(self) -> dict:
        """The fields every job key hashes (see :data:`NOT_IN_JOB_KEYS`; fields of
        :data:`_ADDED_FIELDS` only where they differ from their default)."""
        d = self.to_json()
        # keys hash ``finetune`` as given (before finetune_epochs and finetune_n_train replace
        # its epochs and images), as they did when they were first written
        d["finetune"] = None if self.finetune is None else self.finetune.to_json()
        return {k: v for k, v in d.items()
                if k not in NOT_IN_JOB_KEYS and not (k in _ADDED_FIELDS and v == _ADDED_FIELDS[k])}

    def to_json(self) -> dict:
        """Every field; ``finetune`` is the recipe the sanity fine-tunings use (:meth:`finetune_recipe`)."""
        d = asdict(self)
        d["train"] = self.train.to_json()
        d["train_plain"] = None if self.train_plain is None else self.train_plain.to_json()
        d["finetune"] = None if self.finetune is None else self.finetune_recipe().to_json()
        return d

    def finetune_recipe(self) -> TrainConfig:
        """The sanity test's fine-tuning recipe: ``finetune`` (None: the plain models' recipe)
        for ``finetune_epochs`` epochs of ``finetune_n_train`` images."""
        return replace(self.finetune or self.recipe(False), epochs=self.finetune_epochs, n_train=self.finetune_n_train)

    def recipe(self, batch_norm: bool) -> TrainConfig:
        """The training recipe of a model with or without batch norm."""
        return self.train if batch_norm or self.train_plain is None else self.train_plain


#: Fields added after job keys were first written, with their defaults: left out of the basis at
#: the default so that finished jobs of earlier runs keep their keys (and are not recomputed).
_ADDED_FIELDS = {f: ExperimentConfig.__dataclass_fields__[f].default
                 for f in ("train_plain", "finetune", "layers", "slopes", "l1_strengths", "sparsity_threshold", "cv_alphas", "cv_fraction",
                           "cv_epochs", "softsort_tau")}

_PRESETS = {
    # Seconds to a couple of minutes on CPU, for tests.
    "smoke": dict(threads=1, width=8, models=2, pairs=1, repeats=1, finetune_epochs=1, stitch_epochs=1,
                  train=dict(epochs=6, batch_size=64, lr=3e-3), similarity_images=200, bn_images=500,
                  methods=("full", "rank1", "group"), transforms=("group", "orthogonal"), eval_relaxed=False,
                  stitch_lr=1e-2),
    # A reduced reproduction on CIFAR-10 for a 2-core CPU (docs/reproduction.md): the faster CPU
    # recipe (SGD + Nesterov, one-cycle, label smoothing, channels-last, bfloat16 autocast where the
    # CPU has it natively) over all 45,000 fitting images; models without batch norm take a 4x lower
    # learning rate and 6 epochs (the sanity experiment's preset adds its fine-tuning recipe).
    "cpu": dict(dataset="cifar10", width=16, n_test=5000, models=4, pairs=6, repeats=4, finetune_epochs=2,
                finetune_n_train=5000, stitch_epochs=1, stitch_n_train=5000, bn_images=2000,
                train=dict(epochs=8, batch_size=256, lr=0.2, optimizer="sgd", schedule="onecycle",
                           weight_decay=5e-4, label_smoothing=0.2, channels_last=True, precision="auto"),
                train_plain=dict(lr=0.05, epochs=6), similarity_images=1000, stitch_lr=5e-2, threads=1),
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
    if overrides.get("data_dir") is not None and "dataset" not in overrides:
        overrides["dataset"] = "cifar10"  # --data-dir implies --dataset cifar10 (documented in the CLI help)
    dataset = overrides.get("dataset", values.get("dataset", "digits"))
    from . import _registry

    if experiment in _registry.names():  # the experiment's own preset values (e.g. its architecture)
        values.update(_registry.get(experiment).presets.get(preset, {}))
    if preset == "smoke" and dataset == "cifar10":  # after the experiment's: CIFAR smoke stays tiny
        values.update(_SMOKE_CIFAR)
    train = dict(values.pop("train", {}))
    plain = values.pop("train_plain", None)
    finetune = values.pop("finetune", None)
    epochs = overrides.pop("epochs", None)
    if epochs is not None:
        train["epochs"] = epochs
    if "train" in overrides:
        train.update(overrides.pop("train"))
    if plain is not None or "train_plain" in overrides:  # the plain recipe: train's, with its own values
        plain = {**train, **(plain or {}), **(overrides.pop("train_plain", None) or {})}
        if epochs is not None:
            plain["epochs"] = epochs
    if finetune is not None or "finetune" in overrides:  # over the recipe of the models it fine-tunes
        finetune = {**(plain or train), **(finetune or {}), **(overrides.pop("finetune", None) or {})}
    values.update(overrides)
    if preset == "paper" and "width" not in overrides and values.get("arch") == "resnet20":
        values["width"] = 16  # the paper's ResNet20 has 16, 32, 64 channels (the common 64 is Myrtle's)
    for name in ("layers", "slopes", "l1_strengths", "cv_alphas", "methods", "transforms", "measures"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    values["train"] = TrainConfig(**train)
    values["train_plain"] = None if plain is None else TrainConfig(**plain)
    values["finetune"] = None if finetune is None else TrainConfig(**finetune)
    return ExperimentConfig(experiment=experiment, preset=preset, **values)


def mean_ci(values, level: float = 0.95) -> tuple[float, float | None, int]:
    """Mean and half-width of a Student-t confidence interval (``None`` for a single value:
    one value has no interval, and 0 would claim a certainty there is not)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), None, 0
    if len(v) == 1:
        return float(v[0]), None, 1
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


def jsonable(o):
    """``o`` with numpy scalars/arrays as Python values and non-finite floats as ``None``."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    return o


_jsonable = jsonable


def write_results(out_dir: str | os.PathLike, results: dict) -> Path:
    """Write ``results.json`` and ``results.csv`` (the rows) atomically into ``out_dir``.

    The CSV header states the unit of every column that has one (``results["units"]``), e.g.
    ``penalty [accuracy points]``.
    """
    import io

    from ._locks import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    results = dict(results, versions={"python": platform.python_version(), "torch": torch.__version__,
                                      "numpy": np.__version__}, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    path = out / "results.json"
    atomic_write_text(path, json.dumps(jsonable(results), indent=2))
    rows = results.get("rows", [])
    units = results.get("units", {})
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow([f"{c} [{units[c]}]" if c in units else c for c in cols])
    for r in rows:
        r = jsonable(r)
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    atomic_write_text(out / "results.csv", buf.getvalue())
    return path
