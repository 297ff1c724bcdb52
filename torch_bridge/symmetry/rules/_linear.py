"""Linear maps with a parameter: linear, addmm (Hugging Face's GPT-2 ``Conv1D``), mm/matmul
with a parameter operand, convolutions (grouped, depthwise, transposed) and embeddings.

A producer's output space is a new axis: its rows (output units) are covariant (``W -> g W``,
``b -> g b``) and its columns contravariant to the input's class (``W -> W g^{-1}``; after an
activation the tracer hands over the chain and the action uses phi(g)).
"""

from __future__ import annotations

import torch

from .._trace import FIXED, Rep
from . import rule

aten = torch.ops.aten


def _weight(ctx, node, arg, what="weight"):
    p = ctx.param(arg)
    if p is None:
        v = ctx.value(arg)
        if isinstance(v, Rep):
            return None  # a product of two hidden tensors: not this rule
        ctx.refuse(node, f"its {what} is not a parameter of the model", "the action can only move parameters")
        return "refused"
    if p.dims != tuple(range(len(p.dims))):
        ctx.refuse(node, f"its {what} is a view of parameter {p.fqn!r}", "use the parameter directly")
        return "refused"
    return p


def _bias(ctx, node, arg, out_rep, dim=0):
    if arg is None:
        return
    p = ctx.param(arg)
    if p is None:
        if ctx.value(arg) is FIXED:
            ctx.freeze(out_rep, "constant bias")
        return
    ctx.bind(p.fqn, p.dims[dim] if len(p.dims) > dim else dim, out_rep, "co")


def _input_last(ctx, node, x, nd):
    """The input's class for a map acting on the last dimension; FIXED/None when it is not hidden."""
    if not isinstance(x, Rep):
        return None
    if x.heads is not None or x.scalar:
        ctx.refuse(node, "a linear map on head-split units", "merge the heads first")
        return "refused"
    return x


@rule(aten.linear.default, reads_params=True)
def linear(ctx, node):
    x = ctx.rep(node.args[0])
    w = _weight(ctx, node, node.args[1])
    if w == "refused":
        return FIXED
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    nd = len(ctx.shape(node))
    if w is None:
        return ctx.refuse(node, "a linear map whose weight is a hidden tensor")
    out_features, in_features = ctx.shape(node.args[1])
    if isinstance(x, Rep) and x.dim != nd - 1:
        # Linear over another axis (MLP-Mixer token mixing): it commutes with the hidden
        # axis's element; a bias adds b 1^T, which only row-sum-preserving elements keep.
        bp = ctx.param(b) if b is not None else None
        if b is not None:
            ctx.permutations_only(x, f"Linear {ctx.module()!r} over another axis, with bias")
            if bp is None and ctx.value(b) is not FIXED:
                return ctx.refuse(node, "its bias is not a parameter")
        inner = ctx.side.get(node.args[0])
        if inner is not None:  # (its size was checked against in_features when it was made)
            ctx.bind(w.fqn, 1, inner, "contra")  # the columns reading the token-hidden units
        # (a constant bias could not follow the hidden units' element: no site then)
        side = _token_hidden_units(ctx, node, out_features, nd) if b is None or bp is not None else None
        if side is None:
            ctx.note(f"Linear in module {ctx.module()!r} acts over a dimension other than the units (token mixing): "
                     "its own output units along that dimension are not analysed (their permutations and scalings "
                     "are not represented; a sound subgroup)")
            return x
        ctx.bind(w.fqn, 0, side, "co")
        if bp is not None:
            ctx.bind(bp.fqn, bp.dims[0] if bp.dims else 0, side, "co")
        ctx.note(f"token mixing in module {ctx.module()!r}: its hidden units along the token axis are a site of their "
                 "own; the coupling of their scalings with the channels' (the activation sees the product) is not "
                 "represented (a sound subgroup)")
        return x
    x = _input_last(ctx, node, x, nd)
    if x == "refused":
        return FIXED
    out = ctx.new_axis(out_features, nd - 1)
    ctx.bind(w.fqn, 0, out, "co")
    if isinstance(x, Rep):
        ctx.bind(w.fqn, 1, x, "contra")
    elif node.args[0] in ctx.side:  # token-hidden units read by a Linear whose other axes are fixed
        ctx.bind(w.fqn, 1, ctx.side[node.args[0]], "contra")
    _bias(ctx, node, b, out)
    return out


def _token_hidden_units(ctx, node, m, nd):
    """The hidden units a Linear over a non-unit dimension creates along that (last) dimension,
    as a Rep of their own, when the only path from them is a chain of elementwise activations
    (one user each) into another such Linear reading them as its input features: then nothing
    else sees those units, and an element P D on them (D in every activation's S) is undone by
    that Linear's columns. Else None (the units get no site)."""
    from dataclasses import replace

    from .._activations import activation_group, function_activation, module_activation
    from .._capture import LEAF_OP

    groups, cur = [], node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return None
        (u,) = users
        if u.op != "call_function":
            return None
        if u.target is aten.linear.default:
            break
        if u.target is LEAF_OP:  # an activation module (nn.GELU, nn.ReLU, ...) exported as one node
            ref = module_activation(ctx.cap.leaves[u.args[1]][1])
            others = []
        else:
            ref = function_activation(u.target, u.args, u.kwargs)
            others = [a for a in list(u.args[1:]) + list(u.kwargs.values()) if isinstance(a, type(node))]
        if ref is None or not u.args or u.args[0] is not cur or others:
            return None
        try:
            groups.append(activation_group(ref, ctx.timeout))
        except Exception:  # noqa: BLE001 - no proved group: leave the units without a site
            return None
        cur = u
    w2 = ctx.value(u.args[1]) if len(u.args) > 1 else None
    if u.args[0] is not cur or not hasattr(w2, "fqn") or ctx.shape(u.args[1])[-1] != m or len(ctx.shape(u)) != nd:
        return None
    side = ctx.new_axis(m, nd - 1)
    ctx.crossed.add(side.segs[0].axis)
    for g in groups:
        ctx.monomial(side, g.label or "activation", g)
    chained = Rep(side.dim, tuple(replace(s, chain=s.chain + tuple(groups)) for s in side.segs))
    ctx.side[cur] = chained
    return side


@rule(aten.addmm.default, reads_params=True)
def addmm(ctx, node):
    bias, x, wn = node.args[:3]
    beta, alpha = node.kwargs.get("beta", 1), node.kwargs.get("alpha", 1)
    x_ = ctx.rep(x)
    w = _weight(ctx, node, wn)
    if w == "refused":
        return FIXED
    if w is None:
        return ctx.refuse(node, "a matrix product whose weight is a hidden tensor")
    if beta != 1 or alpha != 1:
        return ctx.refuse(node, "addmm with beta or alpha other than 1")
    if isinstance(x_, Rep) and x_.dim != 1:
        return ctx.refuse(node, "addmm with the units along the batch dimension")
    x_ = _input_last(ctx, node, x_, 2)
    if x_ == "refused":
        return FIXED
    # W is (in, out): out = x W + b
    out = ctx.new_axis(ctx.shape(wn)[1], 1)
    ctx.bind(w.fqn, 1, out, "co")
    if isinstance(x_, Rep):
        ctx.bind(w.fqn, 0, x_, "contra")
    _bias(ctx, node, bias, out)
    return out


@rule(aten.mm.default, aten.matmul.default, aten.bmm.default, reads_params=True)
def matmul(ctx, node):
    a, b = node.args[:2]
    va, vb = ctx.rep(a), ctx.rep(b)
    if isinstance(va, Rep) and isinstance(vb, Rep):
        from ._attention import hidden_product

        return hidden_product(ctx, node, va, vb)
    pb = ctx.param(b)
    if va is FIXED and pb is not None and len(ctx.shape(b)) == 2:
        out = ctx.new_axis(ctx.shape(b)[1], len(ctx.shape(node)) - 1)
        ctx.bind(pb.fqn, 1, out, "co")
        return out
    if isinstance(va, Rep) and pb is not None and len(ctx.shape(b)) == 2:
        nd = len(ctx.shape(node))
        if va.dim != len(ctx.shape(a)) - 1:
            return ctx.refuse(node, "a matrix product with a parameter not on the hidden axis")
        x = _input_last(ctx, node, va, nd)
        if x == "refused":
            return FIXED
        out = ctx.new_axis(ctx.shape(b)[1], nd - 1)
        ctx.bind(pb.fqn, 1, out, "co")
        ctx.bind(pb.fqn, 0, x, "contra")
        return out
    pa = ctx.param(a)
    if isinstance(vb, Rep) and pa is not None and len(ctx.shape(a)) == 2 and vb.dim == len(ctx.shape(b)) - 2:
        if vb.heads is not None or vb.scalar:
            return ctx.refuse(node, "a matrix product with a parameter on head-split units")
        nd = len(ctx.shape(node))
        out = ctx.new_axis(ctx.shape(a)[0], nd - 2)
        ctx.bind(pa.fqn, 0, out, "co")
        ctx.bind(pa.fqn, 1, vb, "contra")
        return out
    return ctx.refuse(node, "a matrix product the symmetry analysis cannot follow")


_CONV = [aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.convolution.default,
         getattr(aten.conv1d, "padding", None), getattr(aten.conv2d, "padding", None), getattr(aten.conv3d, "padding", None)]
_CONV_T = [aten.conv_transpose1d.default, aten.conv_transpose2d.input, aten.conv_transpose3d.input]


@rule(*_CONV, *_CONV_T, reads_params=True)
def conv(ctx, node):
    transposed = node.target in _CONV_T
    x = ctx.rep(node.args[0])
    w = _weight(ctx, node, node.args[1])
    if w == "refused":
        return FIXED
    if w is None:
        return ctx.refuse(node, "a convolution whose weight is a hidden tensor")
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    if node.target is aten.convolution.default:
        transposed = bool(node.args[6])
        groups = node.args[8]
    elif transposed:
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    else:
        groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    wshape = ctx.shape(node.args[1])
    # conv: (out, in/groups, k...); transposed: (in, out/groups, k...)
    out_dim_w, in_dim_w = (1, 0) if transposed else (0, 1)
    out_ch = ctx.shape(node)[1]
    in_ch = ctx.shape(node.args[0])[1]
    if isinstance(x, Rep) and (x.dim != 1 or x.repeat != 1 or x.heads is not None or x.scalar):
        return ctx.refuse(node, "the channel axis of its input is not dimension 1")
    what = "transposed convolution" if transposed else "convolution"
    if groups == 1:
        out = ctx.new_axis(out_ch, 1)
        ctx.bind(w.fqn, out_dim_w, out, "co")
        if isinstance(x, Rep):
            ctx.bind(w.fqn, in_dim_w, x, "contra")
        _bias(ctx, node, b, out)
        return out
    if groups == in_ch == out_ch and not transposed:
        # depthwise: y_c = w_c * x_c. A monomial P D_in on the input and P D_out on the output
        # (the same permutation) keep it with w' = D_out P w / (P D_in): a diagonal conjugated.
        out = ctx.new_axis(out_ch, 1)
        if isinstance(x, Rep):
            ctx.monomial(x, f"depthwise {what} input")
            ctx.monomial(out, f"depthwise {what} output")
            ctx.tie(x, out, "perm", "depthwise convolution")
            ctx.bind(w.fqn, 0, out, "diag", other=x)
        else:
            ctx.monomial(out, f"depthwise {what} output", perm="fixed")
            ctx.bind(w.fqn, 0, out, "diag", other=None)
        _bias(ctx, node, b, out)
        return out
    # grouped: block-diagonal weight; group j maps input block j to output block j. Every
    # block pair carries its own element (GL on each block, the block permutation is not
    # represented: a sound subgroup).
    if transposed:
        return ctx.refuse(node, f"grouped transposed convolution (groups={groups})", "use groups=1")
    from .._trace import sub_segs

    out = ctx.new_axis(out_ch, 1)
    ci, co = in_ch // groups, out_ch // groups
    ctx.note(f"grouped convolution in module {ctx.module()!r} (groups={groups}): each group has its own element; "
             "permutations of whole groups are not represented")
    for j in range(groups):
        oj = Rep(1, sub_segs(out.segs, j * co, (j + 1) * co))
        if isinstance(x, Rep):
            xj = Rep(1, sub_segs(x.segs, j * ci, (j + 1) * ci))
            ctx.bind(w.fqn, 1, xj, "contra", part=(j, groups))
        ctx.bind(w.fqn, 0, oj, "co", part=(j, groups))
    _bias(ctx, node, b, out)
    return out


@rule(aten.embedding.default, reads_params=True)
def embedding(ctx, node):
    w = _weight(ctx, node, node.args[0])
    if w == "refused":
        return FIXED
    if w is None:
        return ctx.refuse(node, "an embedding whose table is a hidden tensor")
    if isinstance(ctx.rep(node.args[1]), Rep):
        return ctx.refuse(node, "embedding indices computed from hidden units")
    out = ctx.new_axis(ctx.shape(node.args[0])[1], len(ctx.shape(node)) - 1)
    ctx.bind(w.fqn, 1, out, "co")
    return out


@rule(aten.lstm.input, aten.lstm.data, aten.gru.input, aten.gru.data, aten.rnn_tanh.input, aten.rnn_relu.input,
      aten.rnn_tanh.data, aten.rnn_relu.data, reads_params=True)
def recurrent(ctx, node):
    name = node.target.overloadpacket.__name__.upper().replace("RNN_TANH", "RNN").replace("RNN_RELU", "RNN")
    return ctx.refuse(node, f"recurrent layer ({name}): its hidden units would have to permute together with "
                            "every gate and the recurrent weights, which no rule implements yet",
                      "the analysis supports feed-forward layers; remove the recurrent layer or pass unknown='freeze'")
