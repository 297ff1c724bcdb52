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
* ``softsort``: P D with P relaxed by SoftSort (appendix D.2.2, [PE20]):
  P = softmax_rows(-|sort(s) 1^T - 1 s^T| / tau), tau = 1 / C unless configured; D = diag(e^lambda)
  where phi(S) is (0, oo), otherwise lambda in the interval of phi(S) as for ``group``. At
  evaluation P is the hard permutation (arg max over rows, i.e. the argsort of s).

Before testing, the batch-norm statistics of f~'s layers after l are re-estimated on training
data with the final phi. The stitching penalty (eq. 4.3) is
(Acc f + Acc f~) / 2 - Acc(stitched).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._config import ExperimentConfig, summarize
from ._data import batches
from ._setup import rng_for
from ._sites import Site, capture_site, channel_map, modules_after, site_hook

__all__ = ["run_stitch", "StitchConstraint", "stitch_constraint", "sinkhorn", "Stitch", "sparsity", "train_stitch"]


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
    shared: bool = False  # one scalar for all channels: {c P} (the residual stream of a transformer)

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


def group_constraint(ctx) -> StitchConstraint:
    """The ``group`` stitch's constraint at the sites of ``ctx``: the engine's group of the
    activation, or for a transformer (whose sites are the residual stream) the group the
    torch bridge derives for the residual stream (:mod:`._transformer`)."""
    if ctx.cfg.arch == "vit":
        from ._transformer import residual_constraint

        return residual_constraint(ctx)
    return stitch_constraint(ctx.cfg.activation)


def sinkhorn(P: torch.Tensor, iters: int, eps: float = 1e-12) -> torch.Tensor:
    """``iters`` Sinkhorn iterations: normalise columns, then rows (appendix D.2.1)."""
    for _ in range(iters):
        P = P / (P.sum(0, keepdim=True) + eps)
        P = P / (P.sum(1, keepdim=True) + eps)
    return P


class Stitch(nn.Module):
    """A bias-free channel map of one of the stitching families."""

    def __init__(self, method: str, channels: int, constraint: StitchConstraint | None = None,
                 generator: torch.Generator | None = None, tau: float | None = None, axis: int = 1):
        super().__init__()
        self.method, self.channels, self.axis = method, channels, axis
        c = channels
        bound = 1.0 / math.sqrt(c)

        def uniform(*shape, b):
            return nn.Parameter((torch.rand(*shape, generator=generator) * 2 - 1) * b)

        if method in ("group", "softsort") and constraint is not None and constraint.kind == "full":
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
            # one scalar for every channel where the group is {c P} (a layer norm's input)
            self.lam = nn.Parameter(torch.ones(1 if constraint.shared else c), requires_grad=constraint.trainable)
            self.rounded = False
        elif method == "softsort":
            if constraint is None or constraint.kind != "monomial":
                raise ValueError("Argument 'constraint' must be a monomial StitchConstraint for a softsort stitch.")
            self.constraint = constraint
            self.tau = float(tau) if tau is not None else 1.0 / c
            self.s = nn.Parameter(torch.randn(c, generator=generator))
            # D = diag(exp(lambda)) where phi(S) = (0, oo) (appendix D.2.2); else lambda itself, clamped
            self.log_scale = constraint.lo == 0.0 and constraint.hi == math.inf
            n = 1 if constraint.shared else c
            self.lam = nn.Parameter(torch.zeros(n) if self.log_scale else torch.ones(n),
                                    requires_grad=constraint.trainable)
            self.rounded = False
        else:
            raise ValueError(f"Argument 'method' must be 'full', 'rankR', 'group' or 'softsort', not {method!r}.")

    def matrix(self) -> torch.Tensor:
        if self.kind == "full":
            return self.weight
        if self.kind.startswith("rank"):
            return self.up @ self.down
        if self.kind == "softsort":
            d = self.lam.exp() if self.log_scale else self.lam
            return self.softsort_p() * d[None, :]
        return self.P * self.lam[None, :]

    def softsort_p(self) -> torch.Tensor:
        """SoftSort(s, tau) (rows: sort(s) descending), or its hard permutation once rounded."""
        srt = torch.sort(self.s, descending=True).values
        if self.rounded:
            return torch.nn.functional.one_hot(torch.argsort(self.s, descending=True), self.channels).to(self.s.dtype)
        return torch.softmax(-(srt[:, None] - self.s[None, :]).abs() / self.tau, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_map(self.matrix().to(x.dtype), x, self.axis)

    def regulariser(self) -> torch.Tensor:
        if self.kind == "group" and not self.rounded:
            return -torch.linalg.norm(self.P)
        return torch.zeros(())

    @torch.no_grad()
    def project(self, iters: int) -> None:
        """The projection step after each SGD step (group and softsort stitches)."""
        if self.kind == "softsort":
            if not self.log_scale:
                self.lam.clamp_(self.constraint.lo, self.constraint.hi)
            return
        if self.kind != "group":
            return
        self.P.copy_(sinkhorn(self.P.clamp(min=0), iters))
        self.lam.clamp_(self.constraint.lo, self.constraint.hi)

    @torch.no_grad()
    def round(self) -> None:
        """Hungarian rounding of P to a permutation; lambda to the nearest value of phi(S)
        (softsort: P becomes the arg max permutation of its rows)."""
        if self.kind == "softsort":
            if not self.log_scale and self.constraint.values is not None:
                vals = torch.as_tensor(self.constraint.values, dtype=self.lam.dtype, device=self.lam.device)
                self.lam.copy_(vals[(self.lam[:, None] - vals[None, :]).abs().argmin(1)])
            self.rounded = True
            return
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
    """f~_{>l} ∘ stitch ∘ f_{<=l} as a callable; hooks stay attached inside ``with``.

    At a site inside a residual block every layer up to the site is f's, the shortcut of that
    block included (eq. E.54 of the paper): f~'s block receives f's block input, so its
    shortcut carries f's residual stream, not f~'s own."""

    def __init__(self, front: nn.Module, back: nn.Module, site: Site, stitch: Stitch):
        self.front, self.back, self.site, self.stitch = front, back, site, stitch
        self.box = {}
        self._handle = None

    def __enter__(self):
        self._cm = site_hook(self.back, self.site, post=lambda out: self.stitch(self.box.pop("h")))
        self._cm.__enter__()
        if self.site.residual_block is not None:
            block = dict(self.back.named_modules())[self.site.residual_block]
            self._handle = block.register_forward_pre_hook(
                lambda m, args: (self.box.pop("skip"),) + tuple(args[1:]))
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return self._cm.__exit__(*exc)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if self.site.residual_block is None:
                self.box["h"] = capture_site(self.front, self.site, x)
            else:
                block = dict(self.front.named_modules())[self.site.residual_block]
                handle = block.register_forward_pre_hook(lambda m, args: self.box.__setitem__("skip", args[0]))
                try:
                    self.box["h"] = capture_site(self.front, self.site, x)
                finally:
                    handle.remove()
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
def _accuracy(stitched: _Stitched, ctx, x=None, y=None) -> float:
    """Accuracy of ``stitched`` on ``(x, y)`` (default: the test set), as a fraction."""
    if x is None:
        x, y = ctx.data.x_test, ctx.data.y_test
    correct = 0
    for xb, yb in batches(x, y, 500, ctx.normalizer):
        correct += int((stitched(xb).argmax(1) == yb).sum())
    return correct / len(y)


def sparsity(matrix: torch.Tensor, threshold: float) -> float:
    """Eq. D.1: the fraction of entries of the C x C stitching matrix with ``|W_ij| <= threshold``.

    >>> sparsity(torch.eye(4), 1e-3)  # a permutation: 1 - 1/C
    0.75
    """
    return float((matrix.detach().abs() <= threshold).double().mean())


def train_stitch(front: nn.Module, back: nn.Module, site: Site, method: str, ctx, *, seed: int,
                 constraint: StitchConstraint | None = None, l1: float = 0.0, alpha: float | None = None,
                 head_start: float | None = None, epochs: int | None = None, train_idx=None,
                 val_idx=None) -> tuple[float, dict]:
    """Train one stitching layer and return (test accuracy of the stitched net, info).

    The options default to the configuration: ``l1`` adds ``l1 * sum |W_ij|`` to the objective
    (appendix D.6); ``alpha`` and ``head_start`` replace ``cfg.alpha`` and ``cfg.head_start``;
    ``epochs`` replaces ``cfg.stitch_epochs``; ``train_idx`` restricts the training images
    (before the ``stitch_n_train`` subsample) and ``val_idx`` adds the accuracy on those
    training images to the info (``acc_val``, for cross-validation, appendix D.5). The info
    also holds the final matrix's ``sparsity`` (eq. D.1, threshold ``cfg.sparsity_threshold``).
    """
    cfg = ctx.cfg
    alpha = cfg.alpha if alpha is None else alpha
    head_start = cfg.head_start if head_start is None else head_start
    epochs = cfg.stitch_epochs if epochs is None else int(epochs)
    back = copy.deepcopy(back).eval()
    front = front.eval()
    gen = torch.Generator().manual_seed(seed)
    stitch = Stitch(method, site.channels, constraint, generator=gen, tau=cfg.softsort_tau,
                    axis=site.channel_axis).to(ctx.device)
    norms = _tail_norms(back, site)
    params = [p for p in stitch.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.stitch_lr, momentum=cfg.stitch_momentum)
    x, y = ctx.data.x_train, ctx.data.y_train
    if train_idx is not None:
        x, y = x[train_idx], y[train_idx]
    if cfg.stitch_n_train is not None and cfg.stitch_n_train < len(y):
        idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:cfg.stitch_n_train])
        x, y = x[idx], y[idx]
    steps_per_epoch = -(-len(y) // cfg.stitch_batch_size)
    total = epochs * steps_per_epoch
    monomial = stitch.kind in ("group", "softsort")
    head = int(head_start * total) if monomial else 0
    loss_fn = nn.CrossEntropyLoss()
    step, last_loss = 0, float("nan")
    with _Stitched(front, back, site, stitch) as stitched:
        for m in norms:
            m.train()
        for epoch in range(epochs):
            for xb, yb in batches(x, y, cfg.stitch_batch_size, ctx.normalizer, shuffle=True,
                                  augment_with=(ctx.data.shift, ctx.data.flips), generator=gen):
                loss = loss_fn(stitched(xb), yb)
                obj = loss + alpha * stitch.regulariser().to(loss.device) if stitch.kind == "group" else loss
                if l1:
                    obj = obj + l1 * stitch.matrix().abs().sum()
                opt.zero_grad(set_to_none=True)
                obj.backward()
                if step < head and monomial and stitch.lam.grad is not None:
                    stitch.lam.grad = None  # the head start: D stays at the identity
                opt.step()
                stitch.project(cfg.sinkhorn_iters)
                step += 1
                last_loss = float(loss.detach())
        for m in norms:
            m.eval()
        relaxed_acc = None
        if monomial:
            relaxed_acc = _accuracy(stitched, ctx) if cfg.eval_relaxed else None
            stitch.round()
        _reestimate_bn(stitched, norms, ctx, cfg.bn_images)
        acc = _accuracy(stitched, ctx)
        info = {"train_loss": last_loss, "acc_relaxed_before_rounding": relaxed_acc, "steps": step,
                "sparsity": sparsity(stitch.matrix(), cfg.sparsity_threshold)}
        if val_idx is not None:
            info["acc_val"] = _accuracy(stitched, ctx, ctx.data.x_train[val_idx], ctx.data.y_train[val_idx])
    return acc, info


def _max_pairs(cfg: ExperimentConfig) -> int:
    return cfg.models * (cfg.models - 1)  # ordered pairs (front, back) of distinct models


def _validate(cfg: ExperimentConfig) -> None:
    if cfg.pairs > _max_pairs(cfg):
        raise ValueError(f"Argument 'pairs' is {cfg.pairs}, but {cfg.models} models give only "
                         f"{_max_pairs(cfg)} distinct ordered pairs; use --pairs <= {_max_pairs(cfg)} "
                         f"or more --models.")


def _group_info(constraint):
    if constraint is None:
        return None
    return {"kind": constraint.kind, "lo": constraint.lo, "hi": constraint.hi, "values": constraint.values,
            "shared": constraint.shared, "description": constraint.description}


def _plan(ctx, specs) -> tuple[list, dict]:
    """One job per (pair, site, method); pairs are distinct ordered pairs of models."""
    from ._jobs import make_job

    cfg = ctx.cfg
    sites = ctx.sites(True)
    constraint = group_constraint(ctx) if {"group", "softsort"} & set(cfg.methods) else None
    rng = rng_for(ctx, "pairs")
    n = len(specs)
    all_pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    chosen = [all_pairs[k] for k in rng.choice(len(all_pairs), cfg.pairs, replace=False)]
    methods = [m for m in cfg.methods
               if not (m in ("group", "softsort") and constraint is not None and constraint.kind == "none")]
    basis = cfg.job_basis()
    jobs = []
    for p, (i, j) in enumerate(chosen):
        for site in sites:
            for method in methods:
                if method.startswith("rank") and int(method[4:]) > site.channels:
                    continue
                params = {"pair": p, "front": specs[i].key, "back": specs[j].key, "front_seed": specs[i].seed,
                          "back_seed": specs[j].seed, "site": site.name, "method": method,
                          "seed": int(rng_for(ctx, "stitch", p, site.name, method).integers(2 ** 31))}
                if site.residual_block is not None:  # eq. E.54 (results before it kept back's own shortcut)
                    params["shortcut_from"] = "front"
                jobs.append(make_job("stitch", f"stitch-p{p}-{site.name}-{method}", params, basis))
    info = {"sites": _sites_json(sites), "pairs": [list(c) for c in chosen], "group": _group_info(constraint)}
    return jobs, info


def _sites_json(sites) -> list:
    return [{"layer": s.name, "index": s.index, "channels": s.channels, "shape": list(s.shape),
             "inside_residual": s.inside_residual} for s in sites]


def _run_job(ctx, job) -> dict:
    from ._setup import zoo_model

    q = job.params
    front, rf = zoo_model(ctx, q["front_seed"], True)
    back, rb = zoo_model(ctx, q["back_seed"], True)
    site = ctx.site(q["site"], True)
    constraint = group_constraint(ctx) if q["method"] in ("group", "softsort") else None
    acc, info = train_stitch(front, back, site, q["method"], ctx, seed=q["seed"], constraint=constraint)
    base = (rf["test_acc"] + rb["test_acc"]) / 2
    relaxed = info.pop("acc_relaxed_before_rounding")
    return {"layer": site.name, "layer_index": site.index, "channels": site.channels,
            "inside_residual": site.inside_residual, "method": q["method"],
            "pair": q["pair"], "front_seed": rf["seed"], "back_seed": rb["seed"],
            "penalty": 100.0 * (base - acc), "acc_stitched": 100.0 * acc, "acc_models_mean": 100.0 * base,
            "acc_relaxed_before_rounding": None if relaxed is None else 100.0 * relaxed, **info}


def _merge(cfg: ExperimentConfig, info: dict, records: list, results: list) -> dict:
    from ._setup import accuracy_summary, records_in_points

    rows = list(results)
    return {
        "experiment": "stitch",
        "config": cfg.to_json(),
        "group": info["group"],
        "sites": info["sites"],
        "pairs": info["pairs"],
        "models": records_in_points(records),
        "accuracy": accuracy_summary(records),
        "units": {k: "accuracy points" for k in ("penalty", "acc_stitched", "acc_models_mean",
                                                 "acc_relaxed_before_rounding")},
        "rows": rows,
        "summary": summarize(rows, ("layer", "method"), "penalty"),
    }


def run_stitch(cfg: ExperimentConfig) -> dict:
    """Run the stitching experiment in this process; returns the results dictionary (rows:
    layer, method, penalty in accuracy points). Same as ``run_experiment(cfg, write=False)``."""
    from ._run import run_experiment

    return run_experiment(cfg, write=False)


def _register():
    from ._registry import ExperimentKind

    return ExperimentKind("stitch", batch_norm=True, n_models=lambda cfg: cfg.models, plan=_plan,
                          job_kind="stitch", run=_run_job, merge=_merge, validate=_validate, summary_key="method")


STITCH = _register()
