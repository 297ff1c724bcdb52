"""Elementwise operations: activations (the engine's groups), add/sub (residual ties, biases,
constants), mul/div (gated products, gains, constant factors, rotary), neg, dropout and the
no-op conversions, per-channel PReLU, and ``x ** p``.
"""

from __future__ import annotations

import numbers

import torch
import torch.fx as fx

from .._activations import _FUNCTIONS, ActivationRef, function_activation, positive_scalings
from .._trace import FIXED, Constraint, Derived, Param, Rep, Square
from . import rule

aten = torch.ops.aten

_ACTIVATION_OPS = [t for t in _FUNCTIONS if isinstance(t, torch._ops.OpOverload)]
_ACTIVATION_OPS += [aten.elu.default, aten.elu_.default, aten.gelu.default, aten.gelu_.default, aten.rrelu.default,
                    aten.square.default]


@rule(*_ACTIVATION_OPS)
def activation(ctx, node):
    ref = function_activation(node.target, node.args, node.kwargs)
    x = ctx.rep(node.args[0])
    if ref is None:
        return ctx.refuse(node, "an activation with parameters the catalogue does not cover")
    return ctx.activation(x, ref)


@rule(aten.pow.Tensor_Scalar)
def power(ctx, node):
    x = ctx.rep(node.args[0])
    e = node.args[1]
    if e == 2 and isinstance(x, Rep):
        return Square(x, node)  # lazy: mean(x**2) over the units is a sum of squares (RMS norm)
    ref = function_activation(node.target, node.args, node.kwargs)
    if ref is None:
        return ctx.refuse(node, f"x ** {e!r} is not a catalogue activation (integer powers >= 1 are)")
    return ctx.activation(x, ref)


_PASS = [aten.dropout, aten.clone, aten.alias, aten.contiguous, aten.detach, aten.lift_fresh_copy, aten.to,
         aten._to_copy, aten.positive, aten.feature_dropout, aten.alpha_dropout, aten.feature_alpha_dropout,
         aten.type_as]


@rule(*_PASS, param_view=True)
def identity(ctx, node):
    """The identity for symmetry purposes (dropout is the identity in eval mode)."""
    v = ctx.value(node.args[0])
    if node.target in (aten.dropout.default,) and len(node.args) > 2 and node.args[2]:
        ctx.note(f"dropout in module {ctx.module()!r} runs in training mode; the spec is for eval mode")
    return v


@rule(aten._assert_tensor_metadata.default, aten.sym_size.int, getattr(aten, "sym_numel", None) and aten.sym_numel.default,
      param_view=True)
def no_tensor(ctx, node):
    return None


@rule(aten.neg.default)
def neg(ctx, node):
    return ctx.rep(node.args[0])


def _scalar(a):
    return isinstance(a, numbers.Number) and not isinstance(a, bool)


def _broadcast_dim(ctx, node, other, d_out):
    """Size of a broadcast operand ``other`` along output dimension ``d_out`` (1 if absent)."""
    so = ctx.shape(other)
    k = len(so) - len(ctx.shape(node)) + d_out
    return so[k] if 0 <= k < len(so) else 1, k


def _move(ctx, node, arg, rep):
    """``rep`` of argument ``arg`` re-indexed to the node's broadcast output."""
    shift = len(ctx.shape(node)) - len(ctx.shape(arg))
    if shift == 0:
        return rep
    from dataclasses import replace

    return replace(rep, dim=rep.dim + shift, inner=None if rep.inner is None else rep.inner + shift)


def _same_layout(ctx, node, a, ra, b, rb):
    """Both operands carry their units on the same output dimensions with the same sizes (other
    dimensions may broadcast: a positional embedding added to every sequence)."""
    if (ra.dim, ra.inner, ra.heads, ra.repeat, ra.units) != (rb.dim, rb.inner, rb.heads, rb.repeat, rb.units):
        return False
    for d in _unit_dims(ra):
        if _broadcast_dim(ctx, node, a, d)[0] != _broadcast_dim(ctx, node, b, d)[0]:
            return False
    return True


def _unit_dims(rep):
    return [rep.dim] + ([rep.inner] if rep.inner is not None else [])


@rule(aten.add.Tensor, aten.sub.Tensor, aten.add.Scalar, aten.sub.Scalar, aten.add_.Tensor, aten.sub_.Tensor,
      aten.rsub.Scalar)
def add(ctx, node):
    a, b = node.args[0], node.args[1]
    alpha = node.kwargs.get("alpha", 1)
    va = ctx.rep(a) if isinstance(a, fx.Node) else None
    vb = ctx.rep(b) if isinstance(b, fx.Node) else None
    if isinstance(va, Rep) and isinstance(vb, Rep):
        ra, rb = _move(ctx, node, a, va), _move(ctx, node, b, vb)
        for s_, p_ in ((ra, rb), (rb, ra)):
            if s_.heads is not None and s_.inner is None and p_.heads is None and p_.dim == s_.dim and \
                    p_.units == s_.heads and p_.repeat == 1 and s_.merged == 1:
                # per-head scores plus a learned per-head bias (T5's relative position bias): the
                # bias units move with the head permutation, nothing else
                ctx.permutations_only(p_, "per-head additive bias")
                ctx.tie(s_, p_, "heads", "per-head additive bias")
                return s_
            ctx.tie(ra, rb, "same", "addition")
            from dataclasses import replace

            return replace(ra, scalar=ra.scalar and rb.scalar)
        return ctx.refuse(node, "addition of two hidden tensors with different unit layouts (broadcast)")
    x, xn, other = (va, a, b) if isinstance(va, Rep) else (vb, b, a)
    x = _move(ctx, node, xn, x)
    if _scalar(other) or other is None:
        if other not in (0, 0.0, None) and alpha != 0:
            ctx.permutations_only(x, "added constant")
        return x
    ov = ctx.value(other)
    size = [_broadcast_dim(ctx, node, other, d)[0] for d in _unit_dims(x)]
    if isinstance(ov, Param):
        # an additive parameter (a bias, a positional embedding, a class token): covariant
        if x.heads is not None or x.scalar or x.repeat != 1 or size[0] != x.units:
            return ctx.refuse(node, f"parameter {ov.fqn!r} is added to hidden units along a layout the action cannot follow")
        k = _broadcast_dim(ctx, node, other, x.dim)[1]
        ctx.bind(ov.fqn, ov.dims[k], x, "co")
        return x
    if isinstance(ov, Derived):
        ctx.refuse_derived(ov)
    if x.heads is not None and x.inner is None:
        # attention scores (heads only): a mask shared by all heads commutes with head permutations
        if size[0] != 1:
            ctx.constrain(x, Constraint("block", "per-head additive constant (ALiBi?)", heads=x.heads,
                                        inner=Constraint("gl", "scores"), perm="fixed"))
        return x
    if all(s == 1 for s in size):
        ctx.permutations_only(x, "added constant")  # c 1 with g 1 = 1: permutations
        return x
    ctx.freeze(x, "added per-channel constant")
    return x


@rule(aten.masked_fill.Scalar, aten.masked_fill.Tensor, aten.masked_fill_.Scalar)
def masked_fill(ctx, node):
    x = ctx.rep(node.args[0])
    if not isinstance(x, Rep):
        return x
    if isinstance(ctx.rep(node.args[1]), Rep) or (len(node.args) > 2 and isinstance(ctx.rep(node.args[2]), Rep)):
        return ctx.refuse(node, "a mask computed from hidden units")
    sizes = [_broadcast_dim(ctx, node, node.args[1], d)[0] for d in _unit_dims(x)]
    if x.heads is not None and x.inner is None:
        if sizes[0] != 1:
            ctx.constrain(x, Constraint("block", "per-head mask", heads=x.heads, inner=Constraint("gl", "scores"),
                                        perm="fixed"))
        return x
    if all(s == 1 for s in sizes):
        ctx.permutations_only(x, "masked units")
    else:
        ctx.freeze(x, "per-unit mask")
    return x


@rule(aten.mul.Tensor, aten.mul.Scalar, aten.mul_.Tensor, aten.div.Tensor, aten.div.Scalar, aten.div_.Tensor)
def mul(ctx, node):
    div = node.target in (aten.div.Tensor, aten.div.Scalar, aten.div_.Tensor)
    a, b = node.args[0], node.args[1]
    if node.kwargs.get("rounding_mode") is not None:
        return ctx.refuse(node, "rounded division")
    va = ctx.rep(a) if isinstance(a, fx.Node) else None
    vb = ctx.rep(b) if isinstance(b, fx.Node) else None
    if isinstance(va, Rep) and isinstance(vb, Rep):
        if div:
            return ctx.refuse(node, "division by a hidden tensor")
        return product(ctx, node, a, va, b, vb)
    x, xn, other = (va, a, b) if isinstance(va, Rep) else (vb, b, a)
    if div and xn is not a:
        return ctx.refuse(node, "division by a hidden tensor")
    x = _move(ctx, node, xn, x)
    if _scalar(other):
        if other == 0:
            ctx.freeze(x, "multiplied by zero")
        return x  # c x commutes with every linear map
    ov = ctx.value(other)
    dims = _unit_dims(x)
    size = [_broadcast_dim(ctx, node, other, d)[0] for d in dims]
    if isinstance(ov, Derived):
        if all(s == 1 for s in size) and not div:
            return x  # a scalar computed from parameters (logit_scale.exp()): commutes, and is not moved
        ctx.refuse_derived(ov)
    nd = len(ctx.shape(node))
    per_position = any(_broadcast_dim(ctx, node, other, k)[0] > 1 for k in range(nd) if k not in dims)
    one_head = x.heads is None and per_position and x.dim == nd - 1 and x.repeat == 1 and not x.scalar
    if isinstance(ov, Param) and ctx.cap.is_buffer.get(ov.fqn) and not div:
        # a buffer read whole as a constant factor (a rotary cos/sin cache): of head-split units, or
        # of one head's units when it is a rotary factor; a constant, which no binding may move
        # (constant_value records it: the trace refuses if the action moves it elsewhere)
        if x.heads is not None:
            ov = FIXED
        elif one_head:
            from ._rotary import rotary_factor_one_head

            if rotary_factor_one_head(ctx, node, x, other, _broadcast_dim(ctx, node, other, x.dim)[1]):
                return x
    if isinstance(ov, Param):
        if div:
            return ctx.refuse(node, f"division by parameter {ov.fqn!r}")
        if all(s == 1 for s in size):
            return x  # a scalar parameter (a temperature): commutes
        if x.heads is not None or x.scalar or x.repeat != 1 or size[0] != x.units:
            return ctx.refuse(node, f"parameter {ov.fqn!r} multiplies hidden units along a layout the action cannot follow")
        from ._norm import diagonal_gain

        k = _broadcast_dim(ctx, node, other, x.dim)[1]
        return diagonal_gain(ctx, node, x, Param(ov.fqn, ov.dims), ov.dims[k], "gain")
    # a constant tensor
    if all(s == 1 for s in size):
        return x  # a per-token factor (1/rms, a mask): commutes
    if x.heads is not None and size[0] == 1 and x.inner is not None and not x.scalar and x.merged == 1:
        # varies along the inner (per-head) units only, like rotary cos/sin: the transforms
        # commuting with diag(c) that the rules can claim (rules/_rotary.py)
        from ._rotary import rotary_factor

        return rotary_factor(ctx, node, x, other, _broadcast_dim(ctx, node, other, x.inner)[1])
    if one_head:
        # one head (multi-query keys, split off without a head dimension): a rotary factor on it
        from ._rotary import rotary_factor_one_head

        if rotary_factor_one_head(ctx, node, x, other, _broadcast_dim(ctx, node, other, x.dim)[1]):
            return x
    if x.heads is not None and size[0] == 1:
        ctx.constrain(x, Constraint("block", "per-position factor: per-head scalars only (a sound subgroup)",
                                    heads=x.heads, inner=Constraint("scalar", "rotary")))
        ctx.note(f"per-head factors in module {ctx.module()!r}: only per-head scalars are claimed for these heads "
                 f"({x.heads} dimensions): a sound subgroup")
        from dataclasses import replace

        return replace(x, scalar=True)
    if x.heads is not None or x.scalar:
        return ctx.refuse(node, "a constant factor varying across heads")
    # a per-channel factor commutes with scalings but pins the permutation
    ctx.monomial(x, "per-channel factor", perm="fixed")
    return x


def product(ctx, node, a, va, b, vb):
    """x * y of two hidden tensors (gated units, SwiGLU, GEGLU): x y transforms as
    P (D_x D_y) when both carry P D (the same permutation). The analysis keeps the
    *linear* branch's scaling free and fixes the other side's to 1 (for a gated unit that side
    is an activation output whose scalings are trivial anyway, e.g. SiLU or GELU); the
    product then carries exactly the linear branch's element. With two free branches (a
    bilinear product) this is a sound subgroup."""
    ra, rb = _move(ctx, node, a, va), _move(ctx, node, b, vb)
    if not _same_layout(ctx, node, a, ra, b, rb):
        return ctx.refuse(node, "a product of hidden tensors with different unit layouts (broadcast)")
    if ra.heads is not None or ra.scalar or rb.scalar:
        return ctx.refuse(node, "a product of head-split hidden tensors")

    def chained(r):
        return any(s.chain for s in r.segs)

    gate, lin = (ra, rb) if chained(ra) or not chained(rb) else (rb, ra)
    ctx.permutations_only(gate, "gate of a product of hidden tensors")
    ctx.monomial(lin, "linear branch of a product of hidden tensors")
    ctx.tie(gate, lin, "perm", "product of hidden tensors")
    return lin


@rule(aten.prelu.default, aten._prelu_kernel.default if hasattr(aten, "_prelu_kernel") else None, reads_params=True)
def prelu(ctx, node):
    x = ctx.rep(node.args[0])
    w = ctx.param(node.args[1])
    if w is None:
        return ctx.refuse(node, "PReLU whose slopes are not parameters of the model")
    n = ctx.shape(node.args[1])[0] if ctx.shape(node.args[1]) else 1
    if not isinstance(x, Rep):
        return FIXED
    if n == 1:
        # one slope: leaky_relu (slope 1 would be the identity; the engine's group covers it)
        ctx.note(f"PReLU in module {ctx.module()!r}: one shared slope, read from the weights as leaky_relu")
        slope = float(ctx.cap.model.get_parameter(w.fqn).detach().reshape(()))
        return ctx.activation(x, ActivationRef("leaky_relu", (("negative_slope", slope),), "PReLU"))
    # per-channel slopes: prelu(P D x) = P D prelu_{P^T a}(x) for D > 0: the permutation moves the
    # slopes, positive scalings commute (a slope of 1 is not special-cased: sound)
    if x.dim != 1 or x.repeat != 1 or x.heads is not None or x.scalar:
        return ctx.refuse(node, "per-channel PReLU over a dimension other than the hidden axis")
    g = positive_scalings("per-channel prelu")
    ctx.monomial(x, "per-channel prelu", g)
    ctx.bind(w.fqn, 0, x, "perm")
    from dataclasses import replace

    return replace(x, segs=tuple(replace(s, chain=s.chain + (g,)) if s.kind == "axis" else s for s in x.segs))


@rule(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar)
def where(ctx, node):
    """where(c, x, y) with a fixed condition shared by all units: commutes with permutations;
    with scalings too where the other branch is zero."""
    cond, a, b = node.args[:3]
    if isinstance(ctx.rep(cond), Rep):
        return ctx.refuse(node, "a condition computed from hidden units")
    va = ctx.rep(a) if isinstance(a, fx.Node) else None
    vb = ctx.rep(b) if isinstance(b, fx.Node) else None
    x, xn = (va, a) if isinstance(va, Rep) else (vb, b)
    x = _move(ctx, node, xn, x)
    if any(s != 1 for s in (_broadcast_dim(ctx, node, cond, d)[0] for d in _unit_dims(x))):
        ctx.freeze(x, "a per-unit condition")
        return x
    if isinstance(va, Rep) and isinstance(vb, Rep):
        rb = _move(ctx, node, b, vb)
        if not _same_layout(ctx, node, a, x, b, rb):
            return ctx.refuse(node, "where over hidden tensors with different unit layouts")
        ctx.tie(x, rb, "same", "where")
        return x
    other = b if xn is a else a
    if isinstance(other, fx.Node) and isinstance(ctx.value(other), (Param, Derived)):
        return ctx.refuse(node, "where with a parameter branch")
    if not (_scalar(other) and other == 0):
        if x.heads is None or x.inner is not None:
            ctx.permutations_only(x, "where with a constant branch")
    return x
