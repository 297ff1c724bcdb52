"""A model zoo on disk: every model is keyed by dataset, architecture, width, activation,
batch norm, seed and training configuration, trained once and reused.

Finished models are written atomically (temporary file + ``os.replace``); a model whose
training was interrupted resumes from its last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._data import Dataset, Normalizer
from ._train import TrainConfig, atomic_save, evaluate, train_model

__all__ = ["ModelSpec", "build_model", "get_model", "ARCHS"]

ARCHS = ("myrtle", "resnet20", "resnet18", "mlp")


@dataclass(frozen=True)
class ModelSpec:
    """What identifies one model of the zoo."""

    dataset: str
    arch: str
    width: int
    activation: str
    batch_norm: bool
    seed: int
    train: TrainConfig

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"Argument 'arch' must be one of {ARCHS}, not {self.arch!r}.")
        if int(self.width) < 1:
            raise ValueError(f"Argument 'width' must be a positive integer, not {self.width!r}.")

    @property
    def key(self) -> str:
        cfg = json.dumps(self.train.to_json(), sort_keys=True)
        digest = hashlib.sha1(cfg.encode()).hexdigest()[:8]
        bn = "bn" if self.batch_norm else "nobn"
        act = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.activation)
        return f"{self.dataset}-{self.arch}-w{self.width}-{act}-{bn}-e{self.train.epochs}-{digest}-s{self.seed}"


def build_model(arch: str, *, width: int, activation: str, batch_norm: bool, data: Dataset) -> nn.Module:
    """A reference model of :mod:`torch_bridge.models` sized for ``data``.

    ``width`` is the base channel count (Myrtle: channels w, 2w, 4w, 8w; ResNet20: w, 2w, 4w;
    ResNet18: w, 2w, 4w, 8w) or, for the MLP, the size of its three hidden layers.
    ``batch_norm`` applies to the Myrtle CNN only (the ResNets always have it, the MLP never).
    """
    from .. import models

    width = int(width)
    if arch == "myrtle":
        return models.myrtle(width=width, batch_norm=batch_norm, activation=activation,
                             num_classes=data.num_classes, in_channels=data.in_channels)
    if arch in ("resnet20", "resnet18"):
        return getattr(models, arch)(width=width, activation=activation, num_classes=data.num_classes,
                                     in_channels=data.in_channels)
    if arch == "mlp":
        n_in = data.in_channels * data.image_size ** 2
        return models.mlp([n_in, width, width, width, data.num_classes], activation=activation)
    raise ValueError(f"Argument 'arch' must be one of {ARCHS}, not {arch!r}.")


def get_model(spec: ModelSpec, data: Dataset, *, zoo_dir: str | os.PathLike, device: torch.device,
              progress: bool = True) -> tuple[nn.Module, dict]:
    """Load the model ``spec`` from the zoo, training (or resuming) it first if needed.

    Returns the model in eval mode with frozen-free parameters and its record
    (``val_acc`` on the held-out part of the training set, ``test_acc``, ``best_epoch``...).
    """
    zoo = Path(zoo_dir)
    path = zoo / f"{spec.key}.pt"
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch, width=spec.width, activation=spec.activation,
                        batch_norm=spec.batch_norm, data=data).to(device)
    if spec.arch != "mlp":
        model = model.to(memory_format=torch.channels_last)
    if path.exists():
        saved = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        return model.eval(), saved["record"]
    info = train_model(model, data, spec.train, seed=spec.seed, device=device,
                       checkpoint=zoo / f"{spec.key}.partial.pt", progress=progress, desc=spec.key)
    record = dict(info, test_acc=evaluate(model, data.x_test, data.y_test, Normalizer(data, device)),
                  key=spec.key, seed=spec.seed)
    atomic_save({"model": model.state_dict(), "record": record}, path)
    return model.eval(), record
