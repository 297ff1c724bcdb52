"""The action of a :class:`~._spec.SymmetryElement` on a model's tensors, binding by binding.

Every parameter or buffer the rules read is transformed ONCE (one underlying tensor, however
many names or uses it has), by every binding recorded for it:

* ``co``: :math:`t \\to A t` along ``dim`` (rows of a producer, biases, embeddings);
* ``contra``: :math:`t \\to A^{-T} t` along ``dim``, i.e. :math:`W \\to W A^{-1}` (columns of a
  consumer; after activations the engine's :math:`\\phi(A)`);
* ``perm``: the permutation of a monomial element only (per-channel PReLU slopes);
* ``diag``: a diagonal conjugated, :math:`w \\to \\mathrm{diag}(A_{out} \\mathrm{diag}(w) A_{in}^{-1})`
  for monomial elements sharing their permutation (depthwise convolutions, RMS-norm gains);
* ``bn_gamma``: :math:`\\gamma \\to D_2 \\mathrm{sign}(D_1) P \\gamma`, ``bn_var``:
  :math:`v \\to D_1^2 (P v + \\epsilon) - \\epsilon` (eq. E.47).
"""

from __future__ import annotations

import torch

from ._elements import MonomialElement, ScalarElement
from ._solve import pieces

__all__ = ["apply_bindings", "ACTIONS"]


def _runs(rep, sol, element_of):
    """(offset, length, element or None) along ``rep``'s units."""
    out, off = [], 0
    for kind, aid, chain, length in pieces(rep, sol.axis_atoms, sol.atoms):
        el = element_of(aid) if kind == "axis" else None
        if el is not None and chain:
            for act in chain:
                el = el.phi(act)
        out.append((off, length, el))
        off += length
    return out


def _piecewise(t, dim, repeat, runs, fn):
    parts, changed = [], False
    for off, length, el in runs:
        sub = t.narrow(dim, off * repeat, length * repeat)
        if el is None:
            parts.append(sub)
        else:
            parts.append(fn(el, sub))
            changed = True
    if not changed:
        return t
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _as_monomial(el):
    if isinstance(el, ScalarElement):  # c I (a layer-norm input whose permutation is frozen)
        return MonomialElement(torch.arange(el.n, device=el.device), el.value.expand(el.n))
    if not isinstance(el, MonomialElement):
        raise AssertionError(f"expected a monomial element, got {type(el).__name__}")
    return el


def _co(t, b, runs, sol, element_of):
    return _piecewise(t, b.dim, b.rep.repeat, runs, lambda el, s: el.apply(s, b.dim, repeat=b.rep.repeat))


def _contra(t, b, runs, sol, element_of):
    return _piecewise(t, b.dim, b.rep.repeat, runs, lambda el, s: el.apply_dual(s, b.dim, repeat=b.rep.repeat))


def _perm(t, b, runs, sol, element_of):
    return _piecewise(t, b.dim, b.rep.repeat, runs, lambda el, s: MonomialElement(
        _as_monomial(el).perm, torch.ones(el.n, dtype=torch.float64)).apply(s, b.dim, repeat=b.rep.repeat))


def _diagonal(t, b, runs, sol, element_of, sign_only=False):
    out = _co(t, b, runs, sol, element_of)
    if b.other is None:
        return out
    factors = []
    for off, length, el in _runs(b.other, sol, element_of):
        if el is None:
            factors.append(torch.ones(length, dtype=torch.float64, device=t.device))
        else:
            s = _as_monomial(el).scale.to(torch.float64).to(t.device)
            factors.append(torch.sign(s) if sign_only else 1.0 / s)
    shape = [1] * t.dim()
    shape[b.dim] = -1
    return out * torch.cat(factors).view(shape).to(out.dtype)


def _bn_gamma(t, b, runs, sol, element_of):
    return _diagonal(t, b, runs, sol, element_of, sign_only=True)


def _bn_var(t, b, runs, sol, element_of):
    eps = float(b.other)

    def var(el, s):
        el = _as_monomial(el)
        v = MonomialElement(el.perm, torch.ones(el.n, dtype=torch.float64)).apply(s, b.dim)
        sc = el.scale.to(torch.float64).to(s.device)
        # s^2 (v + eps) - eps written without the cancellation of two large terms
        return sc**2 * v.to(torch.float64) + (sc**2 - 1) * eps

    return _piecewise(t, b.dim, 1, runs, var)


#: binding kind -> action (one entry per kind a rule may bind)
ACTIONS = {"co": _co, "contra": _contra, "perm": _perm, "diag": _diagonal, "bn_gamma": _bn_gamma, "bn_var": _bn_var}


def _apply_one(t, b, sol, element_of):
    try:
        action = ACTIONS[b.variance]
    except KeyError:
        raise AssertionError(f"unknown binding kind {b.variance!r}") from None
    return action(t, b, _runs(b.rep, sol, element_of), sol, element_of)


def apply_bindings(t: torch.Tensor, bounds, sol, element_of) -> torch.Tensor:
    """``t`` transformed by every binding in ``bounds`` (computed in float64)."""
    dtype = t.dtype
    x = t.detach().to(torch.float64)
    whole = [b for b in bounds if b.part is None]
    for b in whole:
        x = _apply_one(x, b, sol, element_of)
    parts = {}
    for b in bounds:
        if b.part is not None:
            parts.setdefault(b.part, []).append(b)
    if parts:
        chunks = []
        G = next(iter(parts))[1]
        rows = x.shape[0] // G
        for j in range(G):
            sub = x.narrow(0, j * rows, rows)
            for b in parts.get((j, G), []):
                sub = _apply_one(sub, b, sol, element_of)
            chunks.append(sub)
        x = torch.cat(chunks, 0)
    return x.to(dtype)
