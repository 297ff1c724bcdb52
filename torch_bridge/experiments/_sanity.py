"""The "sanity test" of section 3.3 (figure 4): rotation penalties.

A trained network without batch norm has the pre-activations of layer l multiplied by a
random matrix A (equivalently W_l -> A W_l, b_l -> A b_l; an auxiliary 1x1 convolution in
practice): a random element of the activation's intertwiner group (from the engine), a
random orthogonal matrix (the Q of a QR decomposition of a Gaussian matrix), or the identity
(a control that measures what fine-tuning alone does). Layers up to l are frozen and the rest
is fine-tuned; the rotation penalty is the test accuracy before minus after.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ._config import ExperimentConfig, summarize
from ._setup import accuracy_summary, example_batch, rng_for, setup, zoo_models
from ._sites import channel_map, find_sites, site_hook
from ._train import TrainConfig, evaluate, train_model

__all__ = ["run_sanity", "random_orthogonal", "random_transform", "engine_group"]


def engine_group(activation: str):
    """The intertwiner group object the engine derives for ``activation``."""
    import groupcalc

    return groupcalc.group(activation)


def random_orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Q of the QR decomposition of an n x n standard Gaussian matrix (as in the paper)."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def random_transform(kind: str, n: int, activation: str, rng: np.random.Generator) -> np.ndarray:
    """An n x n matrix: ``"group"`` (a sample of the intertwiner group the engine derives for
    ``activation``), ``"orthogonal"`` or ``"identity"``."""
    if kind == "group":
        return np.asarray(engine_group(activation).sample(n, rng), dtype=np.float64)
    if kind == "orthogonal":
        return random_orthogonal(n, rng)
    if kind == "identity":
        return np.eye(n)
    raise ValueError(f"Argument 'kind' must be 'group', 'orthogonal' or 'identity', not {kind!r}.")


def _write_partial(cfg: ExperimentConfig, rows: list) -> None:
    """Rows finished so far, in ``out/partial_rows.json`` (a long run that is stopped keeps them)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".partial_rows.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, out / "partial_rows.json")


def run_sanity(cfg: ExperimentConfig) -> dict:
    """Run the sanity experiment; returns the results dictionary (rows: layer, transform, penalty)."""
    t0 = time.time()
    ctx = setup(cfg)
    n_base = min(cfg.models, cfg.repeats)
    models, records = zoo_models(ctx, n_base, batch_norm=False)
    sites = find_sites(models[0], example_batch(ctx))
    ft_cfg = TrainConfig(**dict(cfg.train.to_json(), epochs=cfg.finetune_epochs, n_train=cfg.finetune_n_train))
    rows = []
    from tqdm.auto import tqdm

    jobs = [(r, s, t) for r in range(cfg.repeats) for s in sites for t in cfg.transforms]
    for r, site, kind in tqdm(jobs, desc="sanity", disable=not cfg.progress):
        base, rec = models[r % n_base], records[r % n_base]
        model = copy.deepcopy(base)
        before = set(site.before)
        tail = []
        for name, mod in model.named_modules():
            own = list(mod.parameters(recurse=False))
            for p in own:
                p.requires_grad_(name not in before)
                if name not in before:
                    tail.append(p)
        rng = rng_for(ctx, "sanity", r, site.name, kind)
        A = torch.as_tensor(random_transform(kind, site.channels, cfg.activation, rng),
                            dtype=torch.float32, device=ctx.device)
        acc_before = rec["test_acc"]
        with site_hook(model, site, pre=lambda z, A=A: channel_map(A, z)):
            acc_transformed = evaluate(model, ctx.data.x_test, ctx.data.y_test, ctx.normalizer)
            info = train_model(model, ctx.data, ft_cfg, seed=1000 + r, device=ctx.device, params=tail,
                               progress=cfg.progress, desc=f"finetune {site.name} {kind}")
            acc_after = evaluate(model, ctx.data.x_test, ctx.data.y_test, ctx.normalizer)
        rows.append({"layer": site.name, "layer_index": site.index, "channels": site.channels,
                     "transform": kind, "repeat": r, "model_seed": rec["seed"], "penalty": acc_before - acc_after,
                     "acc_before": acc_before, "acc_transformed": acc_transformed, "acc_after": acc_after,
                     "finetune_val_acc": info["val_acc"]})
        _write_partial(cfg, rows)
    (Path(cfg.out) / "partial_rows.json").unlink(missing_ok=True)  # results.json holds them now
    return {
        "experiment": "sanity",
        "config": cfg.to_json(),
        "sites": [{"layer": s.name, "index": s.index, "channels": s.channels, "shape": list(s.shape)} for s in sites],
        "models": records,
        "accuracy": accuracy_summary(records),
        "rows": rows,
        "summary": summarize(rows, ("layer", "transform"), "penalty"),
        "elapsed_s": time.time() - t0,
    }
