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

import numpy as np
import torch

from ._config import ExperimentConfig, summarize
from ._setup import rng_for
from ._sites import channel_map, site_hook
from ._train import evaluate, train_model

__all__ = ["run_sanity", "random_orthogonal", "random_transform", "engine_group"]


def engine_group(activation: str):
    """The intertwiner group object the engine derives for ``activation`` (a catalogue name,
    optionally with parameter values: ``"leaky_relu(negative_slope=-1)"``)."""
    import groupcalc

    from ._activation import parse_activation

    name, params = parse_activation(activation)
    return groupcalc.group(name, **params)


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


def _n_base(cfg: ExperimentConfig) -> int:
    return min(cfg.models, cfg.repeats)  # repeat r fine-tunes model r mod n_base


def _plan(ctx, specs) -> tuple[list, dict]:
    """One job per (repeat, site, transform); more repeats add jobs and keep the old ones."""
    from ._jobs import make_job

    cfg = ctx.cfg
    sites = ctx.sites(False)
    basis = cfg.job_basis()
    jobs = []
    for r in range(cfg.repeats):
        spec = specs[r % len(specs)]
        for site in sites:
            for kind in cfg.transforms:
                params = {"repeat": r, "model": spec.key, "model_seed": spec.seed, "site": site.name,
                          "transform": kind}
                jobs.append(make_job("sanity", f"sanity-r{r}-{site.name}-{kind}", params, basis))
    return jobs, {"sites": [{"layer": s.name, "index": s.index, "channels": s.channels, "shape": list(s.shape)}
                            for s in sites]}


def _run_job(ctx, job) -> dict:
    from ._setup import zoo_model

    cfg, q = ctx.cfg, job.params
    base, rec = zoo_model(ctx, q["model_seed"], False)
    site, kind, r = ctx.site(q["site"], False), q["transform"], q["repeat"]
    ft_cfg = cfg.finetune_recipe()
    model = copy.deepcopy(base)
    before = set(site.before)
    tail = []
    for name, mod in model.named_modules():
        for p in mod.parameters(recurse=False):
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
    return {"layer": site.name, "layer_index": site.index, "channels": site.channels,
            "transform": kind, "repeat": r, "model_seed": rec["seed"], "penalty": 100.0 * (acc_before - acc_after),
            "acc_before": 100.0 * acc_before, "acc_transformed": 100.0 * acc_transformed,
            "acc_after": 100.0 * acc_after, "finetune_val_acc": 100.0 * info["val_acc"]}


def _merge(cfg: ExperimentConfig, info: dict, records: list, results: list) -> dict:
    from ._setup import accuracy_summary, records_in_points

    rows = list(results)
    return {
        "experiment": "sanity",
        "config": cfg.to_json(),
        "sites": info["sites"],
        "models": records_in_points(records),
        "accuracy": accuracy_summary(records),
        "units": {k: "accuracy points" for k in ("penalty", "acc_before", "acc_transformed", "acc_after",
                                                 "finetune_val_acc")},
        "rows": rows,
        "summary": summarize(rows, ("layer", "transform"), "penalty"),
    }


def run_sanity(cfg: ExperimentConfig) -> dict:
    """Run the sanity experiment in this process; returns the results dictionary (rows: layer,
    transform, penalty in accuracy points). Same as ``run_experiment(cfg, write=False)``."""
    from ._run import run_experiment

    return run_experiment(cfg, write=False)


def _register():
    from ._registry import ExperimentKind

    return ExperimentKind("sanity", batch_norm=False, n_models=_n_base, plan=_plan, job_kind="sanity",
                          run=_run_job, merge=_merge, summary_key="transform",
                          # cpu: 4 repeats over 2 models (each fine-tuned twice, other seeds and transforms),
                          # fine-tuned as the paper does (Adam at 1e-3, step drops) in small batches: the
                          # models' one-cycle SGD recipe warms up to a learning rate that wrecks a trained
                          # network (the identity control lost 5.6 points with it)
                          presets={"cpu": dict(models=2, finetune=dict(optimizer="adam", lr=1e-3, schedule="steps",
                                                                        batch_size=64, weight_decay=0.0))})


SANITY = _register()
