"""Shape operations: view/reshape/flatten/unflatten, transpose/permute, (un)squeeze, expand,
cat, slice/select, split/chunk/unbind (+ getitem), pad.

They move the unit dimension(s) of a representation; slicing and concatenating along the units
cut and juxtapose segments (the solver refines axes into atoms). A view that splits the units
into (heads, inner) makes a head-split representation; slicing along the inner units of
heads (rotary's rotate_half) keeps only per-head scalars.
"""

from __future__ import annotations

import math
import operator
from dataclasses import replace

import torch
import torch.fx as fx

from .._trace import FIXED, Constraint, Derived, Param, Rep, Seg, sub_segs
from . import rule

aten = torch.ops.aten


def _groups(si, so):
    """Pairs (input dims, output dims) of a reshape whose sizes multiply to the same number."""
    out, i, j = [], 0, 0
    while i < len(si) or j < len(so):
        a0, b0 = i, j
        pa = si[i] if i < len(si) else 1
        i += i < len(si)
        pb = so[j] if j < len(so) else 1
        j += j < len(so)
        while pa != pb:
            if pa < pb and i < len(si):
                pa *= si[i]
                i += 1
            elif pb < pa and j < len(so):
                pb *= so[j]
                j += 1
            else:
                return None
        # size-1 dimensions right after the group belong to it
        out.append((list(range(a0, i)), list(range(b0, j))))
    return out


def _nz(dims, shape):
    return [d for d in dims if shape[d] != 1]


def reshape_rep(ctx, node, x: Rep, si, so):
    gs = _groups(si, so)
    if gs is None:
        return ctx.refuse(node, f"reshape {si} -> {so}")

    def group_of(d):
        return next(g for g in gs if d in g[0])

    if x.heads is None:
        ins, outs = group_of(x.dim)
        nin, nout = _nz(ins, si), _nz(outs, so)
        if nin == [x.dim] and len(nout) == 1:
            return replace(x, dim=nout[0])
        if nin and nin[0] == x.dim and len(nout) == 1 and nin == list(range(x.dim, x.dim + len(nin))):
            return replace(x, dim=nout[0], repeat=x.repeat * math.prod(si[d] for d in nin[1:]))
        if nin == [x.dim] and len(nout) >= 2:
            if x.repeat > 1:
                # unflatten: the first output dimension holds units x r2, the rest the repeat
                first = so[nout[0]]
                if first % x.units == 0 and x.repeat % (first // x.units) == 0 and \
                        math.prod(so[d] for d in nout[1:]) == x.repeat // (first // x.units):
                    return replace(x, dim=nout[0], repeat=first // x.units)
                return ctx.refuse(node, f"reshape {si} -> {so} splits the hidden axis")
            if len(nout) == 2:
                if len(x.segs) != 1 or x.segs[0].kind != "axis":
                    return ctx.refuse(node, "splitting a concatenation of hidden axes into heads")
                return replace(x, dim=nout[0], inner=nout[1], heads=so[nout[0]])
        if len(nin) == 2 and nin[1] == x.dim and len(nout) == 2 and x.repeat == 1 and si[x.dim] % so[nout[1]] == 0:
            # (..., B, E) -> (..., B * H, d): heads merged into the batch, head innermost (MultiheadAttention)
            heads = si[x.dim] // so[nout[1]]
            if so[nout[0]] == si[nin[0]] * heads and len(x.segs) == 1 and x.segs[0].kind == "axis":
                return replace(x, dim=nout[0], inner=nout[1], heads=heads, merged=si[nin[0]])
        return ctx.refuse(node, f"reshape {si} -> {so} splits or interleaves the hidden axis")
    # head-split units
    gh, gi = group_of(x.dim), group_of(x.inner)
    if x.merged > 1:
        # (B * H, ...) -> (B, H, ...): the heads get their own dimension back
        nin, nout = _nz(gh[0], si), _nz(gh[1], so)
        ins, outs = gi
        if nin == [x.dim] and len(nout) == 2 and so[nout[0]] == x.merged and so[nout[1]] == x.heads and \
                _nz(ins, si) == [x.inner] and len(_nz(outs, so)) == 1:
            return replace(x, dim=nout[1], inner=_nz(outs, so)[0], merged=1)
        return ctx.refuse(node, f"reshape {si} -> {so} of heads merged with the batch")
    if gh is gi:
        nin, nout = _nz(gh[0], si), _nz(gh[1], so)
        if nin == [x.dim, x.inner] and x.inner == x.dim + 1 and len(nout) == 1:
            if so[nout[0]] != x.units:
                return ctx.refuse(node, "merging heads whose inner units were sliced")
            return Rep(nout[0], x.segs, 1)
        return ctx.refuse(node, f"reshape {si} -> {so} mixes the heads with other dimensions")
    moved, repeated = [], None
    for d in (x.dim, x.inner):
        ins, outs = group_of(d)
        nin, nout = _nz(ins, si), _nz(outs, so)
        if nin == [d] and len(nout) == 1:
            moved.append(nout[0])
            continue
        if d == x.dim and len(nin) == 2 and len(nout) == 1 and d in nin and _copies(ctx, node.args[0], sum(nin) - d):
            # repeat_kv: heads merged with a dimension that only holds copies (an expand of size 1)
            repeated = (si[sum(nin) - d], nin[0] == d)
            moved.append(nout[0])
            continue
        if d == x.dim and nin == [d] and len(nout) == 2 and x.heads == so[nout[0]] * so[nout[1]]:
            # grouped-query attention repeats key/value heads: not represented
            return ctx.refuse(node, "splitting the heads (grouped-query attention?)",
                              "grouped-query attention is not supported: use as many key/value heads as query heads")
        if d == x.dim and len(nin) == 2 and len(nout) == 1:
            return ctx.refuse(node, "merging heads with another dimension (grouped-query attention's repeat_kv?)",
                              "grouped-query attention is not supported: use as many key/value heads as query heads")
        return ctx.refuse(node, f"reshape {si} -> {so} mixes the heads with other dimensions")
    out = replace(x, dim=moved[0], inner=moved[1])
    if repeated is not None:
        from ._attention import repeat_heads

        return repeat_heads(ctx, node, out, *repeated)
    return out


_NO_OPS = (aten.clone.default, aten.contiguous.default, aten.alias.default)


def _copies(ctx, n, dim) -> bool:
    """Whether dimension ``dim`` of node ``n`` only holds copies: ``n`` is (through clones) an
    ``expand`` of a tensor with size 1 there (or without that dimension)."""
    while isinstance(n, fx.Node) and n.op == "call_function" and n.target in _NO_OPS:
        n = n.args[0]
    if not (isinstance(n, fx.Node) and n.op == "call_function" and n.target is aten.expand.default):
        return False
    si, so = ctx.shape(n.args[0]), ctx.shape(n)
    k = dim - (len(so) - len(si))
    return k < 0 or si[k] == 1


def _param_reshape(ctx, node, p: Param, si, so):
    gs = _groups(si, so)
    if gs is None:
        return Derived(frozenset([p.fqn]), "reshape", ctx.module())
    dims = [None] * len(so)
    for ins, outs in gs:
        nin, nout = _nz(ins, si), _nz(outs, so)
        if len(nin) == 1 and len(nout) == 1:
            dims[nout[0]] = p.dims[nin[0]]
        elif nin or nout:
            return Derived(frozenset([p.fqn]), "reshape", ctx.module())
    return Param(p.fqn, tuple(dims))


@rule(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
      aten.unflatten.int, aten.view_as.default if hasattr(aten, "view_as") else None, aten.reshape_as.default
      if hasattr(aten, "reshape_as") else None, param_view=True)
def view(ctx, node):
    x = ctx.rep(node.args[0])
    from ._rotary import rotate_pairs_source

    src = rotate_pairs_source(ctx, node.args[0]) if isinstance(node.args[0], fx.Node) else None
    if src is not None and isinstance(x, Rep) and isinstance(ctx.rep(src), Rep):
        return ctx.rep(src)  # rotate_every_two flattened back: x's units, rotated (the stack rule constrained them)
    si, so = ctx.shape(node.args[0]), ctx.shape(node)
    if isinstance(x, Param):
        return _param_reshape(ctx, node, x, si, so)
    if not isinstance(x, Rep):
        return x
    if si == so:
        return x
    return reshape_rep(ctx, node, x, si, so)


def _move(x, mapping):
    """Representation/param with old dim d at mapping[d]."""
    if isinstance(x, Rep):
        return replace(x, dim=mapping[x.dim], inner=None if x.inner is None else mapping[x.inner])
    if isinstance(x, Param):
        dims = [None] * len(mapping)
        for old, new in enumerate(mapping):
            dims[new] = x.dims[old]
        return Param(x.fqn, tuple(dims))
    return x


@rule(aten.transpose.int, aten.t.default, aten.permute.default, aten.numpy_T.default if hasattr(aten, "numpy_T") else None,
      param_view=True)
def transpose(ctx, node):
    x = ctx.rep(node.args[0])
    nd = len(ctx.shape(node))
    if node.target is aten.permute.default:
        order = [o % nd for o in node.args[1]]
        mapping = [order.index(d) for d in range(nd)]
    else:
        if node.target is aten.transpose.int:
            a, b = node.args[1] % nd, node.args[2] % nd
        else:
            a, b = 0, nd - 1 if nd > 1 else 0
        mapping = list(range(nd))
        mapping[a], mapping[b] = b, a
    return _move(x, mapping)


@rule(aten.unsqueeze.default, param_view=True)
def unsqueeze(ctx, node):
    x = ctx.rep(node.args[0])
    nd_in = len(ctx.shape(node.args[0]))
    d = node.args[1] % (nd_in + 1)
    mapping = [k if k < d else k + 1 for k in range(nd_in)]
    if isinstance(x, Param):
        dims = list(x.dims)
        dims.insert(d, None)
        return Param(x.fqn, tuple(dims))
    return _move(x, mapping + [None]) if isinstance(x, Rep) else x


@rule(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, param_view=True)
def squeeze(ctx, node):
    x = ctx.rep(node.args[0])
    si = ctx.shape(node.args[0])
    if node.target is aten.squeeze.default:
        drop = {d for d, s in enumerate(si) if s == 1}
    else:
        ds = node.args[1] if isinstance(node.args[1], (list, tuple)) else [node.args[1]]
        drop = {d % len(si) for d in ds if si[d % len(si)] == 1}
    mapping, k = [], 0
    for d in range(len(si)):
        mapping.append(None if d in drop else k)
        k += d not in drop
    if isinstance(x, Param):
        return Param(x.fqn, tuple(x.dims[d] for d in range(len(si)) if d not in drop))
    if isinstance(x, Rep):
        if x.dim in drop or x.inner in drop:
            return x  # a unit dimension of size 1 is never squeezed: units >= 1 means size 1 only for a single unit
        return replace(x, dim=mapping[x.dim], inner=None if x.inner is None else mapping[x.inner])
    return x


@rule(aten.expand.default, aten.expand_as.default if hasattr(aten, "expand_as") else None, param_view=True)
def expand(ctx, node):
    x = ctx.rep(node.args[0])
    shift = len(ctx.shape(node)) - len(ctx.shape(node.args[0]))
    if isinstance(x, Param):
        return Param(x.fqn, (None,) * shift + x.dims)
    if isinstance(x, Rep):
        si, so = ctx.shape(node.args[0]), ctx.shape(node)
        if si[x.dim] != so[x.dim + shift]:
            return ctx.refuse(node, "expanding the hidden axis")
        return replace(x, dim=x.dim + shift, inner=None if x.inner is None else x.inner + shift)
    return x


@rule(aten.cat.default, aten.concat.default if hasattr(aten, "concat") else None)
def cat(ctx, node):
    tensors = node.args[0]
    nd = len(ctx.shape(node))
    dim = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % nd
    vals = [ctx.rep(t) for t in tensors]
    reps = [v for v in vals if isinstance(v, Rep)]
    if not reps:
        return FIXED
    first = reps[0]
    if first.heads is None and dim == first.dim and first.scalar:
        # rotate_half of one head without a head dimension (multi-query keys): as below, one block
        from ._rotary import rotate_half_source

        src = rotate_half_source(ctx, node)
        x = ctx.rep(src) if src is not None else None
        if isinstance(x, Rep) and x.heads is None and x.dim == dim and not x.scalar and x.repeat == 1:
            ctx.constrain(x, Constraint("complex", "rotary embeddings (rotate_half)", layout="half"))
            return x
        return ctx.refuse(node, "concatenating pieces of a hidden axis that are not a rotary rotation")
    if first.heads is not None and dim == first.inner:
        # rotary's rotate_half, cat(-x[..., d/2:], x[..., :d/2]): +-i on every plane (i, i + d/2),
        # which commutes with the complex scalars per pair of that layout (rules/_rotary.py)
        from ._rotary import rotate_half_source

        src = rotate_half_source(ctx, node)
        x = ctx.rep(src) if src is not None else None
        if isinstance(x, Rep) and x.heads is not None and x.inner == dim and not x.scalar and x.merged == 1 and \
                all(isinstance(v, Rep) and v.segs == x.segs for v in vals):
            ctx.constrain(x, Constraint("block", "rotary embeddings (rotate_half)", heads=x.heads,
                                        inner=Constraint("complex", "rotate_half", layout="half")))
            return x
        # other cats of sliced inner units of the same heads (the slices kept per-head scalars)
        if all(isinstance(v, Rep) and v.scalar and v.segs == first.segs and v.dim == first.dim for v in vals):
            return first
        return ctx.refuse(node, "concatenating head-split units of different tensors")
    if all(isinstance(v, Rep) and v.dim == dim and v.heads is None for v in reps) and all(v.repeat == 1 for v in reps):
        segs = []
        for t, v in zip(tensors, vals):
            if isinstance(v, Rep):
                segs += list(v.segs)
            elif isinstance(v, (Param, Derived)):
                return ctx.refuse(node, "concatenating a parameter along the hidden axis")
            else:
                segs.append(Seg("fixed", ctx.shape(t)[dim]))
        return Rep(dim, tuple(segs))
    if any(v.dim == dim or v.inner == dim for v in reps):
        return ctx.refuse(node, "concatenation mixing hidden and flattened axes")
    # along another dimension (tokens, batch): every piece carries the same element
    for t, v in zip(tensors, vals):
        if isinstance(v, Rep):
            if (v.dim, v.inner, v.heads, v.repeat, v.units) != (first.dim, first.inner, first.heads, first.repeat, first.units):
                return ctx.refuse(node, "concatenating hidden tensors with different unit layouts")
            ctx.tie(first, v, "same", "concatenation")
        elif isinstance(v, Param):
            # a class token: covariant with the stream it joins
            if first.heads is not None or first.repeat != 1 or v.dims[first.dim] is None:
                return ctx.refuse(node, f"parameter {v.fqn!r} joins hidden units along a layout the action cannot follow")
            ctx.bind(v.fqn, v.dims[first.dim], first, "co")
        elif isinstance(v, Derived):
            ctx.refuse_derived(v)
        else:
            ctx.freeze(first, "concatenated with a fixed tensor")
    return replace(first, scalar=all(v.scalar for v in reps))


@rule(aten.stack.default)
def stack(ctx, node):
    """GPT-J's rotate_every_two, ``stack((-x[..., 1::2], x[..., ::2]), -1)`` flattened back: the
    right-angle rotation of every plane (2i, 2i + 1), which commutes with the complex scalars per
    pair of that layout (rules/_rotary.py). Other stacks of hidden tensors are refused."""
    from ._rotary import rotate_pairs_source

    src = rotate_pairs_source(ctx, node)
    x = ctx.rep(src) if src is not None else None
    last = len(ctx.shape(src)) - 1 if src is not None else None
    if isinstance(x, Rep) and x.heads is not None and x.inner == last and not x.scalar and x.merged == 1:
        ctx.constrain(x, Constraint("block", "rotary embeddings (rotate_every_two)", heads=x.heads,
                                    inner=Constraint("complex", "rotate_every_two", layout="interleaved")))
        return replace(x, scalar=True)  # only read by the flatten back (checked), which returns x
    if isinstance(x, Rep) and x.heads is None and x.dim == last and not x.scalar and x.repeat == 1:
        ctx.constrain(x, Constraint("complex", "rotary embeddings (rotate_every_two)", layout="interleaved"))
        return replace(x, scalar=True)
    return ctx.refuse(node, "stacking hidden tensors")


def _norm_slice(start, stop, step, n):
    return slice(start, stop, step).indices(n)


@rule(aten.slice.Tensor, param_view=True)
def slice_(ctx, node):
    x = ctx.rep(node.args[0])
    a = list(node.args) + [None] * 4
    si = ctx.shape(node.args[0])
    dim = (a[1] if a[1] is not None else 0) % len(si)
    start, stop, step = _norm_slice(a[2], a[3], a[4] if a[4] is not None else 1, si[dim])
    if isinstance(x, Param):
        if (start, stop, step) == (0, si[dim], 1) or x.dims[dim] is None:
            return x
        return Derived(frozenset([x.fqn]), "slice", ctx.module())
    if not isinstance(x, Rep):
        return x
    if (start, stop, step) == (0, si[dim], 1):
        return x
    if dim == x.dim and x.heads is None:
        from ._rotary import rotate_half_slice

        if x.repeat == 1 and not x.scalar and dim == len(si) - 1 and rotate_half_slice(ctx, node):
            return replace(x, scalar=True)  # half of a rotary rotation of one head, used only there
        if step != 1 or x.repeat != 1:
            return ctx.refuse(node, "strided slicing (or slicing a flattened tensor) of a hidden axis")
        return Rep(x.dim, sub_segs(x.segs, start, stop))
    if dim == x.dim:
        return ctx.refuse(node, "slicing the heads")
    if dim == x.inner:
        from ._rotary import rotate_half_slice

        if not x.scalar and rotate_half_slice(ctx, node):
            # one half of a rotate_half, used only there: the cat claims what it commutes with
            return replace(x, scalar=True)
        ctx.constrain(x, Constraint("block", "slicing inside heads: per-head scalars only (a sound subgroup)",
                                    heads=x.heads, inner=Constraint("scalar", "sliced heads")))
        return replace(x, scalar=True)
    return x


@rule(aten.select.int)
def select(ctx, node):
    x = ctx.rep(node.args[0])
    si = ctx.shape(node.args[0])
    dim = node.args[1] % len(si)
    if not isinstance(x, Rep):
        return x
    if dim in (x.dim, x.inner):
        if x.heads is not None and dim == x.dim and not x.scalar and x.merged == 1:
            # one block of a packed projection (MultiheadAttention's in_proj viewed as (3, E)): a
            # plain range of its units, on the inner dimension
            d = x.units // x.heads
            i = node.args[2] % si[dim]
            inner = x.inner - (1 if x.inner > dim else 0)
            return Rep(inner, sub_segs(x.segs, i * d, (i + 1) * d))
        return ctx.refuse(node, "picking a single unit of a hidden axis")
    mapping = [k if k < dim else k - 1 for k in range(len(si))]
    return replace(x, dim=mapping[x.dim], inner=None if x.inner is None else mapping[x.inner])


@rule(aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.unbind.int, aten.tensor_split.sections
      if hasattr(aten.tensor_split, "sections") else None)
def split(ctx, node):
    x = ctx.rep(node.args[0])
    si = ctx.shape(node.args[0])
    outs = node.meta["val"]
    if node.target is aten.unbind.int:
        dim = (node.args[1] if len(node.args) > 1 else 0) % len(si)
        if isinstance(x, Rep):
            if dim in (x.dim, x.inner):
                return ctx.refuse(node, "unbinding a hidden axis")
            mapping = [k if k < dim else k - 1 for k in range(len(si))]
            x = replace(x, dim=mapping[x.dim], inner=None if x.inner is None else mapping[x.inner])
        return [x] * len(outs)
    dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % len(si)
    if not isinstance(x, Rep) or dim not in (x.dim, x.inner):
        return [x] * len(outs)
    if dim == x.inner:
        from ._rotary import rotate_half_slice

        if not x.scalar and rotate_half_slice(ctx, node):
            # the two halves of a rotate_half, used only there: the cat claims what it commutes with
            return [replace(x, scalar=True)] * len(outs)
        ctx.constrain(x, Constraint("block", "splitting inside heads: per-head scalars only", heads=x.heads,
                                    inner=Constraint("scalar", "split heads")))
        return [replace(x, scalar=True)] * len(outs)
    if x.heads is not None:
        return ctx.refuse(node, "splitting the heads")
    from ._rotary import rotate_half_slice

    if x.repeat == 1 and not x.scalar and dim == len(si) - 1 and rotate_half_slice(ctx, node):
        return [replace(x, scalar=True)] * len(outs)  # the halves of a rotate_half of one head
    if x.repeat != 1:
        return ctx.refuse(node, "splitting a flattened hidden axis")
    res, pos = [], 0
    for o in outs:
        n = int(o.shape[dim])
        res.append(Rep(x.dim, sub_segs(x.segs, pos, pos + n)))
        pos += n
    return res


@rule(operator.getitem, param_view=True)
def getitem(ctx, node):
    v = ctx.value(node.args[0])
    if isinstance(v, list):
        out = v[node.args[1]]
        return out
    if v is None:
        return None
    if isinstance(v, (Param, Derived)):
        return Derived(frozenset([v.fqn]) if isinstance(v, Param) else v.fqns, "getitem", ctx.module())
    return v


@rule(aten.constant_pad_nd.default, aten.pad.default)
def pad(ctx, node):
    x = ctx.rep(node.args[0])
    if not isinstance(x, Rep):
        return x
    pads = node.args[1]
    if node.target is aten.pad.default:
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
    else:
        mode, value = "constant", node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    nd = len(ctx.shape(node))
    for d in (x.dim, x.inner):
        if d is None:
            continue
        k = nd - 1 - d
        if 2 * k + 1 < len(pads) and (pads[2 * k] or pads[2 * k + 1]):
            if d == x.inner or x.heads is not None:
                return ctx.refuse(node, "padding head-split units")
            if mode != "constant" or value not in (None, 0, 0.0) or x.repeat != 1:
                return ctx.refuse(node, "non-zero padding of the hidden axis")
            segs = (Seg("zero", pads[2 * k]),) if pads[2 * k] else ()
            segs += x.segs + ((Seg("zero", pads[2 * k + 1]),) if pads[2 * k + 1] else ())
            return Rep(x.dim, segs)
    if mode == "constant" and value not in (None, 0, 0.0):
        ctx.permutations_only(x, "constant padding")
    return x


@rule(aten.index.Tensor)
def index(ctx, node):
    x = ctx.rep(node.args[0])
    idx = node.args[1]
    if not isinstance(x, Rep):
        return x
    if any(isinstance(ctx.value(i), Rep) for i in idx if isinstance(i, fx.Node)):
        return ctx.refuse(node, "indexing with hidden units")
    used = [d for d, i in enumerate(idx) if i is not None]
    if x.dim in used or (x.inner is not None and x.inner in used):
        return ctx.refuse(node, "indexing the hidden axis with a tensor")
    si, so = ctx.shape(node.args[0]), ctx.shape(node)
    # advanced indexing on leading dimensions before the units: the unit dims keep their distance to the end
    if max(used) < x.dim and used == list(range(len(used))):
        shift = len(so) - len(si)
        return replace(x, dim=x.dim + shift, inner=None if x.inner is None else x.inner + shift)
    return ctx.refuse(node, "indexing that moves the hidden axis")
