"""The similarity sweep (section 5, table 2, figures 2 and 5): layerwise measures of
:mod:`torch_bridge.similarity` between pairs of models trained from different seeds.

Same-layer rows (``layer``, ``measure``, ``value``) reproduce table 2; for the CKA measures
the full layer-by-layer matrix of each pair is also computed (figures 2 and 5).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ._config import ExperimentConfig, summarize
from ._data import batches
from ._setup import accuracy_summary, example_batch, rng_for, setup, zoo_models
from ._sites import find_sites, site_hook

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
    """The outputs of every site on the images ``x`` (eval mode), as CPU float32 tensors."""
    from contextlib import ExitStack

    store = [[] for _ in sites]
    model.eval()
    with ExitStack() as stack:
        for k, s in enumerate(sites):
            stack.enter_context(site_hook(model, s, post=lambda out, k=k: store[k].append(out.detach().cpu()) or out))
        for xb, _ in batches(x, y, batch_size, normalizer):
            model(xb)
    return [torch.cat(parts) for parts in store]


def _measure(name: str, activation: str):
    from .. import similarity

    fname, grouped = MEASURES[name]
    fn = getattr(similarity, fname)
    if grouped:
        return lambda X, Y: float(fn(X, Y, group=activation))
    return lambda X, Y: float(fn(X, Y))


def run_similarity(cfg: ExperimentConfig) -> dict:
    """Run the similarity sweep; returns the results dictionary (rows: layer, measure, value)."""
    t0 = time.time()
    for m in cfg.measures:
        if m not in MEASURES:
            raise ValueError(f"Argument 'measures' holds {m!r}; expected one of {tuple(MEASURES)}.")
    ctx = setup(cfg)
    models, records = zoo_models(ctx, cfg.models, batch_norm=True)
    sites = find_sites(models[0], example_batch(ctx))
    rng = rng_for(ctx, "pairs")
    all_pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
    replace = cfg.pairs > len(all_pairs)
    chosen = [all_pairs[k] for k in rng.choice(len(all_pairs), cfg.pairs, replace=replace)]
    n = min(cfg.similarity_images, len(ctx.data.y_test))
    idx = np.sort(rng_for(ctx, "images").permutation(len(ctx.data.y_test))[:n])
    x, y = ctx.data.x_test[idx], ctx.data.y_test[idx]
    feats = {}
    for i in sorted({k for pair in chosen for k in pair}):
        feats[i] = site_features(models[i], sites, x, y, ctx.normalizer)
    fns = {m: _measure(m, cfg.activation) for m in cfg.measures}
    rows, matrices = [], {}
    from tqdm.auto import tqdm

    jobs = [(p, m) for p in range(len(chosen)) for m in cfg.measures]
    for p, m in tqdm(jobs, desc="similarity", disable=not cfg.progress):
        i, j = chosen[p]
        A, B = feats[i], feats[j]
        if m in _MATRIX_MEASURES:
            mat = np.array([[fns[m](A[a], B[b]) for b in range(len(sites))] for a in range(len(sites))])
            matrices.setdefault(m, []).append(mat)
            diag = np.diag(mat)
        else:
            diag = [fns[m](A[k], B[k]) for k in range(len(sites))]
        for k, s in enumerate(sites):
            rows.append({"layer": s.name, "layer_index": s.index, "channels": s.channels, "measure": m,
                         "pair": p, "model_a_seed": records[i]["seed"], "model_b_seed": records[j]["seed"],
                         "value": float(diag[k])})
    return {
        "experiment": "similarity",
        "config": cfg.to_json(),
        "sites": [{"layer": s.name, "index": s.index, "channels": s.channels, "shape": list(s.shape)} for s in sites],
        "pairs": [list(c) for c in chosen],
        "images": int(n),
        "models": records,
        "accuracy": accuracy_summary(records),
        "rows": rows,
        "summary": summarize(rows, ("layer", "measure"), "value"),
        "matrices": {m: {"mean": np.mean(v, axis=0), "pairs": len(v)} for m, v in matrices.items()},
        "elapsed_s": time.time() - t0,
    }
