"""Canonical forms of networks modulo their symmetry group.

:func:`canonicalize` picks one member of each orbit in two passes.

1. **Scalings and signs**, site by site in execution order. Each unit's *incoming row* is the
   row of the site's first producer (Linear/Conv: weights and bias; batch norm: gamma and
   beta), with every earlier site already canonical. The unit's scaling ``t`` in S is chosen
   so that ``t * row`` has norm 1 (S+ = (0, oo)), or norm nearest to 1 in log scale
   (S+ = g^Z), or is left alone (S+ = {1}); where S has negative elements the sign makes
   the *sign key* of the row positive: its sum, or if that vanishes (``|sum| <= tol *
   sum|v|``) its sum of cubes, then fifth powers.
2. **Permutations**, per permutation class. Every unit gets a signature: the power sums
   (sum v, sum v^2, sum v^3) of each of its incoming rows and outgoing columns, in a fixed
   order of modules. Power sums do not change under the permutations of other sites, so
   each class is sorted on its own: units are ordered by decreasing signature
   (lexicographic, first producer's row first).

Ties and dead units. A *dead* unit (incoming row of norm <= ``tol`` times the largest in its
site) keeps scaling 1 and sign +1. Its outgoing weights are then not canonical (they carry
the orbit's arbitrary scaling of the unit; for ReLU-like activations with sigma(0) = 0 they
do not affect the function), so they are ignored everywhere else: in the incoming rows of
later sites and in every signature; a dead unit's signature is its zero row. Units with identical signatures keep their relative order, so
the canonical form is unique only up to permuting such duplicates; generic (random or
trained) networks have none. A norm exactly half-way between two powers of a discrete
generator (norm = g^(k+1/2)) rounds half-to-even, which is not orbit-invariant; this has
probability zero for generic weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._graph import Rep
from ._solve import _pieces
from ._spec import SymmetryElement, SymmetrySpec, _as_tuple, symmetry_spec

__all__ = ["canonicalize", "canonical_scalings", "canonical_permutations"]


def _producer_of(spec: SymmetrySpec, axis: int):
    for call in spec._a.calls:
        if call.out_axis == axis:
            return call
    raise AssertionError(f"axis {axis} has no producer")


def _consumers_of(spec: SymmetrySpec, aid: int):
    """(call, entry positions of the atom's units along the call's input, units x repeat)."""
    out = []
    sol = spec._s
    for call in spec._a.calls:
        if call.kind in ("batchnorm", "layernorm") or not isinstance(call.in_rep, Rep):
            continue
        off = 0
        for kind, a, _, length in _pieces(call.in_rep, sol.axis_atoms, sol.atoms):
            if kind == "axis" and a == aid:
                r = call.in_rep.repeat
                units = torch.arange(off, off + length)
                pos = (units[:, None] * r + torch.arange(r)[None, :])
                out.append((call, pos))
            off += length
    return out


def _dead_entries(spec, rep, dead):
    """Boolean mask over the entries of ``rep``'s dimension: True where a dead unit sits."""
    parts = []
    for kind, aid, _, length in _pieces(rep, spec._s.axis_atoms, spec._s.atoms):
        site = spec._site_of_class.get(spec._s.scale_class[aid]) if kind == "axis" else None
        m = dead.get(site.name) if site is not None else None
        parts.append(m if m is not None else torch.zeros(length, dtype=torch.bool))
    mask = torch.cat(parts)
    return mask.repeat_interleave(rep.repeat) if rep.repeat > 1 else mask


def _rows(spec, call, module, g, atom, stats=False, inputs=True, dead=None):
    """The incoming rows (units x features) of ``atom`` under ``g`` (outputs untransformed).

    ``dead``: site name -> mask of dead units; their columns are zeroed (ignored), since a
    dead unit's outgoing weights are not canonical.
    """
    p = spec.transformed_parameters(call, module, g, inputs=inputs, outputs=False)
    if dead and call.kind in ("linear", "conv") and isinstance(call.in_rep, Rep):
        mask = _dead_entries(spec, call.in_rep, dead).to(p["weight"].device)
        if bool(mask.any()):
            p["weight"] = p["weight"].clone()
            p["weight"][:, mask] = 0
    sl = slice(atom.start, atom.stop)
    if call.kind in ("batchnorm", "layernorm"):
        cols = []
        cols += [p[k][sl] for k in ("weight", "bias") if k in p]
        if stats and "running_mean" in p:
            cols += [p["running_mean"][sl], torch.sqrt(p["running_var"][sl] + module.eps)]
        if not cols:
            return torch.zeros(atom.size, 0, dtype=torch.float64)
        return torch.stack(cols, 1).to(torch.float64)
    W = p["weight"][sl].reshape(atom.size, -1).to(torch.float64)
    if "bias" in p:
        W = torch.cat([W, p["bias"][sl].to(torch.float64)[:, None]], 1)
    return W


def _columns(call, module, pos):
    W = module.weight.detach().to(torch.float64)
    cols = W[:, pos.reshape(-1)]  # out x (units*r) x kernel...
    cols = cols.reshape(W.shape[0], pos.shape[0], pos.shape[1], -1)
    return cols.permute(1, 0, 2, 3).reshape(pos.shape[0], -1)


def _sign_key(rows: torch.Tensor, tol: float) -> torch.Tensor:
    key = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    undecided = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    for k in (1, 3, 5):
        pk = (rows**k).sum(1)
        scale = (rows.abs() ** k).sum(1)
        ok = undecided & (pk.abs() > tol * scale)
        key = torch.where(ok, torch.sign(pk), key)
        undecided &= ~ok
    return key


def _choose(norms: np.ndarray, keys: np.ndarray, group, dead: np.ndarray) -> np.ndarray:
    s = group.one_dimensional()
    n = len(norms)
    with np.errstate(divide="ignore"):
        lognorm = np.where(dead, 0.0, np.log(np.where(dead, 1.0, norms)))
    neg = None if s.negative is None else float(s.negative)
    minus_one = neg is not None and (neg == -1.0 or s.positive == "all" or bool(group.scalar_in_s([-1.0])[0]))
    if s.positive == "all":
        mag = np.exp(-lognorm)
    elif s.positive == "discrete":
        lg = math.log(float(s.generator))
        mag = np.exp(np.round(-lognorm / lg) * lg)
    else:
        mag = np.ones(n)
    if neg is None:
        return np.where(dead, 1.0, mag)
    if minus_one:
        return np.where(dead, 1.0, np.where(keys < 0, -mag, mag))
    # S generated by a negative r without -1 in S: elements r^m, sign (-1)^m.
    lr = math.log(-neg)
    out = np.ones(n)
    for i in range(n):
        if dead[i]:
            continue
        m0 = -lognorm[i] / lr
        want_odd = keys[i] < 0
        cands = [m for m in (math.floor(m0) - 1, math.floor(m0), math.ceil(m0), math.ceil(m0) + 1) if (m % 2 == 1) == want_odd]
        m = min(cands, key=lambda m: abs(m - m0))
        out[i] = neg**m
    return out


def canonical_scalings(spec: SymmetrySpec, model: nn.Module, tol: float = 1e-8) -> SymmetryElement:
    """Pass 1 of :func:`canonicalize`: the scalings (no permutations) making every unit's
    incoming row unit-norm with a positive sign key."""
    return _canonical_scalings(spec, model, tol)[0]


def _canonical_scalings(spec, model, tol):
    mods = spec._check_model(model)
    g = spec.identity()
    dead_units: dict = {}
    for site in spec.sites:
        s = site.group.one_dimensional()
        if s.positive == "trivial" and s.negative is None:
            continue
        atom = spec._classes[site._scale_class][0]
        call = _producer_of(spec, atom.axis)
        rows = _rows(spec, call, mods[call.module], g, atom, dead=dead_units)
        norms = torch.linalg.vector_norm(rows, dim=1).cpu().numpy()
        keys = _sign_key(rows, tol).cpu().numpy()
        biggest = norms.max() if len(norms) else 0.0
        dead = norms <= tol * max(biggest, 1e-300)
        t = _choose(norms, keys, site.group, dead)
        g.scales[site.name] = torch.as_tensor(t, dtype=torch.float64)
        if dead.any():
            dead_units[site.name] = torch.as_tensor(dead)
    return g, dead_units


def _signature(spec, mods, atoms, dead):
    feats = []
    for atom in atoms:
        site = spec._site_of_class.get(spec._s.scale_class[atom.id])
        own_dead = dead.get(site.name) if site is not None else None
        call = _producer_of(spec, atom.axis)
        feats.append(_rows(spec, call, mods[call.module], spec.identity(), atom, inputs=False, dead=dead))
        for ccall, pos in _consumers_of(spec, atom.id):
            cols = _columns(ccall, mods[ccall.module], pos)
            if own_dead is not None:
                cols = torch.where(own_dead[:, None].to(cols.device), cols.new_zeros(()), cols)
            feats.append(cols)
    return feats


def _perm_class_atoms(spec, holder):
    """Atoms (one list per site, in site order) of the permutation class held by ``holder``."""
    p = spec.site(holder)._perm_class
    sol = spec._s
    out = []
    for c, ats in sorted(spec._classes.items(), key=lambda kv: kv[1][0].id):
        if sol.perm_class[ats[0].id] == p:
            out += ats
    return out


def canonical_permutations(spec: SymmetrySpec, model: nn.Module, dead: dict | None = None) -> SymmetryElement:
    """Pass 2 of :func:`canonicalize`: sort the units of every permutation class by their
    power-sum signature (``model`` should already have canonical scalings; ``dead`` maps
    site names to masks of dead units, whose outgoing weights are ignored)."""
    mods = spec._check_model(model)
    dead = dead or {}
    perms = {}
    for holder in spec._perm_site.values():
        feats = _signature(spec, mods, _perm_class_atoms(spec, holder), dead)
        keys = []
        for f in feats:
            for k in (1, 2, 3):
                keys.append((f**k).sum(1).cpu().numpy())
        K = np.stack(keys, 1) if keys else np.zeros((spec.site(holder).size, 0))
        order = np.lexsort(tuple(-K[:, j] for j in reversed(range(K.shape[1])))) if K.shape[1] else np.arange(K.shape[0])
        perms[holder] = torch.as_tensor(order, dtype=torch.long)
    return SymmetryElement(perms, {})


def canonicalize(model: nn.Module, example_inputs=None, *, spec: SymmetrySpec | None = None, tol: float = 1e-8):
    """The canonical member of ``model``'s orbit and the element that maps ``model`` to it.

    Parameters
    ----------
    model : nn.Module
    example_inputs : Tensor or tuple of Tensor
        Used to trace the model when ``spec`` is not given.
    spec : SymmetrySpec, optional
        A spec of the model's architecture (saves the tracing).
    tol : float
        Relative threshold for dead units and for vanishing sign keys (see the module notes).

    Returns
    -------
    (canonical_model, g)
        with ``spec.act(g, model)`` equal to ``canonical_model``; every member of the orbit
        gives the same canonical model up to float rounding.
    """
    if spec is None:
        if example_inputs is None:
            raise ValueError("Argument 'example_inputs' is required when no 'spec' is given.")
        spec = symmetry_spec(model, _as_tuple(example_inputs))
    g1, dead = _canonical_scalings(spec, model, tol)
    scaled = spec.act(g1, model)
    g2 = canonical_permutations(spec, scaled, dead)
    g = spec.compose(g2, g1)
    return spec.act(g, model), g
