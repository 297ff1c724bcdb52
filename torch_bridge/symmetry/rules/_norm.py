"""Normalisation layers in the ATen forms torch.export produces: batch norm (eq. E.47), layer
norm, RMS norm (``aten.rms_norm``; the hand-written pow/mean/rsqrt form is recognised by the
rules of ``_elementwise`` and ``_pool``), group and instance norm.

No scaling is ever claimed through a normalisation with eps > 0 other than what its own
statistics absorb (batch norm's running statistics): LN(D x) != D LN(x) for non-uniform D.
"""

from __future__ import annotations

import torch

from .._activations import all_scalings, positive_scalings, sign_scalings, trivial_scalings
from .._trace import FIXED, Constraint, Rep
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
            # the input cannot move: no permutation, but gamma, beta absorb any diagonal D
            ctx.monomial(out, "layer norm of a fixed input", perm="fixed")
            _affine(ctx, node, wn, bn, out)
        return out
    if len(shape) != 1 or x.dim != nd - 1 or x.repeat != 1 or x.heads is not None or x.scalar:
        return ctx.refuse(node, "layer norm over more than the hidden axis")
    # N(s P x) = s P N(x) (C commutes with P and -I; |C P x| = |C x|); no other scaling: eps > 0
    # (docs/transformer_symmetries.md, section 1). The input class: permutations times +-I.
    ctx.constrain(x, Constraint("scaled_perm", "layer-norm input", sign_scalings("layer-norm input")))
    out = ctx.new_axis(shape[0], nd - 1)
    if wn is None:
        if bn is not None:
            return ctx.refuse(node, "layer norm with a bias but no weight")
        # the output is N(x) itself: it carries the input's element s P
        ctx.tie(x, out, "same", "layer norm without affine")
        return out
    # gamma' = s D P gamma, beta' = D P beta: output P D with the input's P and any non-zero D
    w, b = _p(ctx, wn), _p(ctx, bn)
    if w is None or (bn is not None and b is None):
        return ctx.refuse(node, "normalisation affine parameters that are not parameters of the model")
    ctx.tie(x, out, "perm", "layer norm")
    ctx.monomial(out, "layer-norm output")
    ctx.bind(w.fqn, 0, out, "diag", other=x)
    if b is not None:
        ctx.bind(b.fqn, 0, out, "co")
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
    w, b = _p(ctx, wn), _p(ctx, bn)
    if wn is None:
        if bn is not None:
            return ctx.refuse(node, "group norm with a bias but no weight")
    elif w is None or (bn is not None and b is None):
        return ctx.refuse(node, "normalisation affine parameters that are not parameters of the model")
    if not isinstance(x, Rep):
        if w is None:
            ctx.freeze(out, "group norm of a fixed input")
        else:  # no permutation (the input cannot move), any non-zero scaling per channel
            ctx.monomial(out, "group norm of a fixed input", perm="fixed")
            ctx.bind(w.fqn, 0, out, "co")
            if b is not None:
                ctx.bind(b.fqn, 0, out, "co")
        return out
    # Each group is a layer norm of its channels (times positions): group j's input carries
    # s_j P_j, the output P_j D_j with the same P_j, and whole groups may be permuted
    # (docs/transformer_symmetries.md, section 8): input Block(G, Perm x {+-I}), output
    # Block(G, Perm x Diag), one unit permutation; gamma' = s D P gamma, beta' = D P beta.
    k = c // groups
    signs = Constraint("scaled_perm", "group-norm input", sign_scalings("group-norm input"))
    if groups > 1 and k > 1:
        # (a grouped convolution reading it splits the groups into sites: the solver then keeps
        # each group's sign and permutations and notes the loss of the group permutation)
        ctx.constrain(x, Constraint("block", f"group norm {ctx.module()!r} input", heads=groups, inner=signs))
    else:
        # one group (a layer norm of all channels), or groups of one channel (instance norm): a
        # sign per channel, the channels permuted as whole groups
        ctx.constrain(x, signs if groups == 1 else Constraint("monomial", "group-norm input", sign_scalings("group-norm input")))
    if w is None:
        ctx.tie(x, out, "same", "group norm without affine")
        return out
    ctx.tie(x, out, "perm", "group norm")
    ctx.monomial(out, "group-norm output")
    if groups > 1 and k > 1:
        ctx.constrain(out, Constraint("block", "group-norm output", heads=groups, inner=Constraint("monomial", "group-norm output")))
    ctx.bind(w.fqn, 0, out, "diag", other=x)
    if b is not None:
        ctx.bind(b.fqn, 0, out, "co")
    return out
