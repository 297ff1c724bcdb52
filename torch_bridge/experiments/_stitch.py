"""Model stitching (section 4, figure 1, appendix D.2).

For two frozen models f, f~ of the same architecture and an activation site l, the stitched
network is f~_{>l} ∘ phi ∘ f_{<=l}, with phi a bias-free 1x1 convolution (a linear map for
flat features) that is

* ``full``: any C x C matrix;
* ``rankR``: a product of C x R and R x C matrices (two 1x1 convolutions, appendix D.2);
* ``group``: an element of phi_sigma(G_sigma_C) for the group the engine derives for the
  activation. For a monomial group P D: P is relaxed to the Birkhoff polytope (after every SGD
  step P <- ReLU(P) then ``sinkhorn_iters`` Sinkhorn iterations), the objective gets
  ``-alpha ||P||_F``, D = diag(lambda) is kept in the image phi(S) of the scalings (for ReLU
  lambda >= 0; for tanh lambda in [-1, 1], rounded to signs: signed permutations), D is held
  at the identity for a head start, and at evaluation P is rounded to a permutation by the
  Hungarian algorithm (and lambda to the nearest element of phi(S) where that set is discrete).
  For a general-linear group (a linear activation) the group stitch is the full stitch.

Before testing, the batch-norm statistics of f~'s layers after l are re-estimated on training
data with the final phi. The stitching penalty (eq. 4.3) is
(Acc f + Acc f~) / 2 - Acc(stitched).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._config import ExperimentConfig, summarize
from ._data import batches
from ._setup import accuracy_summary, example_batch, rng_for, setup, zoo_models
from ._sites import Site, capture_site, channel_map, find_sites, modules_after, site_hook

__all__ = ["run_stitch", "StitchConstraint", "stitch_constraint", "sinkhorn", "Stitch"]


@dataclass(frozen=True)
class StitchConstraint:
    """How the ``group`` stitch is constrained, read off the engine's group.

    ``kind``: ``"monomial"`` (P D), ``"full"`` (general linear) or ``"none"`` (no stitch of
    this kind, e.g. an affine or constant activation). For monomial groups the diagonal
    entries lambda live in ``[lo, hi]`` during training; ``values`` (if not None) is the
    finite set phi(S) they are rounded to at evaluation; ``trainable`` is False when phi(S)
    is {1} (permutations only).
    """

    kind: str
    lo: float = 0.0
    hi: float = math.inf
    values: tuple | None = None
    description: str = ""

    @property
    def trainable(self) -> bool:
        return self.values is None or len(self.values) > 1


def stitch_constraint(activation: str, max_power: int = 8) -> StitchConstraint:
    """The constraint of the ``group`` stitch for ``activation`` (see :class:`StitchConstraint`)."""
    from ._sanity import engine_group

    g = engine_group(activation)
    desc = g.describe() if hasattr(g, "describe") else str(g)
    if g.kind == "general_linear":
        return StitchConstraint("full", description=desc)
    if g.kind != "monomial":
        return StitchConstraint("none", description=desc)
    phi = lambda v: np.asarray(g.phi_scalar(np.asarray(v, dtype=float)), dtype=float)  # noqa: E731
    negative = None
    if g.negative_scalings:
        negative = float(g.negative)
    if g.positive_scalings == "all" and abs(float(phi([2.0])[0]) - 1.0) > 1e-9:
        # phi maps (0, oo) onto (0, oo); a negative element flips the sign iff phi(neg) < 0.
        if negative is not None and phi([negative])[0] < 0:
            return StitchConstraint("monomial", -math.inf, math.inf, None, desc)
        return StitchConstraint("monomial", 0.0, math.inf, None, desc)
    if g.positive_scalings == "discrete":
        gen = float(g.generator)
        powers = [gen ** k for k in range(-max_power, max_power + 1)]
    else:
        powers = [1.0]
    elems = powers + ([negative * p for p in powers] if negative is not None else [])
    values = tuple(sorted(set(np.round(phi(elems), 12).tolist())))
    return StitchConstraint("monomial", min(values), max(values), values, desc)


def sinkhorn(P: torch.Tensor, iters: int, eps: float = 1e-12) -> torch.Tensor:
    """``iters`` Sinkhorn iterations: normalise columns, then rows (appendix D.2.1)."""
    for _ in range(iters):
        P = P / (P.sum(0, keepdim=True) + eps)
        P = P / (P.sum(1, keepdim=True) + eps)
    return P


class Stitch(nn.Module):
    """A bias-free channel map of one of the stitching families."""

    def __init__(self, method: str, channels: int, constraint: StitchConstraint | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.method, self.channels = method, channels
        c = channels
        bound = 1.0 / math.sqrt(c)

        def uniform(*shape, b):
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * b)

        if method == "group" and constraint is not None and constraint.kind == "full":
            method = "full"
        self.kind = method
        if method == "full":
            self.weight = uniform(c, c, b=bound)
        elif method.startswith("rank"):
            r = int(method[4:])
            if not 1 <= r <= c:
                raise ValueError(f"Argument 'method' asks for rank {r}, but the layer has {c} channels.")
            self.down = uniform(r, c, b=bound)
            self.up = uniform(c, r, b=1.0 / math.sqrt(r))
        elif method == "group":
            if constraint is None or constraint.kind != "monomial":
                raise ValueError("Argument 'constraint' must be a monomial StitchConstraint for a group stitch.")
            self.constraint = constraint
            noise = torch.rand(c, c, generator=generator) * 0.1
            self.P = nn.Parameter(sinkhorn(torch.full((c, c), 1.0 / c) * (1 + noise), 16))
            self.lam = nn.Parameter(torch.ones(c), requires_grad=constraint.trainable)
            self.rounded = False
        else:
            raise ValueError(f"Argument 'method' must be 'full', 'rankR' or 'group', not {method!r}.")

    def matrix(self) -> torch.Tensor:
        if self.kind == "full":
            return self.weight
        if self.kind.startswith("rank"):
            return self.up @ self.down
        return self.P * self.lam[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_map(self.matrix().to(x.dtype), x)

    def regulariser(self) -> torch.Tensor:
        if self.kind == "group" and not self.rounded:
            return -torch.linalg.norm(self.P)
        return torch.zeros(())

    @torch.no_grad()
    def project(self, iters: int) -> None:
        """The projection step after each SGD step (group stitches only)."""
        if self.kind != "group":
            return
        self.P.copy_(sinkhorn(self.P.clamp(min=0), iters))
        self.lam.clamp_(self.constraint.lo, self.constraint.hi)

    @torch.no_grad()
    def round(self) -> None:
        """Hungarian rounding of P to a permutation; lambda to the nearest value of phi(S)."""
        if self.kind != "group":
            return
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(self.P.detach().cpu().double().numpy(), maximize=True)
        P = torch.zeros_like(self.P)
        P[torch.as_tensor(rows), torch.as_tensor(cols)] = 1.0
        self.P.copy_(P)
        if self.constraint.values is not None:
            vals = torch.as_tensor(self.constraint.values, dtype=self.lam.dtype, device=self.lam.device)
            self.lam.copy_(vals[(self.lam[:, None] - vals[None, :]).abs().argmin(1)])
        self.rounded = True


class _Stitched:
    """f~_{>l} ∘ stitch ∘ f_{<=l} as a callable; hooks stay attached inside ``with``."""

    def __init__(self, front: nn.Module, back: nn.Module, site: Site, stitch: Stitch):
        self.front, self.back, self.site, self.stitch = front, back, site, stitch
        self.box = {}

    def __enter__(self):
        self._cm = site_hook(self.back, self.site, post=lambda out: self.stitch(self.box.pop("h")))
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.box["h"] = capture_site(self.front, self.site, x)
        return self.back(x)


def _tail_norms(model: nn.Module, site: Site) -> list[nn.Module]:
    return [m for m in modules_after(model, site) if isinstance(m, nn.modules.batchnorm._NormBase)]


@torch.no_grad()
def _reestimate_bn(stitched: _Stitched, norms, ctx, n_images) -> None:
    """Reset and re-estimate the running statistics of the tail's batch norms (appendix D.2.1)."""
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
        m.train()
    x, y = ctx.data.x_train, ctx.data.y_train
    if n_images is not None and n_images < len(y):
        idx = np.sort(np.random.default_rng(0).permutation(len(y))[:n_images])
        x, y = x[idx], y[idx]
    for xb, _ in batches(x, y, 250, ctx.normalizer):
        stitched(xb)
    for m in norms:
        m.eval()


@torch.no_grad()
def _accuracy(stitched: _Stitched, ctx) -> float:
    correct = 0
    for xb, yb in batches(ctx.data.x_test, ctx.data.y_test, 500, ctx.normalizer):
        correct += int((stitched(xb).argmax(1) == yb).sum())
    return correct / len(ctx.data.y_test)


def train_stitch(front: nn.Module, back: nn.Module, site: Site, method: str, ctx, *, seed: int,
                 constraint: StitchConstraint | None = None) -> tuple[float, dict]:
    """Train one stitching layer and return (test accuracy of the stitched net, info)."""
    cfg = ctx.cfg
    back = copy.deepcopy(back).eval()
    front = front.eval()
    gen = torch.Generator().manual_seed(seed)
    stitch = Stitch(method, site.channels, constraint, generator=gen).to(ctx.device)
    norms = _tail_norms(back, site)
    params = [p for p in stitch.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.stitch_lr, momentum=cfg.stitch_momentum)
    x, y = ctx.data.x_train, ctx.data.y_train
    if cfg.stitch_n_train is not None and cfg.stitch_n_train < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:cfg.stitch_n_train])
        x, y = x[idx], y[idx]
    steps_per_epoch = -(-len(y) // cfg.stitch_batch_size)
    total = cfg.stitch_epochs * steps_per_epoch
    head = int(cfg.head_start * total) if stitch.kind == "group" else 0
    loss_fn = nn.CrossEntropyLoss()
    step, last_loss = 0, float("nan")
    with _Stitched(front, back, site, stitch) as stitched:
        for m in norms:
            m.train()
        for epoch in range(cfg.stitch_epochs):
            for xb, yb in batches(x, y, cfg.stitch_batch_size, ctx.normalizer, shuffle=True,
                                  augment_with=(ctx.data.shift, ctx.data.flips), generator=gen):
                loss = loss_fn(stitched(xb), yb)
                obj = loss + cfg.alpha * stitch.regulariser().to(loss.device) if stitch.kind == "group" else loss
                opt.zero_grad(set_to_none=True)
                obj.backward()
                if step < head and stitch.kind == "group" and stitch.lam.grad is not None:
                    stitch.lam.grad = None  # the head start: D stays at the identity
                opt.step()
                stitch.project(cfg.sinkhorn_iters)
                step += 1
                last_loss = float(loss.detach())
        for m in norms:
            m.eval()
        relaxed_acc = None
        if stitch.kind == "group":
            relaxed_acc = _accuracy(stitched, ctx) if cfg.eval_relaxed else None
            stitch.round()
        _reestimate_bn(stitched, norms, ctx, cfg.bn_images)
        acc = _accuracy(stitched, ctx)
    return acc, {"train_loss": last_loss, "acc_relaxed_before_rounding": relaxed_acc, "steps": step}


def run_stitch(cfg: ExperimentConfig) -> dict:
    """Run the stitching experiment; returns the results dictionary (rows: layer, method, penalty)."""
    t0 = time.time()
    ctx = setup(cfg)
    models, records = zoo_models(ctx, cfg.models, batch_norm=True)
    sites = find_sites(models[0], example_batch(ctx))
    constraint = stitch_constraint(cfg.activation) if "group" in cfg.methods else None
    rng = rng_for(ctx, "pairs")
    all_pairs = [(i, j) for i in range(len(models)) for j in range(len(models)) if i != j]
    if cfg.pairs <= len(all_pairs):
        chosen = [all_pairs[k] for k in rng.choice(len(all_pairs), cfg.pairs, replace=False)]
    else:  # sampled with replacement, as in the paper's bootstrap
        chosen = [all_pairs[k] for k in rng.choice(len(all_pairs), cfg.pairs, replace=True)]
    methods = [m for m in cfg.methods
               if not (m == "group" and constraint is not None and constraint.kind == "none")]
    rows = []
    from tqdm.auto import tqdm

    jobs = [(p, s, m) for p in range(len(chosen)) for s in sites for m in methods]
    for p, site, method in tqdm(jobs, desc="stitch", disable=not cfg.progress):
        i, j = chosen[p]
        if method.startswith("rank") and int(method[4:]) > site.channels:
            continue
        acc, info = train_stitch(models[i], models[j], site, method, ctx,
                                 seed=int(rng_for(ctx, "stitch", p, site.name, method).integers(2 ** 31)),
                                 constraint=constraint)
        base = (records[i]["test_acc"] + records[j]["test_acc"]) / 2
        rows.append({"layer": site.name, "layer_index": site.index, "channels": site.channels, "method": method,
                     "pair": p, "front_seed": records[i]["seed"], "back_seed": records[j]["seed"],
                     "penalty": base - acc, "acc_stitched": acc, "acc_models_mean": base, **info})
    return {
        "experiment": "stitch",
        "config": cfg.to_json(),
        "group": None if constraint is None else {"kind": constraint.kind, "lo": constraint.lo, "hi": constraint.hi,
                                                  "values": constraint.values, "description": constraint.description},
        "sites": [{"layer": s.name, "index": s.index, "channels": s.channels, "shape": list(s.shape)} for s in sites],
        "pairs": [list(c) for c in chosen],
        "models": records,
        "accuracy": accuracy_summary(records),
        "rows": rows,
        "summary": summarize(rows, ("layer", "method"), "penalty"),
        "elapsed_s": time.time() - t0,
    }
