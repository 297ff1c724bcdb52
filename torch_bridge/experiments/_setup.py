"""What every experiment starts with: the data, the device, the zoo and the models."""

from __future__ import annotations

import functools
import os
import uuid
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ._config import ExperimentConfig, mean_ci
from ._data import Dataset, Normalizer, default_cache_dir, load_dataset
from ._train import resolve_device, resolve_precision
from ._zoo import ModelSpec, build_model, get_model

__all__ = ["Context", "setup", "context", "model_spec", "zoo_model", "check_writable", "cache_dir"]


class UnknownLayer(ValueError):
    """``--layers`` names a site the architecture does not have (bad input: exit code 2)."""


@dataclass
class Context:
    cfg: ExperimentConfig
    data: Dataset
    device: torch.device
    zoo_dir: Path
    normalizer: Normalizer
    models: dict = field(default_factory=dict, repr=False)  # spec key -> (model, record), per process
    _sites: dict = field(default_factory=dict, repr=False)

    @property
    def dataset_tag(self) -> str:
        """Dataset name and content hash (the data actually used, after subsampling)."""
        return f"{self.data.name}-{self.data.content_hash}"

    def sites(self, batch_norm: bool) -> list:
        """The activation sites of the configured architecture (found on an untrained copy:
        the layers, not the weights, decide them), restricted to ``cfg.layers`` if given."""
        if batch_norm not in self._sites:
            sites = self._all_sites(batch_norm)
            if self.cfg.layers is not None:
                names = [s.name for s in sites]
                missing = [l for l in self.cfg.layers if l not in names]
                if missing:
                    import difflib

                    close = difflib.get_close_matches(missing[0], names, n=3)
                    raise UnknownLayer(f"Argument 'layers' names no activation site {missing[0]!r} of {self.cfg.arch}"
                                     + (f" (did you mean {', '.join(close)}?)" if close else "") + ".")
                sites = [s for s in sites if s.name in self.cfg.layers]
            self._sites[batch_norm] = sites
        return self._sites[batch_norm]

    def _all_sites(self, batch_norm: bool) -> list:
        from ._sites import find_sites

        torch.manual_seed(0)
        net = build_model(self.cfg.arch, width=self.cfg.width, activation=self.cfg.activation,
                          batch_norm=batch_norm, data=self.data).to(self.device)
        if self.cfg.arch != "mlp":
            net = net.to(memory_format=torch.channels_last)
        # a transformer names its stitching points (the residual stream after each block)
        return find_sites(net, example_batch(self), modules=getattr(net, "residual_sites", None))

    def site(self, name: str, batch_norm: bool):
        for s in self.sites(batch_norm):
            if s.name == name:
                return s
        raise KeyError(f"no activation site {name!r}")


def cache_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Create ``path`` if needed and write and remove a probe file in it; a ``ValueError``
    naming ``what`` and the path otherwise (checked before any compute)."""
    p = Path(path).expanduser()
    probe = p / f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(f"{p} is a file")
        p.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        probe.unlink()
    except OSError as e:
        raise ValueError(f"Argument '{what}' ({str(p)!r}) is not a writable folder: "
                         f"{e.strerror or type(e).__name__}.") from None


def setup(cfg: ExperimentConfig) -> Context:
    device = resolve_device(cfg.device)
    if cfg.threads is not None and device.type == "cpu":
        torch.set_num_threads(int(cfg.threads))
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.cache_dir)
    if cfg.n_train is not None or cfg.n_test is not None:
        data = data.subsample(cfg.n_train, cfg.n_test, seed=0)
    return Context(cfg, data, device, cache_dir(cfg) / "zoo", Normalizer(data, device))


@functools.lru_cache(maxsize=2)
def context(cfg: ExperimentConfig) -> Context:
    """:func:`setup` once per process and configuration (a worker runs many jobs)."""
    return setup(cfg)


def model_spec(ctx: Context, seed: int, batch_norm: bool) -> ModelSpec:
    """The zoo entry of one model; ``precision="auto"`` is resolved for this context's device
    first, so the key names the precision the model is (or was) trained in."""
    cfg = ctx.cfg
    recipe = cfg.recipe(batch_norm)
    recipe = replace(recipe, precision=resolve_precision(recipe.precision, ctx.device))
    return ModelSpec(ctx.dataset_tag, cfg.arch, cfg.width, cfg.activation, batch_norm, int(seed), recipe)


def zoo_model(ctx: Context, seed: int, batch_norm: bool):
    """The frozen zoo model of ``seed`` and its record (trained if missing; cached per process)."""
    spec = model_spec(ctx, seed, batch_norm)
    if spec.key not in ctx.models:
        m, rec = get_model(spec, ctx.data, zoo_dir=ctx.zoo_dir, device=ctx.device, progress=ctx.cfg.progress)
        for p in m.parameters():
            p.requires_grad_(False)
        ctx.models[spec.key] = (m, rec)
    return ctx.models[spec.key]


def zoo_models(ctx: Context, n: int, *, batch_norm: bool) -> tuple[list, list[dict]]:
    """Models with seeds ``cfg.seed .. cfg.seed + n - 1`` from the zoo (training missing ones)."""
    pairs = [zoo_model(ctx, s, batch_norm) for s in range(ctx.cfg.seed, ctx.cfg.seed + n)]
    return [m for m, _ in pairs], [r for _, r in pairs]


def accuracy_summary(records: list[dict]) -> dict:
    """Mean test accuracy of the models, in accuracy points (percent)."""
    m, ci, n = mean_ci([100.0 * r["test_acc"] for r in records])
    return {"test_acc_mean": m, "test_acc_ci95": ci, "n": n, "unit": "accuracy points"}


def records_in_points(records: list[dict]) -> list[dict]:
    """Model records with accuracies in accuracy points (the zoo stores fractions)."""
    return [dict(r, **{k: 100.0 * r[k] for k in ("test_acc", "val_acc") if r.get(k) is not None})
            for r in records]


def example_batch(ctx: Context, n: int = 2) -> torch.Tensor:
    return ctx.normalizer(torch.from_numpy(ctx.data.x_test[:n]))


def rng_for(ctx: Context, *keys) -> np.random.Generator:
    """A reproducible generator for one unit of work (seed, then the given keys)."""
    return np.random.default_rng([ctx.cfg.seed, *[zlib.crc32(k.encode()) if isinstance(k, str) else int(k)
                                                  for k in keys]])
