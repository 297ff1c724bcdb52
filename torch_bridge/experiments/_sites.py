"""Activation layers of a model ("sites") and the hooks the experiments attach to them.

A site is one call of an elementwise activation module during the forward pass, named by the
module's qualified name (and ``#k`` for the k-th call when a module is reused). The order of
sites, their channel counts, and which parametrised modules run before each one are read off
one traced forward pass, so any architecture of :mod:`torch_bridge.models` works without a
table of layer indices.

Sites inside a residual block (remark 3.6 of the paper: not on the residual stream, so the
stitching identity of eq. 3.5 does not hold there) are marked ``inside_residual``: a residual
block is a module with a ``shortcut`` or ``downsample`` child, and every site of one call of
it except the last (the activation after the addition) is inside.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

__all__ = ["Site", "find_sites", "channel_map", "site_hook", "capture_site", "modules_after"]

_NOT_ELEMENTWISE = (nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d, nn.MultiheadAttention,
                    nn.GLU, nn.PReLU, nn.AdaptiveLogSoftmaxWithLoss)


def _has_state(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._NormBase) or any(True for _ in m.parameters(recurse=False))


def _is_activation(m: nn.Module) -> bool:
    from ..models import CatalogueActivation

    if isinstance(m, CatalogueActivation):
        return True
    mod = type(m).__module__
    return (mod == "torch.nn.modules.activation" and not isinstance(m, _NOT_ELEMENTWISE)
            and not list(m.children()))


@dataclass(frozen=True)
class Site:
    """One activation call: ``name`` (module name, ``#k`` if reused), ``index`` (order in the
    forward pass), ``channels`` and ``shape`` (of one sample's output), and the names of the
    parametrised leaf modules run before it (``before``)."""

    name: str
    module: str
    call: int
    index: int
    channels: int
    shape: tuple
    before: tuple
    inside_residual: bool = False
    #: the axis of the channels in the output (1: (N, C, ...); -1: tokens (N, T, C))
    channel_axis: int = 1
    #: the residual block a site inside one belongs to (its module name), else None
    residual_block: str | None = None


def find_sites(model: nn.Module, example: torch.Tensor, modules=None) -> list[Site]:
    """The activation sites of ``model`` in forward order, from one pass on ``example``.

    ``modules``: names of the modules whose outputs are the sites instead (e.g. the blocks of
    a transformer: the residual stream after each block); a 3-d output (N, T, C) has its
    channels on the last axis."""
    names = {m: n for n, m in model.named_modules()}
    targets = None if modules is None else set(modules)
    if targets is not None and not targets <= set(names.values()):
        raise ValueError(f"Argument 'modules' names no module {sorted(targets - set(names.values()))[0]!r} of the model.")

    def is_site(mod) -> bool:
        return _is_activation(mod) if targets is None else names[mod] in targets
    order, calls, handles = [], {}, []

    def hook(mod, inp, out):
        name = names[mod]
        if is_site(mod):
            k = calls.get(name, 0)
            calls[name] = k + 1
            order.append(("act", name, k, tuple(out.shape[1:])))
        elif _has_state(mod):
            order.append(("param", name, 0, None))

    for m in model.modules():
        if not list(m.children()) or (targets is not None and names[m] in targets):
            handles.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:2])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    sites, seen = [], []
    for kind, name, k, shape in order:
        if kind == "param":
            if name not in seen:
                seen.append(name)
            continue
        label = name if calls[name] == 1 else f"{name}#{k}"
        axis = -1 if targets is not None and len(shape) == 2 else 1
        sites.append(Site(label, name, k, len(sites), int(shape[axis if axis == -1 else 0]), shape, tuple(seen),
                          channel_axis=axis))
    if not sites:
        raise ValueError("Argument 'model' has no elementwise activation module to act on.")
    inside = _inside_residual(model, sites)
    return [replace(s, inside_residual=s.index in inside, residual_block=inside.get(s.index)) for s in sites]


def _inside_residual(model: nn.Module, sites: list[Site]) -> set:
    """Site index -> residual block name, for the sites that run inside a residual block but
    before its output activation."""
    blocks = [n for n, m in model.named_modules() if n and any(c in ("shortcut", "downsample")
                                                               for c, _ in m.named_children())]
    inside = {}
    for b in blocks:
        # the sites of this block, in forward order, grouped by consecutive runs (one per call)
        runs, last = [], None
        for s in sites:
            if s.module.startswith(b + "."):
                innermost = max((x for x in blocks if s.module.startswith(x + ".")), key=len)
                if innermost != b:
                    continue
                if last is None or s.index != last + 1:
                    runs.append([])
                runs[-1].append(s.index)
                last = s.index
        for run in runs:
            inside.update({k: b for k in run[:-1]})
    return inside


def channel_map(matrix: torch.Tensor, x: torch.Tensor, axis: int = 1) -> torch.Tensor:
    """Apply a (C_out, C_in) matrix to the channel axis (dim 1, or the last with ``axis=-1``)
    of ``x``: a 1x1 convolution (a per-token linear map)."""
    if x.dim() == 2 or axis == -1:
        return x @ matrix.T
    return torch.einsum("oc,nc...->no...", matrix, x)


@contextmanager
def site_hook(model: nn.Module, site: Site, *, pre=None, post=None):
    """Attach ``pre(input) -> input`` and/or ``post(output) -> output`` to one site call."""
    module = dict(model.named_modules())[site.module]
    counter = {"k": 0}
    handles = [model.register_forward_pre_hook(lambda m, a: counter.update(k=0))]

    if pre is not None:
        def pre_hook(m, args):
            if counter["k"] == site.call:
                return (pre(args[0]),) + tuple(args[1:])
            return None
        handles.append(module.register_forward_pre_hook(pre_hook))

    def post_hook(m, args, out):
        k = counter["k"]
        counter["k"] = k + 1
        if k == site.call and post is not None:
            return post(out)
        return None
    handles.append(module.register_forward_hook(post_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Stop(Exception):
    pass


def capture_site(model: nn.Module, site: Site, x: torch.Tensor) -> torch.Tensor:
    """The output of ``site`` on input ``x`` (the rest of the forward pass is skipped)."""
    box = {}

    def grab(out):
        box["out"] = out
        raise _Stop

    with site_hook(model, site, post=grab):
        try:
            model(x)
        except _Stop:
            pass
    if "out" not in box:
        raise RuntimeError(f"Site {site.name!r} was not reached in the forward pass.")
    return box["out"]


def modules_after(model: nn.Module, site: Site) -> list[nn.Module]:
    """Parametrised leaf modules that do not run before ``site`` (the tail of the network)."""
    before = set(site.before)
    return [m for n, m in model.named_modules()
            if not list(m.children()) and n not in before and _has_state(m)]
