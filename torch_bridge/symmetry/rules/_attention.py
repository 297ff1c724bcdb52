"""Attention: ``scaled_dot_product_attention``, hand-written attention (products of two hidden
tensors: ``q @ k.transpose(-2, -1)`` and ``scores @ v``) and softmax.

Per head h the scores are :math:`q_h k_h^T`: unchanged by :math:`q_h \\to q_h A_h^T`,
:math:`k_h \\to k_h A_h^{-1}` for any invertible :math:`A_h` (the key class carries the
inverse transpose of the query class: relation "dual"), and by a permutation of the heads
shared by queries, keys and values. The output of head h is :math:`\\mathrm{softmax}(\\cdot) v_h`,
so values carry their own :math:`B_h \\in GL(d_v)` which the output projection's columns undo.
Causal and padding masks act per token: no constraint. Softmax over the units (not over
tokens) allows permutations only.

Grouped-query attention (``repeat_kv``, ``repeat_interleave``, ``enable_gqa``, one key/value head
expanded to all query heads): :func:`repeat_heads` lists each key/value head's units once per
query head it serves, so the query heads of a group and their output-projection blocks share the
element of their key/value head (the head permutations are not represented; a note says so).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .._trace import FIXED, Constraint, Derived, Param, Rep, sub_segs
from . import rule

aten = torch.ops.aten


def _gl_heads(rep, reason):
    inner = Constraint("gl", reason)
    if rep.heads is None:
        return inner
    return Constraint("block", reason, heads=rep.heads, inner=inner)


def _scores_value(q: Rep):
    """The scores q k^T carry the head permutation of q's class only."""
    from dataclasses import replace

    return replace(q, inner=None, scalar=False)


def _qk(ctx, node, q, k, nd):
    """Constrain and tie a query/key pair whose units are contracted."""
    if isinstance(q, Rep) and isinstance(k, Rep):
        if q.heads != k.heads or q.units != k.units:
            return ctx.refuse(node, "queries and keys with different head layouts (grouped-query attention?)",
                              "use as many key/value heads as query heads")
        ctx.constrain(q, _gl_heads(q, "attention query/key"))
        ctx.tie(q, k, "dual", "attention scores q k^T")
        return True
    for r in (q, k):
        if isinstance(r, Rep):
            ctx.freeze(r, "attention against fixed keys/queries")
    return False


def repeat_heads(ctx, node, x: Rep, g: int, head_major: bool = True):
    """``x`` with every head repeated ``g`` times along the head dimension: grouped-query
    attention's ``repeat_kv`` (expand + reshape), ``repeat_interleave`` and sdpa's ``enable_gqa``
    (``head_major``: head ``j`` at ``j * g .. j * g + g - 1``; else the ``g`` copies of all heads in a
    row). The result lists the units of each copy again (its segments repeat the key/value
    head's range), so everything tied to the repeated heads (each query head's queries through the
    scores, each output head's values through the output projection) ties to the one element of
    its key/value head: one element per key/value head, shared by its query heads
    (docs/transformer_symmetries.md, section 3)."""
    if x.heads is None or x.inner is None or x.scalar or x.merged != 1 or x.repeat != 1:
        return ctx.refuse(node, "repeating heads of a tensor whose units are not laid out as heads")
    d = x.units // x.heads
    heads = [sub_segs(x.segs, j * d, (j + 1) * d) for j in range(x.heads)]
    if head_major:
        order = [j for j in range(x.heads) for _ in range(g)]
    else:
        order = [j for _ in range(g) for j in range(x.heads)]
    ctx.note(f"grouped-query attention in module {ctx.module(node)!r}: one element per key/value head, shared by "
             f"its {g} query heads; the permutations of the key/value groups and of the query heads inside a group are "
             "not represented (a sound subgroup: fewer components, the same dimension)")
    return replace(x, segs=tuple(s for j in order for s in heads[j]), heads=x.heads * g)


@rule(aten.repeat_interleave.self_int)
def repeat_interleave(ctx, node):
    x = ctx.rep(node.args[0])
    if not isinstance(x, Rep):
        return x
    nd = len(ctx.shape(node))
    reps = node.args[1]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if dim is None or not isinstance(reps, int):
        return ctx.refuse(node, "repeat_interleave of a hidden tensor without a dimension or with a tensor of repeats")
    dim %= nd
    if x.heads is not None and dim == x.dim:
        return repeat_heads(ctx, node, x, reps)
    if dim in (x.dim, x.inner):
        return ctx.refuse(node, "repeating hidden units")
    return x


@rule(aten.scaled_dot_product_attention.default)
def sdpa(ctx, node):
    a = list(node.args) + [None] * 4
    q, k, v = (ctx.rep(t) for t in a[:3])
    mask = a[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if node.kwargs.get("enable_gqa") and isinstance(q, Rep) and q.heads is not None:
        # key/value heads repeated as by repeat_interleave (kv head j serves query heads j g .. j g + g - 1)
        for name in ("k", "v"):
            r = k if name == "k" else v
            if isinstance(r, Rep) and r.heads is not None and r.heads != q.heads:
                if q.heads % r.heads:
                    return ctx.refuse(node, f"grouped-query attention with {q.heads} query heads and {r.heads} "
                                      "key/value heads (not a multiple)")
                r = repeat_heads(ctx, node, r, q.heads // r.heads)
                k, v = (r, v) if name == "k" else (k, r)
    nd = len(ctx.shape(node))
    m = ctx.rep(mask) if mask is not None else None
    if isinstance(m, Derived):
        ctx.refuse_derived(m)
    if isinstance(m, Param) and isinstance(q, Rep) and q.heads is not None:
        ms = ctx.shape(mask)
        if len(ms) >= 3 and ms[len(ms) - 3] != 1:
            # a learned per-head mask that no rule moves: the head order is pinned
            ctx.constrain(q, Constraint("block", "learned per-head attention mask", heads=q.heads,
                                        inner=Constraint("gl", "queries"), perm="fixed"))
    if isinstance(m, Rep):
        # a learned per-head bias added to the scores (T5's relative position bias): its units
        # are the heads; they move with the head permutation of the queries
        ms = ctx.shape(mask)
        if not (isinstance(q, Rep) and q.heads is not None and m.heads is None and m.repeat == 1 and
                len(ms) - m.dim == 3 and m.units == q.heads):
            return ctx.refuse(node, "an attention mask computed from hidden units")
        ctx.permutations_only(m, "per-head additive bias")
        ctx.tie(q, m, "heads", "per-head additive bias")
    for name, r in (("query", q), ("key", k), ("value", v)):
        if isinstance(r, Rep) and r.merged != 1:
            return ctx.refuse(node, f"the {name}'s heads are merged with the batch dimension")
        if isinstance(r, Rep):
            ok = (r.heads is not None and r.dim == nd - 3 and r.inner == nd - 1) or (r.heads is None and r.dim == nd - 1)
            if not ok or r.repeat != 1:
                return ctx.refuse(node, f"the {name}'s units are not laid out as (..., heads, tokens, head_dim)")
    k, v = (_one_kv_head(ctx, node, q, r, nd) for r in (k, v))
    _qk(ctx, node, q, k, nd)
    if not isinstance(v, Rep):
        return FIXED
    if v.scalar:
        ctx.constrain(v, Constraint("block", "values", heads=v.heads, inner=Constraint("scalar", "values")))
    else:
        ctx.constrain(v, _gl_heads(v, "attention value/output"))
    if isinstance(q, Rep):
        if q.heads != v.heads:
            return ctx.refuse(node, "queries and values with different numbers of heads")
        if q.heads is not None:
            ctx.tie(q, v, "perm", "heads of queries, keys and values")
    return v


def _one_kv_head(ctx, node, q, r, nd):
    """Keys/values with their units on the last dimension only, against head-split queries: one
    key/value head read by every query head (multi-query attention, ``k.expand(B, H, T, d)`` of a
    single head); every index of the head dimension carries its one element. As one head repeated."""
    if isinstance(q, Rep) and q.heads is not None and isinstance(r, Rep) and r.heads is None and r.dim == nd - 1 \
            and r.repeat == 1 and not r.scalar and q.dim == nd - 3:
        return repeat_heads(ctx, node, replace(r, heads=1, dim=nd - 3, inner=nd - 1), q.heads)
    return r


def hidden_product(ctx, node, a: Rep, b: Rep):
    """``a @ b`` of two hidden tensors: the scores of hand-written attention, or scores @ values."""
    nd = len(ctx.shape(node))
    na, nb = len(ctx.shape(node.args[0])), len(ctx.shape(node.args[1]))
    if na != nd or nb != nd or nd < 3:
        return ctx.refuse(node, "a matrix product of hidden tensors with broadcasting")
    last, second = nd - 1, nd - 2
    if a.merged != b.merged:
        return ctx.refuse(node, "a product of hidden tensors with heads merged differently")
    a_units = {a.dim, a.inner} - {None}
    b_units = {b.dim, b.inner} - {None}
    contracted_a = (a.inner if a.heads is not None else a.dim) == last and (a.inner is not None or a.heads is None)
    contracted_b = (b.inner if b.heads is not None else b.dim) == second and (b.inner is not None or b.heads is None)
    if contracted_a and contracted_b:
        # q @ k^T
        if a.heads is not None and a.dim != b.dim:
            return ctx.refuse(node, "queries and keys with their heads on different dimensions")
        if a.heads is None and (a_units & {second} or b_units & {last}):
            return ctx.refuse(node, "a matrix product of hidden tensors")
        _qk(ctx, node, a, b, nd)
        if a.heads is None:
            return FIXED
        return _scores_value(a)
    # scores @ v: a carries a head permutation only, v is contracted over tokens
    if a.heads is not None and a.inner is None and b.heads is not None and b.inner == last and a.dim == b.dim:
        if a.heads != b.heads:
            return ctx.refuse(node, "scores and values with different numbers of heads")
        ctx.constrain(b, Constraint("block", "attention value/output", heads=b.heads, inner=Constraint("gl", "values"))
                      if not b.scalar else Constraint("block", "values", heads=b.heads, inner=Constraint("scalar", "values")))
        ctx.tie(a, b, "perm", "heads of queries, keys and values")
        return b
    return ctx.refuse(node, "a matrix product of hidden tensors that is not an attention pattern")


@rule(aten.softmax.int, aten._softmax.default, aten.log_softmax.int, aten._log_softmax.default)
def softmax(ctx, node):
    x = ctx.rep(node.args[0])
    if not isinstance(x, Rep):
        return x
    nd = len(ctx.shape(node))
    dim = node.args[1] % nd
    if dim == x.dim or dim == x.inner:
        if x.heads is not None:
            return ctx.refuse(node, "softmax over head-split units")
        ctx.permutations_only(x, "softmax")
    return x
