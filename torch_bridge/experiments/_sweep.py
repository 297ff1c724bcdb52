"""The similarity sweep (section 5, table 2, figures 2 and 5): layerwise measures of
:mod:`torch_bridge.similarity` between pairs of models trained from different seeds.

Same-layer rows (``layer``, ``measure``, ``value``) reproduce table 2; for the CKA measures
the full layer-by-layer matrix of each pair is also computed (figures 2 and 5).

One job computes one pair. Features stay on the models' device (the measures run there) and
are held one layer per model at a time: the peak is the features of one layer of each of the
two models, ``2 * images * C * H * W`` floats. For the paper preset (Myrtle width 64, 10,000
images) the largest layer is 64 x 32 x 32, so 2 x 2.6 GB = 5.2 GB in float32, instead of the
~297 GiB of holding every layer of every model. Layer-by-layer matrices recompute model B's
features for each layer of model A (L + L^2 forward passes per pair instead of 2 L).
"""

from __future__ import annotations

import numpy as np
import torch

from ._config import ExperimentConfig, summarize
from ._data import batches
from ._setup import rng_for
from ._sites import capture_site, site_hook

__all__ = ["run_similarity", "site_features", "MEASURES"]

#: measure name -> (function name in torch_bridge.similarity, takes a group argument)
MEASURES = {
    "g_procrustes": ("g_procrustes", True),
    "orthogonal_procrustes": ("orthogonal_procrustes", False),
    "g_cka": ("g_cka", True),
    "linear_cka": ("linear_cka", False),
    "rbf_cka": ("rbf_cka", False),
    "laplace_cka": ("laplace_cka", False),
}
_MATRIX_MEASURES = ("g_cka", "linear_cka")


@torch.no_grad()
def site_features(model, sites, x: np.ndarray, y: np.ndarray, normalizer, batch_size: int = 250) -> list[torch.Tensor]:
    """The outputs of every site on the images ``x`` (eval mode), float32 on the model's
    device (the normaliser's). Holds every layer at once: see :func:`layer_features`."""
    from contextlib import ExitStack

    store = [[] for _ in sites]
    model.eval()
    with ExitStack() as stack:
        for k, s in enumerate(sites):
            stack.enter_context(site_hook(model, s, post=lambda out, k=k: store[k].append(out.detach()) or out))
        for xb, _ in batches(x, y, batch_size, normalizer):
            model(xb)
    return [torch.cat(parts) for parts in store]


@torch.no_grad()
def layer_features(model, site, x: np.ndarray, y: np.ndarray, normalizer, batch_size: int = 250) -> torch.Tensor:
    """The output of one site on the images ``x`` (eval mode; the forward pass stops there),
    float32 on the model's device."""
    model.eval()
    return torch.cat([capture_site(model, site, xb).detach() for xb, _ in batches(x, y, batch_size, normalizer)])


def _measure(name: str, activation: str):
    from .. import similarity

    fname, grouped = MEASURES[name]
    fn = getattr(similarity, fname)
    if grouped:
        from ._sanity import engine_group

        group = engine_group(activation)  # the engine's group, parameter values included
        return lambda X, Y: float(fn(X, Y, group=group))
    return lambda X, Y: float(fn(X, Y))


def _max_pairs(cfg: ExperimentConfig) -> int:
    return cfg.models * (cfg.models - 1) // 2  # unordered pairs: similarity is symmetric


def _validate(cfg: ExperimentConfig) -> None:
    for m in cfg.measures:
        if m not in MEASURES:
            raise ValueError(f"Argument 'measures' holds {m!r}; expected one of {tuple(MEASURES)}.")
    if cfg.pairs > _max_pairs(cfg):
        raise ValueError(f"Argument 'pairs' is {cfg.pairs}, but {cfg.models} models give only "
                         f"{_max_pairs(cfg)} distinct pairs; use --pairs <= {_max_pairs(cfg)} or more --models.")


def _images(ctx):
    n = min(ctx.cfg.similarity_images, len(ctx.data.y_test))
    return np.sort(rng_for(ctx, "images").permutation(len(ctx.data.y_test))[:n])


def _plan(ctx, specs) -> tuple[list, dict]:
    """One job per pair of distinct models."""
    from ._jobs import make_job

    cfg = ctx.cfg
    sites = ctx.sites(True)
    rng = rng_for(ctx, "pairs")
    n = len(specs)
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = [all_pairs[k] for k in rng.choice(len(all_pairs), cfg.pairs, replace=False)]
    basis = cfg.job_basis()
    jobs = [make_job("similarity", f"similarity-p{p}", {"pair": p, "a": specs[i].key, "b": specs[j].key,
                                                        "a_seed": specs[i].seed, "b_seed": specs[j].seed}, basis)
            for p, (i, j) in enumerate(chosen)]
    from ._stitch import _sites_json

    info = {"sites": _sites_json(sites),
            "pairs": [list(c) for c in chosen], "images": int(len(_images(ctx)))}
    return jobs, info


def _run_job(ctx, job) -> dict:
    from ._setup import zoo_model

    cfg, q = ctx.cfg, job.params
    (ma, ra), (mb, rb) = zoo_model(ctx, q["a_seed"], True), zoo_model(ctx, q["b_seed"], True)
    sites = ctx.sites(True)
    idx = _images(ctx)
    x, y = ctx.data.x_test[idx], ctx.data.y_test[idx]
    fns = {m: _measure(m, cfg.activation) for m in cfg.measures}
    L = len(sites)
    mats = {m: np.full((L, L), np.nan) for m in cfg.measures if m in _MATRIX_MEASURES}
    diag = {m: [np.nan] * L for m in cfg.measures}
    for a in range(L):
        A = layer_features(ma, sites[a], x, y, ctx.normalizer)
        for b in range(L):
            if b != a and not mats:
                continue
            B = layer_features(mb, sites[b], x, y, ctx.normalizer)
            for m, fn in fns.items():
                if m in mats:
                    mats[m][a, b] = fn(A, B)
                    if a == b:
                        diag[m][a] = mats[m][a, b]
                elif a == b:
                    diag[m][a] = fn(A, B)
            del B
        del A
    rows = [{"layer": s.name, "layer_index": s.index, "channels": s.channels, "inside_residual": s.inside_residual,
             "measure": m, "pair": q["pair"],
             "model_a_seed": ra["seed"], "model_b_seed": rb["seed"], "value": float(diag[m][k])}
            for m in cfg.measures for k, s in enumerate(sites)]
    return {"rows": rows, "matrices": {m: v.tolist() for m, v in mats.items()}}


def _merge(cfg: ExperimentConfig, info: dict, records: list, results: list) -> dict:
    from ._setup import accuracy_summary, records_in_points

    rows = [r for res in results for r in res["rows"]]
    matrices: dict = {}
    for res in results:
        for m, mat in res["matrices"].items():
            matrices.setdefault(m, []).append(np.asarray(mat, dtype=float))
    return {
        "experiment": "similarity",
        "config": cfg.to_json(),
        "sites": info["sites"],
        "pairs": info["pairs"],
        "images": info["images"],
        "models": records_in_points(records),
        "accuracy": accuracy_summary(records),
        "units": {"value": "similarity, 0 to 1"},
        "rows": rows,
        "summary": summarize(rows, ("layer", "measure"), "value"),
        "matrices": {m: {"mean": np.mean(v, axis=0), "pairs": len(v)} for m, v in matrices.items()},
    }


def run_similarity(cfg: ExperimentConfig) -> dict:
    """Run the similarity sweep in this process; returns the results dictionary (rows:
    layer, measure, value). Same as ``run_experiment(cfg, write=False)``."""
    from ._run import run_experiment

    return run_experiment(cfg, write=False)


def _register():
    from ._registry import ExperimentKind

    return ExperimentKind("similarity", batch_norm=True, n_models=lambda cfg: cfg.models, plan=_plan,
                          job_kind="similarity", run=_run_job, merge=_merge, validate=_validate,
                          summary_key="measure", value="value", unit="similarity, 0 to 1")


SIMILARITY = _register()
