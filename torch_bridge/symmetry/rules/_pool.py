"""Pooling, upsampling and reductions.

Average pooling and upsampling commute with every linear map of the channels; max-pooling
with permutations and positive scalings only (max(-x) = -min(x)). A reduction over other
dimensions keeps the units; over the units: a sum or mean is invariant under permutations
(``g 1 = 1``), a sum of squares (``mean(x ** 2)``, RMS norm) or a vector norm under O(n).
"""

from __future__ import annotations

import torch

from .._activations import positive_scalings
from .._trace import FIXED, Constraint, Rep, Square
from . import rule

aten = torch.ops.aten

_MAX = [aten.max_pool1d.default, aten.max_pool2d.default, aten.max_pool3d.default, aten.adaptive_max_pool1d.default,
        aten.adaptive_max_pool2d.default, aten.adaptive_max_pool3d.default]
_AVG = [aten.avg_pool1d.default, aten.avg_pool2d.default, aten.avg_pool3d.default, aten.adaptive_avg_pool1d.default,
        aten.adaptive_avg_pool2d.default, aten.adaptive_avg_pool3d.default, aten.upsample_nearest1d.vec,
        aten.upsample_nearest2d.vec, aten.upsample_nearest3d.vec, aten.upsample_bilinear2d.vec,
        aten.upsample_linear1d.vec, aten.upsample_bicubic2d.vec, aten.upsample_trilinear3d.vec,
        getattr(aten, "_adaptive_avg_pool2d").default]
_K = {"1d": 1, "2d": 2, "3d": 3}


def _spatial(node):
    name = node.target.overloadpacket.__name__
    return next((k for s, k in _K.items() if s in name), None)


@rule(*_MAX, *_AVG, aten.max_pool2d_with_indices.default)
def pool(ctx, node):
    x = ctx.rep(node.args[0])
    if not isinstance(x, Rep):
        return x
    nd = len(ctx.shape(node.args[0]))
    k = _spatial(node) or nd - 2
    if x.dim >= nd - k or x.dim < 1 or x.heads is not None:
        return ctx.refuse(node, "pooling over the hidden axis")
    if x.repeat != 1:
        return ctx.refuse(node, "pooling a flattened tensor")
    if node.target is aten.max_pool2d_with_indices.default:
        return ctx.refuse(node, "max-pooling with return_indices")
    if node.target in _MAX:
        ctx.monomial(x, "max-pooling", positive_scalings("max-pooling"))
    return x


def _dims(node, nd, pos=1):
    dims = node.args[pos] if len(node.args) > pos else node.kwargs.get("dim", None)
    if dims is None:
        return set(range(nd))
    return {d % nd for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}


def _keep(node, pos=2):
    return bool(node.args[pos] if len(node.args) > pos else node.kwargs.get("keepdim", False))


def _reduced(x: Rep, dims, keep):
    from dataclasses import replace

    if keep:
        return x
    shift = lambda d: d - sum(1 for e in dims if e < d)  # noqa: E731
    return replace(x, dim=shift(x.dim), inner=None if x.inner is None else shift(x.inner))


@rule(aten.mean.dim, aten.sum.dim_IntList, aten.mean.default, aten.sum.default, aten.amax.default, aten.max.dim,
      aten.amin.default)
def reduce(ctx, node):
    v = ctx.value(node.args[0])
    nd = len(ctx.shape(node.args[0]))
    dims = _dims(node, nd) if node.target not in (aten.mean.default, aten.sum.default) else set(range(nd))
    keep = _keep(node) if node.target not in (aten.mean.default, aten.sum.default) else False
    maximum = node.target in (aten.amax.default, aten.max.dim, aten.amin.default)
    if isinstance(v, Square):
        x = v.rep
        if {x.dim} <= dims and x.heads is None and not maximum and x.repeat == 1 and dims == {x.dim}:
            # sum of squares over the units: invariant under O(n) exactly
            ctx.constrain(x, Constraint("orthogonal", "sum of squares over the units (RMS norm)"))
            return FIXED
        v = ctx.rep(node.args[0])
    x = v
    if not isinstance(x, Rep):
        return x
    if node.target is aten.max.dim:
        return ctx.refuse(node, "max with indices")
    if x.dim in dims or (x.inner is not None and x.inner in dims):
        # summing or maximising over the units: invariant under permutations only
        if x.heads is not None:
            return ctx.refuse(node, "a reduction over head-split units")
        ctx.permutations_only(x, "reduction over the hidden axis")
        return FIXED
    if maximum:
        ctx.monomial(x, "max over other dimensions", positive_scalings("max-pooling"))
    return _reduced(x, dims, keep)


@rule(aten.linalg_vector_norm.default)
def vector_norm(ctx, node):
    x = ctx.rep(node.args[0])
    if not isinstance(x, Rep):
        return x
    nd = len(ctx.shape(node.args[0]))
    order = node.args[1] if len(node.args) > 1 else node.kwargs.get("ord", 2)
    dims = _dims(node, nd, 2)
    keep = _keep(node, 3)
    if x.dim in dims:
        if order == 2 and dims == {x.dim} and x.heads is None and x.repeat == 1:
            ctx.constrain(x, Constraint("orthogonal", "Euclidean norm over the units"))
        else:
            ctx.permutations_only(x, "norm over the hidden axis")
            if x.heads is not None:
                return ctx.refuse(node, "a norm over head-split units")
        return FIXED
    return _reduced(x, dims, keep)


@rule(aten.rsqrt.default, aten.sqrt.default, aten.reciprocal.default)
def invariant_only(ctx, node):
    """rsqrt/sqrt/reciprocal of a hidden tensor is not an activation the analysis follows;
    of an invariant (a norm) the result is invariant."""
    x = ctx.rep(node.args[0])
    if isinstance(x, Rep):
        return ctx.refuse(node, f"{node.target.overloadpacket.__name__} of hidden units")
    return FIXED
