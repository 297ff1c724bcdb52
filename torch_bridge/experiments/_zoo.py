"""A model zoo on disk: every model is keyed by the data (dataset name and a content hash of
the images actually used), architecture, width, activation, batch norm, seed and training
configuration, trained once and reused.

Finished models are written atomically (temporary file + ``os.replace``) with a SHA-256
sidecar (``<key>.sha256``); a model file that does not match it (truncated, corrupt, or
written without its sidecar) is retrained with a :class:`CacheWarning` naming the file. A model
whose training was interrupted resumes from its last finished epoch. Several processes may
share one zoo: a claim file ``<key>.lock`` (see :mod:`._locks`) makes one of them train a model
while the others wait and then load it; every training is logged in ``training.log``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._data import CacheWarning, Dataset, Normalizer, file_sha256
from ._locks import STALE_AFTER_S, atomic_write_text, temp_path, try_claim
from ._train import TrainConfig, evaluate, train_model

__all__ = ["ModelSpec", "build_model", "get_model", "ARCHS"]

ARCHS = ("myrtle", "resnet20", "resnet18", "mlp", "vit")

#: The version of the training code (``build_model`` and ``train_model``): bump it when a change
#: alters the models a configuration trains, so that zoo models trained before are not reused.
#: Versions other than 1 are hashed into every zoo key (so the keys of version 1 stay valid).
TRAIN_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """What identifies one model of the zoo."""

    dataset: str  # name, then "-" and the data's content hash
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
        basis = self.train.to_json()
        if TRAIN_VERSION != 1:
            basis["train_version"] = TRAIN_VERSION
        cfg = json.dumps(basis, sort_keys=True)
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
    from ._activation import module_spec

    width = int(width)
    activation = module_spec(activation)  # "leaky_relu(negative_slope=0.5)" -> (name, params)
    if arch == "myrtle":
        return models.myrtle(width=width, batch_norm=batch_norm, activation=activation,
                             num_classes=data.num_classes, in_channels=data.in_channels)
    if arch in ("resnet20", "resnet18"):
        return getattr(models, arch)(width=width, activation=activation, num_classes=data.num_classes,
                                     in_channels=data.in_channels)
    if arch == "vit":  # 2x2 patches on 8x8 digits (16 tokens), 4x4 on 32x32 CIFAR-10 (64 tokens)
        return models.vit(width=width, patch=2 if data.image_size <= 8 else 4, image_size=data.image_size,
                          in_channels=data.in_channels, num_classes=data.num_classes, activation=activation)
    if arch == "mlp":
        n_in = data.in_channels * data.image_size ** 2
        return models.mlp([n_in, width, width, width, data.num_classes], activation=activation)
    raise ValueError(f"Argument 'arch' must be one of {ARCHS}, not {arch!r}.")


def _load_verified(path: Path, device: torch.device):
    """The saved model at ``path`` if it matches its checksum sidecar, else ``None`` (the
    damaged file and its sidecar are removed, with a warning naming the file)."""
    sidecar = path.with_suffix(".sha256")
    if not path.exists():
        return None
    try:
        ok = sidecar.read_text().strip() == file_sha256(path)
        saved = torch.load(path, map_location=device, weights_only=False) if ok else None
    except Exception:  # noqa: BLE001 - unreadable sidecar or unpickling failure: a damaged file
        ok, saved = False, None
    if not ok or not isinstance(saved, dict) or "model" not in saved:
        warnings.warn(f"Zoo model {str(path)!r} is truncated or corrupt (checksum mismatch); retraining it.",
                      CacheWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        return None
    return saved


def get_model(spec: ModelSpec, data: Dataset, *, zoo_dir: str | os.PathLike, device: torch.device,
              progress: bool = True, poll_s: float = 1.0, stale_after: float = STALE_AFTER_S
              ) -> tuple[nn.Module, dict]:
    """Load the model ``spec`` from the zoo, training (or resuming) it first if needed.

    Returns the model in eval mode and its record (``val_acc`` on the held-out part of the
    training set, ``test_acc``, ``best_epoch``...). When another process holds the model's
    claim, waits (polling every ``poll_s`` seconds) until it has finished, or until its claim
    goes stale (see :mod:`._locks`; ``stale_after`` seconds without a heartbeat), then
    loads or trains it.
    """
    zoo = Path(zoo_dir)
    zoo.mkdir(parents=True, exist_ok=True)
    path = zoo / f"{spec.key}.pt"
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch, width=spec.width, activation=spec.activation,
                        batch_norm=spec.batch_norm, data=data).to(device)
    # the layout is train_model's: channels-last while training when the recipe asks, contiguous
    # afterwards, so a loaded model and a freshly trained one compute in the same layout
    while True:
        saved = _load_verified(path, device)
        if saved is not None:
            model.load_state_dict(saved["model"])
            return model.eval(), saved["record"]
        claim = try_claim(zoo / f"{spec.key}.lock", stale_after=stale_after, what=f"train {spec.key}")
        if claim is None:
            time.sleep(poll_s)
            continue
        with claim:
            if path.exists():  # finished by the previous owner while we were claiming
                continue
            record = _train(model, spec, data, zoo, device, progress)
            return model.eval(), record


def _train(model: nn.Module, spec: ModelSpec, data: Dataset, zoo: Path, device, progress) -> dict:
    info = train_model(model, data, spec.train, seed=spec.seed, device=device,
                       checkpoint=zoo / f"{spec.key}.partial.pt", progress=progress, desc=spec.key)
    record = dict(info, test_acc=evaluate(model, data.x_test, data.y_test, Normalizer(data, device)),
                  key=spec.key, seed=spec.seed)
    path = zoo / f"{spec.key}.pt"
    tmp = temp_path(path)  # host-tagged: a killed writer's orphan is swept at once (see _locks)
    try:  # the sidecar goes first, so a model file never appears without its checksum
        torch.save({"model": model.state_dict(), "record": record}, tmp)
        atomic_write_text(path.with_suffix(".sha256"), file_sha256(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with open(zoo / "training.log", "a") as log:  # one short line per training: an O_APPEND write
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} {os.getpid()} {spec.key}\n")
    return record
