"""Rotary embeddings: ``q * cos + rotate_half(q) * sin`` on head-split queries and keys.

The transforms of a head's units that commute with every step of rotary embeddings are the
complex scalars per frequency pair (:class:`~.._site_groups.ComplexDiagonal`; the proof is in
docs/transformer_symmetries.md, section 4). The rules claim them step by step, each step being
a map that commutes with every such element:

* ``x * c`` with a constant ``c`` varying along the head's units only: ``diag(c)`` commutes with a
  complex scalar on the pair ``(p, q)`` iff ``c_p = c_q``. The constant's values are read from the
  graph (:func:`constant_value`: buffers, lifted constants and the ops computing on them, such as
  Hugging Face's ``cat((freqs, freqs)).cos()``), and the layout whose pairs it is constant on is
  the one claimed: ``"half"`` (units ``i``, ``i + d/2``) or ``"interleaved"`` (``2i``, ``2i + 1``).
  A constant depending on the inputs, or constant on no pairing, keeps only per-head scalars.
* ``rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])`` is the rotation by a right angle in every
  plane ``(i, i + d/2)``, a complex scalar itself (``i``): it commutes with the ``"half"``
  commutant. The pattern (two halves of one tensor, one negated, joined in the other order, used
  nowhere else) is recognised from the graph (:func:`rotate_half_source`); so is GPT-J's
  ``stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)``, the same for the ``"interleaved"`` planes
  ``(2i, 2i + 1)`` (:func:`rotate_pairs_source`). Other uses of slices inside heads keep per-head
  scalars.

Where the frequencies of two pairs coincide (or a pair does not rotate), the true group is larger
(``GL(k, C)`` on the coinciding pairs); the rules then still claim the complex scalars per pair,
a sound subgroup, and say so in a note.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

from .._capture import LEAF_OP
from .._trace import Constraint

__all__ = ["constant_value", "pair_layout", "rotary_factor", "rotary_factor_one_head", "rotate_half_source",
           "rotate_pairs_source", "rotate_half_slice"]

aten = torch.ops.aten


_RANDOM = ("rand", "dropout", "bernoulli", "normal")  # ops whose value at tracing time means nothing


class _NoValue(Exception):
    """A node whose value depends on the inputs (or on an op the evaluation does not run)."""


def _model_tensor(model, fqn):
    mod, _, name = fqn.rpartition(".")
    m = model.get_submodule(mod) if mod else model
    return getattr(m, name)


def _eval(ctx, a, cache):
    if isinstance(a, (list, tuple)):
        return type(a)(_eval(ctx, x, cache) for x in a)
    if isinstance(a, dict):
        return {k: _eval(ctx, v, cache) for k, v in a.items()}
    if not isinstance(a, fx.Node):
        return a
    if a in cache:
        if cache[a] is _NoValue:
            raise _NoValue
        return cache[a]
    try:
        cache[a] = _eval_node(ctx, a, cache)
    except _NoValue:
        cache[a] = _NoValue
        raise
    return cache[a]


def _eval_node(ctx, n, cache):
    cap = ctx.cap
    if n.op == "placeholder":
        fqn = cap.params.get(n.name)
        if fqn is not None:
            return _model_tensor(cap.model, fqn).detach()
        ep = getattr(cap, "exported", None)
        if ep is not None and n.name in getattr(cap, "constants", ()):
            for spec in ep.graph_signature.input_specs:
                if spec.arg.name == n.name and spec.target in ep.constants:
                    return ep.constants[spec.target]
        raise _NoValue  # a user input
    if n.op == "get_attr":
        ep = getattr(cap, "exported", None)
        if ep is None:
            raise _NoValue
        v = ep.graph_module
        for part in str(n.target).split("."):
            v = getattr(v, part)
        return v
    if n.op != "call_function" or n.target is LEAF_OP:
        raise _NoValue
    t = n.target
    if t is not operator.getitem and not (isinstance(t, torch._ops.OpOverload) and t.namespace == "aten"):
        raise _NoValue
    if isinstance(t, torch._ops.OpOverload) and any(w in t.__name__ for w in _RANDOM):
        raise _NoValue
    args, kwargs = _eval(ctx, n.args, cache), _eval(ctx, n.kwargs, cache)
    with torch.no_grad():
        return t(*args, **kwargs)


def _tensors_read(ctx, node) -> frozenset:
    """The parameters and buffers (canonical names) ``node``'s value is computed from."""
    out, seen, todo = set(), set(), [node]
    while todo:
        n = todo.pop()
        if not isinstance(n, fx.Node) or n in seen:
            continue
        seen.add(n)
        if n.op == "placeholder" and n.name in ctx.cap.params:
            out.add(ctx.cap.params[n.name])
        todo.extend(n.all_input_nodes)
    return frozenset(out)


def constant_value(ctx, node):
    """The value of a constant node (one computed from buffers and constants only), evaluated
    with the model's own tensors; None when it depends on the inputs. A claim that rests on the
    value must not be broken by the action: :func:`_rely_on` records the buffers read."""
    cache = ctx.__dict__.setdefault("_rotary_constants", {})
    try:
        v = _eval(ctx, node, cache)
    except _NoValue:
        return None
    except Exception:  # noqa: BLE001 - an op that cannot run outside the export: no value, no claim
        return None
    return v if isinstance(v, torch.Tensor) else None


def _rely_on(ctx, node):
    """A claim rests on ``node``'s value: the trace refuses (at its end) if a binding moves a
    parameter or buffer that value is computed from."""
    read = _tensors_read(ctx, node)
    if read:
        ctx.derived.append((read, ctx.where()))


def pair_layout(c: torch.Tensor, d: int):
    """The pairing ``c`` (rows of ``d`` values along a head's units) is constant on:
    ``"constant"`` (all units alike), ``"half"``, ``"interleaved"``, or None. Equality is up to
    a few units in the last place (the same computation gives the same bits)."""
    c = c.detach().to(torch.float64).reshape(-1, d)
    tol = 8 * torch.finfo(torch.float32).eps * max(float(c.abs().max()), 1e-30)

    def same(a, b):
        return bool(((a - b).abs() <= tol).all())

    if same(c, c[:, :1]):
        return "constant"
    if d % 2:
        return None
    if same(c[:, : d // 2], c[:, d // 2:]):
        return "half"
    if same(c[:, 0::2], c[:, 1::2]):
        return "interleaved"
    return None


def _coinciding_pairs(c: torch.Tensor, d: int, layout: str):
    """Pairs whose factor columns coincide over all positions, or are constant (no rotation
    seen): where the true group is larger than the complex scalars per pair."""
    c = c.detach().to(torch.float64).reshape(-1, d)
    cols = c[:, : d // 2] if layout == "half" else c[:, 0::2]
    if cols.shape[0] < 2:
        return []
    tol = 8 * torch.finfo(torch.float32).eps * max(float(cols.abs().max()), 1e-30)
    out = []
    for i in range(cols.shape[1]):
        if bool(((cols[:, i] - cols[0, i]).abs() <= tol).all()):
            out.append((i,))
        for j in range(i + 1, cols.shape[1]):
            if bool(((cols[:, i] - cols[:, j]).abs() <= tol).all()):
                out.append((i, j))
    return out


def rotary_factor(ctx, node, x, other, k_inner):
    """``x * c`` (``x`` head-split, ``c`` a constant varying along the inner units, not along the
    heads): the commutant of ``diag(c)`` as far as the rules can claim it (module docstring).
    ``k_inner``: the dimension of ``other`` broadcast against ``x``'s inner units."""
    d = x.units // x.heads
    value = constant_value(ctx, other)
    layout = None
    if value is not None and k_inner is not None and 0 <= k_inner < value.dim() and value.shape[k_inner] == d:
        c = value.movedim(k_inner, -1)
        layout = pair_layout(c, d)
    if layout is not None:
        _rely_on(ctx, other)
    if layout == "constant":
        if d >= 4 and not bool((value == value.reshape(-1)[0]).all()):
            # a position-dependent factor alike on all units: with a rotate_half, every frequency equal
            ctx.note(f"per-position factor in module {ctx.module()!r} alike on all units of a head: if it is a rotary "
                     "factor, all its frequencies coincide and the transforms commuting with the rotation form a "
                     "larger group than the complex scalars per pair claimed (a sound subgroup)")
        return x  # c I on every head: commutes with everything
    if layout is not None:
        ctx.constrain(x, Constraint("block", f"rotary embeddings ({layout} pairs)", heads=x.heads,
                                    inner=Constraint("complex", "rotary embeddings", layout=layout)))
        coinciding = _coinciding_pairs(value.movedim(k_inner, -1), d, layout)
        if coinciding:
            shown = ", ".join(map(str, coinciding[:4])) + (f" and {len(coinciding) - 4} more" if len(coinciding) > 4 else "")
            ctx.note(f"rotary embeddings in module {ctx.module()!r}: frequency pairs {shown} coincide or do not rotate "
                     "on the example's positions (longer example sequences may separate them); the transforms "
                     "commuting with them form a larger group than the complex scalars per pair claimed (a sound subgroup)")
        return x
    ctx.constrain(x, Constraint("block", "rotary / per-position factor: per-head scalars only (a sound subgroup)",
                                heads=x.heads, inner=Constraint("scalar", "rotary")))
    why = "it depends on the inputs" if value is None else "it is constant on no pairing of the units"
    ctx.note(f"per-head factors in module {ctx.module()!r} (rotary embeddings?): {why}, so only per-head scalars are "
             f"claimed for these heads ({x.heads} dimensions); the transforms commuting with rotations "
             f"(a complex scalar per frequency pair) would have {x.heads * d}: a sound subgroup")
    from dataclasses import replace

    return replace(x, scalar=True)


def rotary_factor_one_head(ctx, node, x, other, k_units) -> bool:
    """``x * c`` with ``x``'s units on the last dimension and no head split (one key/value head of
    multi-query attention) and ``c`` varying along the tokens: when ``c`` is constant on the pairs
    of a layout, constrain ``x``'s class to the complex scalars of that layout and return True;
    else False (the caller keeps its general rule)."""
    value = constant_value(ctx, other)
    d = x.units
    if value is None or k_units is None or not 0 <= k_units < value.dim() or value.shape[k_units] != d:
        return False
    layout = pair_layout(value.movedim(k_units, -1), d)
    if layout not in ("half", "interleaved"):
        return False
    _rely_on(ctx, other)
    ctx.constrain(x, Constraint("complex", f"rotary embeddings ({layout} pairs)", layout=layout))
    return True


# rotate_half ---------------------------------------------------------------------------------

_SPLITS = (aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default)


def _half_of(ctx, n):
    """(source, dim, which) when ``n`` is the lower (``which`` 0) or upper (1) half of a tensor
    along a dimension: ``x[..., :h]`` / ``x[..., h:]``, or an output of ``x.chunk(2)`` /
    ``x.split(h)`` into two halves; else None."""
    if not (isinstance(n, fx.Node) and n.op == "call_function"):
        return None
    if n.target is aten.slice.Tensor:
        a = list(n.args) + [None] * 4
        si = ctx.shape(n.args[0])
        if si is None:
            return None
        dim = (a[1] if a[1] is not None else 0) % len(si)
        size = si[dim]
        rng = slice(a[2], a[3], a[4] if a[4] is not None else 1).indices(size)
        if size % 2 == 0 and rng == (0, size // 2, 1):
            return n.args[0], dim, 0
        if size % 2 == 0 and rng == (size // 2, size, 1):
            return n.args[0], dim, 1
        if size % 2 == 0 and rng in ((0, size, 2), (1, size, 2)):
            return n.args[0], dim, 2 + rng[0]  # 2: the even units, 3: the odd ones (interleaved pairs)
        return None
    if n.target is operator.getitem and isinstance(n.args[0], fx.Node) and n.args[0].target in _SPLITS:
        sp = n.args[0]
        si, outs = ctx.shape(sp.args[0]), sp.meta.get("val")
        if si is None or not isinstance(outs, (list, tuple)) or len(outs) != 2:
            return None
        dim = (sp.args[2] if len(sp.args) > 2 else sp.kwargs.get("dim", 0)) % len(si)
        if tuple(outs[0].shape) != tuple(outs[1].shape) or 2 * int(outs[0].shape[dim]) != si[dim]:
            return None
        if any(u.target is not operator.getitem for u in sp.users):
            return None
        return sp.args[0], dim, int(n.args[1]) % 2
    return None


def _only_user(n):
    users = list(n.users)
    return users[0] if len(users) == 1 else None


def _is_neg(n):
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target is aten.neg.default


def rotate_half_source(ctx, cat_node):
    """The node ``x`` when ``cat_node`` is ``cat(-x[..., h:], x[..., :h])`` or
    ``cat(x[..., h:], -x[..., :h])`` along ``x``'s last dimension (``h`` = half its size), each
    slice and the negation used only there; else None."""
    if cat_node.target not in (aten.cat.default,) or not cat_node.args or len(cat_node.args[0]) != 2:
        return None
    nd = len(ctx.shape(cat_node))
    dim = (cat_node.args[1] if len(cat_node.args) > 1 else cat_node.kwargs.get("dim", 0)) % nd
    a, b = cat_node.args[0]
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or _is_neg(a) == _is_neg(b):
        return None  # exactly one half negated: +-i on every plane (a plain swap does not commute)
    ha = _half_of(ctx, a.args[0] if _is_neg(a) else a)
    hb = _half_of(ctx, b.args[0] if _is_neg(b) else b)
    if ha is None or hb is None or ha[0] is not hb[0] or ha[1] != dim or hb[1] != dim or dim != nd - 1:
        return None
    if (ha[2], hb[2]) != (1, 0):
        return None
    for t in (a, b):
        if _only_user(t) is not cat_node:
            return None
        if _is_neg(t) and _only_user(t.args[0]) is not t:
            return None
    return ha[0]


def _is_view(n):
    return isinstance(n, fx.Node) and n.op == "call_function" and n.target in (
        aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints)


def rotate_pairs_source(ctx, stack_node):
    """The node ``x`` when ``stack_node`` is ``stack((-x[..., 1::2], x[..., ::2]), -1)`` (or the
    signs swapped) whose only use flattens it back to ``x``'s shape -- GPT-J's rotate_every_two,
    the right-angle rotation of every plane ``(2i, 2i + 1)`` -- each piece used only there; else None."""
    if stack_node.target is not aten.stack.default or len(stack_node.args[0]) != 2:
        return None
    nd = len(ctx.shape(stack_node))
    dim = (stack_node.args[1] if len(stack_node.args) > 1 else stack_node.kwargs.get("dim", 0)) % nd
    a, b = stack_node.args[0]
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or _is_neg(a) == _is_neg(b) or dim != nd - 1:
        return None
    ha = _half_of(ctx, a.args[0] if _is_neg(a) else a)
    hb = _half_of(ctx, b.args[0] if _is_neg(b) else b)
    if ha is None or hb is None or ha[0] is not hb[0] or (ha[2], hb[2]) != (3, 2) or ha[1] != nd - 2:
        return None
    for t in (a, b):
        if _only_user(t) is not stack_node or (_is_neg(t) and _only_user(t.args[0]) is not t):
            return None
    flat = _only_user(stack_node)
    if not _is_view(flat) or ctx.shape(flat) != ctx.shape(ha[0]):
        return None
    return ha[0]


def rotate_half_slice(ctx, node):
    """Whether ``node`` (a slice of a head-split tensor, or a split into two halves) only feeds
    a rotate_half (:func:`rotate_half_source`) of its input."""
    halves = [u for u in node.users] if node.target in _SPLITS else [node]
    if not halves or len(halves) != (2 if node.target in _SPLITS else 1):
        return False
    for h in halves:
        user = _only_user(h)
        if user is not None and _is_neg(user):
            user = _only_user(user)
        if user is None:
            return False
        if user.target is aten.cat.default and rotate_half_source(ctx, user) is node.args[0]:
            continue
        if user.target is aten.stack.default and rotate_pairs_source(ctx, user) is node.args[0]:
            continue
        return False
    return True
