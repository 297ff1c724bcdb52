"""Normalisation layers in the ATen forms torch.export produces: batch norm (eq. E.47), layer
norm, RMS norm (``aten.rms_norm``; the hand-written pow/mean/rsqrt form is recognised by the
rules of ``_elementwise`` and ``_pool``), group and instance norm.

No scaling is ever claimed through a normalisation with eps > 0 other than what its own
statistics absorb (batch norm's running statistics): LN(D x) != D LN(x) for non-uniform D.
"""

from __future__ import annotations

import torch

from .._activations import all_scalings, positive_scalings, sign_scalings, trivial_scalings
from .._trace import FIXED, Constraint, Rep, sub_segs
from . import rule

aten = torch.ops.aten


def _p(ctx, arg):
    if arg is None:
        return None
    return ctx.param(arg)


def _channel_input(ctx, node, x, what):
    if isinstance(x, Rep) and (x.dim != 1 or x.repeat != 1 or x.heads is not None or x.scalar):
        ctx.refuse(node, f"{what} over a dimension other than the hidden axis")
        return "refused"
    return x


@rule(aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default, reads_params=True)
def batch_norm(ctx, node):
    a = list(node.args)
    x = ctx.rep(a[0])
    if node.target is aten.batch_norm.default:
        wn, bn, mn, vn, training, eps = a[1], a[2], a[3], a[4], a[5], a[7]
    else:
        wn, bn, mn, vn, eps = a[1], a[2], a[3], a[4], a[6]
        training = False
    x = _channel_input(ctx, node, x, "batch norm")
    if x == "refused":
        return FIXED
    w, b, m, v = _p(ctx, wn), _p(ctx, bn), _p(ctx, mn), _p(ctx, vn)
    if (wn is not None and w is None) or (bn is not None and b is None):
        return ctx.refuse(node, "batch-norm affine parameters that are not parameters of the model")
    stats = m is not None and v is not None and not training
    if not stats and (mn is not None or vn is not None) and not training:
        # constant statistics that are not buffers of the model: nothing can move them
        ctx.freeze(x, "batch norm with constant statistics")
        return FIXED
    out = ctx.new_axis(ctx.shape(node)[1], 1)
    if isinstance(x, Rep):
        ctx.tie(x, out, "perm", "batch norm")
        # eq. E.47: the running statistics absorb any non-zero scaling of the input
        ctx.monomial(x, "batch-norm input", all_scalings("batch-norm input"))
        if not stats:
            # batch statistics: (s x - s m) / sqrt(s^2 v + eps) is exact only for s = +-1
            ctx.monomial(x, "batch norm without running statistics", sign_scalings("batch norm without running statistics"))
        if w is None:
            ctx.monomial(x, "batch norm without affine", positive_scalings("batch norm without affine"))
    else:
        ctx.freeze(out, "batch norm of a fixed input")
    if w is None:
        ctx.monomial(out, "batch norm without affine", trivial_scalings("batch norm without affine"))
    else:
        ctx.monomial(out, "batch-norm output")
        ctx.bind(w.fqn, 0, out, "bn_gamma", other=x if isinstance(x, Rep) else None)
        ctx.bind(b.fqn, 0, out, "co")
    if stats and isinstance(x, Rep):
        ctx.bind(m.fqn, 0, x, "co")
        ctx.bind(v.fqn, 0, x, "bn_var", other=float(eps))
    return out


@rule(aten.layer_norm.default, reads_params=True)
def layer_norm(ctx, node):
    a = list(node.args) + [None] * 5
    x = ctx.rep(a[0])
    shape, wn, bn = a[1], a[2], a[3]
    nd = len(ctx.shape(a[0]))
    if not isinstance(x, Rep):
        out = ctx.new_axis(shape[-1], nd - 1) if wn is not None and len(shape) == 1 else FIXED
        if isinstance(out, Rep):
            ctx.freeze(out, "layer norm of a fixed input")
            _affine(ctx, node, wn, bn, out)
        return out
    if len(shape) != 1 or x.dim != nd - 1 or x.repeat != 1 or x.heads is not None or x.scalar:
        return ctx.refuse(node, "layer norm over more than the hidden axis")
    # LN(P x) = P LN(x); LN(D x) != D LN(x) for non-uniform D (and eps > 0 rules out c I, c != +-1):
    # permutations on the input (the global sign -I is not represented).
    ctx.permutations_only(x, "layer-norm input")
    ctx.note("layer norm: the global sign -I of its input (LN(-x) = -LN(x) up to the affine parameters) is not "
             "represented; each layer-norm input class has twice the components claimed (a sound subgroup)")
    out = ctx.new_axis(shape[0], nd - 1)
    ctx.tie(x, out, "perm", "layer norm")
    if wn is None:
        ctx.monomial(out, "layer norm without affine", trivial_scalings("layer norm without affine"))
        if bn is not None:
            return ctx.refuse(node, "layer norm with a bias but no weight")
    else:
        ctx.monomial(out, "layer-norm output")
        _affine(ctx, node, wn, bn, out)
    return out


def _affine(ctx, node, wn, bn, out):
    w, b = _p(ctx, wn), _p(ctx, bn)
    if w is None or (bn is not None and b is None):
        return ctx.refuse(node, "normalisation affine parameters that are not parameters of the model")
    ctx.bind(w.fqn, 0, out, "co")
    if b is not None:
        ctx.bind(b.fqn, 0, out, "co")


@rule(aten.rms_norm.default, reads_params=True)
def rms_norm(ctx, node):
    a = list(node.args) + [None] * 3
    x = ctx.rep(a[0])
    shape, wn = a[1], a[2]
    nd = len(ctx.shape(a[0]))
    if not isinstance(x, Rep):
        return FIXED
    if len(shape) != 1 or x.dim != nd - 1 or x.repeat != 1 or x.heads is not None or x.scalar:
        return ctx.refuse(node, "RMS norm over more than the hidden axis")
    return rms_gain(ctx, node, x, wn, "RMS norm")


def rms_gain(ctx, node, x, wn, what):
    """x / rms(x), times a gain ``wn`` (or not): the RMS is invariant under O(n) only."""
    ctx.constrain(x, Constraint("orthogonal", f"{what} input (||x|| invariant under O(n) only)"))
    if wn is None:
        return x
    w = ctx.param(wn)
    if w is None:
        return ctx.refuse(node, f"{what} gain that is not a parameter of the model")
    return diagonal_gain(ctx, node, x, w, 0, f"{what} gain")


def diagonal_gain(ctx, node, x, w, wdim, what):
    """y = w * x with a parameter vector w along the units: y carries a new element P D_out,
    x any P D_in with the same permutation, w' = D_out P w / (P D_in)."""
    out = ctx.new_axis(x.units, x.dim)
    out = Rep(x.dim, out.segs, x.repeat)
    ctx.monomial(x, f"{what} input")
    ctx.monomial(out, f"{what} output")
    ctx.tie(x, out, "perm", what)
    ctx.bind(w.fqn, wdim, out, "diag", other=x)
    return out


@rule(aten.group_norm.default, aten.instance_norm.default, reads_params=True)
def group_norm(ctx, node):
    a = list(node.args) + [None] * 8
    x = ctx.rep(a[0])
    if node.target is aten.group_norm.default:
        groups, wn, bn = a[1], a[2], a[3]
    else:
        groups, wn, bn = ctx.shape(a[0])[1], a[1], a[2]
        if a[3] is not None or a[4] is not None:
            return ctx.refuse(node, "instance norm with running statistics")
    x = _channel_input(ctx, node, x, "group norm")
    if x == "refused":
        return FIXED
    c = ctx.shape(node)[1]
    out = ctx.new_axis(c, 1)
    if wn is None:
        ctx.monomial(out, "group norm without affine", trivial_scalings("group norm without affine"))
    else:
        ctx.monomial(out, "group-norm output")
        _affine(ctx, node, wn, bn, out)
    if not isinstance(x, Rep):
        ctx.freeze(out, "group norm of a fixed input")
        return out
    # each group is normalised on its own: permutations within a group, one per group
    # (permutations of whole groups are not represented: a sound subgroup)
    k = c // groups
    if groups > 1:
        ctx.note(f"group norm in module {ctx.module()!r}: permutations within each of its {groups} groups; "
                 "permutations of whole groups are not represented")
    for j in range(groups):
        xj = Rep(1, sub_segs(x.segs, j * k, (j + 1) * k))
        oj = Rep(1, sub_segs(out.segs, j * k, (j + 1) * k))
        ctx.permutations_only(xj, "group-norm input")
        ctx.tie(xj, oj, "perm", "group norm")
    return out
