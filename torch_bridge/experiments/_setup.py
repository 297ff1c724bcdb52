"""What every experiment starts with: the data, the device, the zoo and the models."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._config import ExperimentConfig, mean_ci
from ._data import Dataset, Normalizer, default_cache_dir, load_dataset
from ._train import resolve_device
from ._zoo import ModelSpec, get_model

__all__ = ["Context", "setup", "zoo_models"]


@dataclass
class Context:
    cfg: ExperimentConfig
    data: Dataset
    device: torch.device
    zoo_dir: Path
    normalizer: Normalizer

    @property
    def dataset_tag(self) -> str:
        tag = self.data.name
        if self.cfg.n_train is not None or self.cfg.n_test is not None:
            tag += f"_sub{self.cfg.n_train}x{self.cfg.n_test}"
        return tag


def setup(cfg: ExperimentConfig) -> Context:
    device = resolve_device(cfg.device)
    if cfg.threads is not None and device.type == "cpu":
        torch.set_num_threads(int(cfg.threads))
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.cache_dir)
    if cfg.n_train is not None or cfg.n_test is not None:
        data = data.subsample(cfg.n_train, cfg.n_test, seed=0)
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    return Context(cfg, data, device, cache / "zoo", Normalizer(data, device))


def zoo_models(ctx: Context, n: int, *, batch_norm: bool) -> tuple[list, list[dict]]:
    """Models with seeds ``cfg.seed .. cfg.seed + n - 1`` from the zoo (training missing ones)."""
    cfg = ctx.cfg
    models, records = [], []
    for s in range(cfg.seed, cfg.seed + n):
        spec = ModelSpec(ctx.dataset_tag, cfg.arch, cfg.width, cfg.activation, batch_norm, s, cfg.train)
        m, rec = get_model(spec, ctx.data, zoo_dir=ctx.zoo_dir, device=ctx.device, progress=cfg.progress)
        for p in m.parameters():
            p.requires_grad_(False)
        models.append(m)
        records.append(rec)
    return models, records


def accuracy_summary(records: list[dict]) -> dict:
    m, ci, n = mean_ci([r["test_acc"] for r in records])
    return {"test_acc_mean": m, "test_acc_ci95": ci, "n": n}


def example_batch(ctx: Context, n: int = 2) -> torch.Tensor:
    return ctx.normalizer(torch.from_numpy(ctx.data.x_test[:n]))


def rng_for(ctx: Context, *keys) -> np.random.Generator:
    """A reproducible generator for one unit of work (seed, then the given keys)."""
    return np.random.default_rng([ctx.cfg.seed, *[zlib.crc32(k.encode()) if isinstance(k, str) else int(k)
                                                  for k in keys]])
