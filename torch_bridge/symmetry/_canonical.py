"""Canonical forms of networks modulo their symmetry group.

:func:`canonicalize` picks one member of each orbit, reading the model only through the
spec's public ``sites`` and ``bindings`` and acting only through ``spec.act``. Two passes
(the derivations and proofs of orbit invariance are in docs/canonical_forms.md):

1. **Frames**, site by site in execution order, each with the elements already chosen for
   the earlier sites applied. A site's *features* are the rows (along the site's units) of
   every tensor bound to it whose other bound dimensions belong to earlier sites or to none:
   rows transforming by the site element :math:`A` (a producer's ``co`` rows) and rows
   transforming by :math:`A^{-T}` (keys: ``dual`` rows; consumers' columns). The frame
   depends on the group (:mod:`._frames`): monomial sites get the scalings making each
   unit's row unit-norm with a positive sign key (today's behaviour: the permutation waits for
   pass 2); orthogonal sites the eigenframe; general-linear sites the balanced factorisation of
   a query/key or value/output pair, or whitening then a canonical rotation; block sites a
   frame per block; scalar sites one scaling.
2. **Permutations**, per permutation class (sites sharing a permutation or a head
   permutation): units are sorted by decreasing power-sum signature (sum v, v^2, v^3 of each of
   their rows in every tensor bound to the class); heads by the invariants of their frames and
   the power sums of their canonical rows. Power sums do not change under other sites'
   permutations, so classes are sorted independently.

Ties and dead units. A *dead* unit (feature row of norm <= ``tol`` times the largest in its
site) keeps scaling 1; its outgoing weights are then not canonical (they carry the orbit's
arbitrary scaling; for activations with sigma(0) = 0 they do not affect the function), so they
are zeroed wherever they would enter a later site's features or a signature. Units with equal
signatures keep their relative order, so the form is unique only up to permuting such
duplicates (generic networks have none); :func:`canonical_report` counts every such case.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ._elements import BlockElement, MonomialElement
from ._site_groups import Block, ComplexDiagonal, GeneralLinear, Monomial, Orthogonal, Scalar, ScaledPermutation
from ._frames import (dual_pair_frame, general_linear_frame, monomial_scalings, orthogonal_frame, scalar_frame,
                      signature_order)
from ._spec import SymmetryElement, SymmetrySpec, _as_tuple, symmetry_spec

__all__ = ["canonicalize", "canonical_scalings", "canonical_permutations", "canonical_report"]

POWERS = (1, 2, 3)


# Reading features through the public spec ------------------------------------------------------

def get_tensor(model, fqn: str) -> torch.Tensor:
    """The tensor ``fqn`` of a model, or of a dict of tensors (``spec.transformed_tensors``)."""
    if isinstance(model, dict):
        return model[fqn]
    mod, _, name = fqn.rpartition(".")
    m = model.get_submodule(mod) if mod else model
    t = m._parameters.get(name) if name in m._parameters else m._buffers.get(name)
    if t is None:
        raise ValueError(f"Argument 'model' does not have the architecture of the traced model (no tensor {fqn!r}).")
    return t


def act_inplace(spec: SymmetrySpec, g: SymmetryElement, model: nn.Module) -> nn.Module:
    """``model`` transformed by ``g`` in place (a working copy of ours: no deep copy per step)."""
    values = spec.transformed_tensors(g, model)
    with torch.no_grad():
        for fqn, v in values.items():
            get_tensor(model, fqn).copy_(v)
    return model


def _transparent(chain) -> bool:
    from ._activations import transparent

    return all(transparent(g) for g in chain)


def _law(b, site: str):
    """+1 if the rows of binding ``b`` along ``site`` transform by A, -1 by A^{-T}, None if by
    something else (an activation's phi, batch-norm variances, permutations only)."""
    if b.site == site:
        if b.variance in ("diag", "bn_gamma") and b.other_site == site:
            return None  # w -> D w D^{-1}: only permuted
        if b.variance in ("co", "diag", "bn_gamma"):
            base = 1
        elif b.variance == "contra":
            base = -1
        else:
            return None
        if b.chain and not _transparent(b.chain):
            return None
        return base if b.relation == "same" else -base
    return None


def _site_rows(t: torch.Tensor, b, dead_masks: dict, others) -> torch.Tensor:
    """The rows (units x features) of tensor ``t`` along binding ``b``'s range, with the entries
    of dead units of other sites (``dead_masks``, along their own bindings ``others``) zeroed."""
    x = t.detach().to(torch.float64)
    if b.part is not None:
        j, G = b.part
        rows = x.shape[0] // G
        x = x.narrow(0, j * rows, rows)
    for o in others:
        mask = dead_masks.get(o.site) if o.site is not None else None
        if mask is None or not bool(mask.any()) or o.part != b.part:
            continue
        idx = (torch.nonzero(mask)[:, 0] + o.offset)
        idx = (idx[:, None] * o.repeat + torch.arange(o.repeat)[None, :]).reshape(-1).to(x.device)
        x = x.index_fill(o.dim, idx, 0.0)
    r = b.repeat
    x = x.movedim(b.dim, 0).narrow(0, b.offset * r, b.length * r)
    return x.reshape(b.length, -1)


def _other_dims(bounds, b):
    """The bindings of the same tensor on other dimensions (ranges of ``b``'s own dimension
    are separate rows and do not affect ``b``'s rows)."""
    return [o for o in bounds if o.dim != b.dim and (o.part is None or b.part is None or o.part == b.part)]


@dataclass
class _Features:
    """The pass-1 features of one site: rows by A (``X``) and by A^{-T} (``Y``)."""

    X: list
    Y: list

    def stack(self, which):
        parts = self.X if which == "X" else self.Y
        return torch.cat(parts, 1) if parts else None


def _features(spec: SymmetrySpec, model, site, done: set, dead_masks: dict) -> _Features:
    X, Y = [], []
    for fqn, bounds in spec.bindings.items():
        mine = [b for b in bounds if b.site == site.name]
        if not mine:
            continue
        t = None
        seen = set()
        for b in mine:
            law = _law(b, site.name)
            key = (b.dim, b.offset, b.part)
            if law is None or key in seen:
                continue
            others = _other_dims(bounds, b)
            # usable only if every other bound dimension belongs to an earlier site or none
            if any(o.site is not None and o.site not in done for o in others):
                continue
            if b.variance in ("diag", "bn_gamma") and b.other_site is not None and b.other_site not in done:
                continue
            seen.add(key)
            if t is None:
                t = get_tensor(model, fqn)
            rows = _site_rows(t, b, dead_masks, others)
            (X if law > 0 else Y).append(rows)
    return _Features(X, Y)


# Pass 1: frames ---------------------------------------------------------------------------------

def _dense_frame(group, X, Y, tol):
    """Frame (element, invariants, ambiguous) of a dense (O or GL) group of size n, or of a
    group that gives its own (:meth:`ComplexDiagonal.frame`: a complex scalar per pair)."""
    n = group.n
    if isinstance(group, ComplexDiagonal):
        return group.frame(X, Y, tol)
    if X is None and Y is None:
        return GeneralLinear(n).identity(), torch.zeros(n, dtype=torch.float64), n
    if isinstance(group, Orthogonal):
        F = torch.cat([f for f in (X, Y) if f is not None], 1)
        f = orthogonal_frame(F, tol)
        return f.element, f.invariants, f.ambiguous
    if X is not None and Y is not None:
        f = dual_pair_frame(X, Y, tol)
        return f.element, f.invariants, f.ambiguous
    if X is not None:
        f = general_linear_frame(X, tol=tol)
        return f.element, f.invariants, f.ambiguous
    f = general_linear_frame(Y, tol=tol)  # a frame for A^{-T}: the site element is its dual
    return f.element.dual(), f.invariants, f.ambiguous


def _monomial_frame(group, X, Y, tol):
    """(element with identity permutation, dead mask) of a monomial group."""
    n = group.n
    if isinstance(group, ScaledPermutation):
        # one scalar for all units (c P): the frame of the whole row block, as for a Scalar site
        c = _scalar_frame(Scalar(n, group.scalings), X, Y, tol).value
        return MonomialElement(torch.arange(n), c.expand(n)), torch.zeros(n, dtype=torch.bool)
    if X is not None:
        return monomial_scalings(X, group, tol)
    if Y is not None:
        e, dead = monomial_scalings(Y, group, tol)  # rows by D^{-1}: invert the chosen scaling
        return MonomialElement(e.perm, 1.0 / e.scale), dead
    return group.identity(), torch.zeros(n, dtype=torch.bool)


def _scalar_frame(group, X, Y, tol):
    if X is not None:
        return scalar_frame(X, group, tol).element
    if Y is not None:
        return scalar_frame(Y, group, tol).element.inverse()
    return group.identity()


def _site_frame(site, feats: _Features, tol):
    """(element, dead mask or None, head invariants or None, ambiguous) of one site."""
    g = site.group
    X, Y = feats.stack("X"), feats.stack("Y")
    if isinstance(g, Monomial):
        e, dead = _monomial_frame(g, X, Y, tol)
        unfixed = X is None and Y is None and g.dimension + (g.scalings.negative is not None) > 0
        return e, dead, None, int(dead.sum()) + (g.n if unfixed else 0)
    if isinstance(g, Scalar):
        return _scalar_frame(g, X, Y, tol), None, None, 0
    if isinstance(g, (Orthogonal, GeneralLinear, ComplexDiagonal)):
        e, _, amb = _dense_frame(g, X, Y, tol)
        return e, None, None, amb
    if isinstance(g, Block):
        H, d = g.heads, g.inner.n
        heads = [(None if X is None else X[h * d:(h + 1) * d], None if Y is None else Y[h * d:(h + 1) * d]) for h in range(H)]
        if isinstance(g.inner, Monomial):
            parts = [_monomial_frame(g.inner, x, y, tol) for x, y in heads]
            scale = torch.cat([p[0].scale for p in parts])
            dead = torch.cat([p[1] for p in parts])
            return MonomialElement(torch.arange(g.n), scale), dead, None, int(dead.sum())
        if isinstance(g.inner, Scalar):
            els = [_scalar_frame(g.inner, x, y, tol) for x, y in heads]
            blocks = torch.stack([e.matrix() for e in els])
            return BlockElement(blocks, torch.arange(H)), None, None, 0
        frames = [_dense_frame(g.inner, x, y, tol) for x, y in heads]
        blocks = torch.stack([e.matrix() for e, _, _ in frames])
        inv = torch.stack([i for _, i, _ in frames])
        return BlockElement(blocks, torch.arange(H)), None, inv, sum(a for _, _, a in frames)
    raise AssertionError(f"unknown group {g!r}")  # pragma: no cover


def _frames_pass(spec, model, tol):
    """Pass 1: (element, dead masks, head invariants, ambiguous count, canonical-frame model)."""
    spec.check_model(model)
    els, dead_masks, head_inv, amb = {}, {}, {}, 0
    done: set = set()
    work = copy.deepcopy(model)
    for site in spec.sites:
        feats = _features(spec, work, site, done, dead_masks)
        e, dead, inv, a = _site_frame(site, feats, tol)
        amb += a
        els[site.name] = e
        if dead is not None and bool(dead.any()):
            dead_masks[site.name] = dead
        if inv is not None:
            head_inv[site.name] = inv
        act_inplace(spec, SymmetryElement({site.name: e}), work)
        done.add(site.name)
    return SymmetryElement(els), dead_masks, head_inv, amb, work


def canonical_scalings(spec: SymmetrySpec, model: nn.Module, tol: float = 1e-8) -> SymmetryElement:
    """Pass 1 of :func:`canonicalize`: every site's frame (monomial sites: the scalings making
    every unit's row unit-norm with a positive sign key; no permutations)."""
    return _frames_pass(spec, model, tol)[0]


# Pass 2: permutations ---------------------------------------------------------------------------

def _perm_classes(spec):
    """holder name -> sites sharing its permutation (head permutation), holders first."""
    names = {s.name for s in spec.sites}
    classes: dict = {}
    for s in spec.sites:
        if s.permutation == "free":
            classes.setdefault(s.name, []).insert(0, s)
        elif s.permutation != "fixed" and s.permutation in names:
            classes.setdefault(s.permutation, []).append(s)
    return classes


def _signature_rows(spec, model, site, dead_masks):
    """Every tensor's rows along ``site`` (all bindings, any law; first the concatenated rows
    transforming by A), dead units' entries of other sites zeroed and the site's own dead
    units' rows zeroed."""
    out, producer = [], []
    own = dead_masks.get(site.name)
    for fqn, bounds in spec.bindings.items():
        t = None
        for b in bounds:
            if b.site != site.name:
                continue
            if t is None:
                t = get_tensor(model, fqn)
            rows = _site_rows(t, b, dead_masks, _other_dims(bounds, b))
            if own is not None:
                rows = torch.where(own[:, None].to(rows.device), rows.new_zeros(()), rows)
            out.append(rows)
            if _law(b, site.name) == 1:
                producer.append(rows)
    # the producers' whole rows ([W | b]) first: the documented first key is their sum
    return ([torch.cat(producer, 1)] if producer else []) + out


def _power_sums(rows: torch.Tensor) -> torch.Tensor:
    return torch.stack([(rows**k).sum(1) for k in POWERS], 1)


def _unit_keys(spec, model, sites, dead_masks):
    keys = [_power_sums(r) for s in sites for r in _signature_rows(spec, model, s, dead_masks)]
    n = sites[0].size
    return torch.cat(keys, 1) if keys else torch.zeros(n, 0, dtype=torch.float64)


def _head_keys(spec, model, sites, dead_masks, head_inv):
    H = sites[0].group.heads
    feats = []
    for s in sites:
        if s.name in head_inv:
            feats.append(head_inv[s.name])
        d = s.group.inner.n
        for rows in _signature_rows(spec, model, s, dead_masks):
            per_head = rows.reshape(H, d * rows.shape[1])
            feats.append(_power_sums(per_head))
    return torch.cat(feats, 1) if feats else torch.zeros(H, 0, dtype=torch.float64)


def _block_monomial_order(spec, model, sites, dead_masks):
    """Units sorted inside each block, blocks by their sorted unit signatures."""
    g = sites[0].group
    H, d = g.heads, g.inner.n
    keys = _unit_keys(spec, model, sites, dead_masks)
    within = [signature_order(keys[h * d:(h + 1) * d]) + h * d for h in range(H)]
    hk = torch.stack([keys[w].reshape(-1) for w in within])
    heads = signature_order(hk)
    return torch.cat([within[h] for h in heads.tolist()])


def _perm_element(site, order, heads: bool):
    g = site.group
    if isinstance(g, Monomial):
        return MonomialElement(order, torch.ones(g.n, dtype=torch.float64))
    if isinstance(g, Block) and isinstance(g.inner, Monomial):
        if heads:  # a head order, expanded to units
            d = g.inner.n
            order = (order[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        return MonomialElement(order, torch.ones(g.n, dtype=torch.float64))
    d = g.inner.n
    return BlockElement(torch.eye(d, dtype=torch.float64).expand(g.heads, d, d), order)


def _permutation_pass(spec, model, dead_masks, head_inv):
    els = {}
    for holder, sites in _perm_classes(spec).items():
        g = sites[0].group
        if isinstance(g, Monomial):
            order = signature_order(_unit_keys(spec, model, sites, dead_masks))
            for s in sites:
                els[s.name] = _perm_element(s, order, heads=False)
        elif isinstance(g, Block) and isinstance(g.inner, Monomial):
            order = _block_monomial_order(spec, model, sites, dead_masks)
            for s in sites:
                els[s.name] = _perm_element(s, order, heads=False)
        elif isinstance(g, Block):
            order = signature_order(_head_keys(spec, model, sites, dead_masks, head_inv))
            for s in sites:
                els[s.name] = _perm_element(s, order, heads=True)
    return SymmetryElement(els)


def canonical_permutations(spec: SymmetrySpec, model: nn.Module, dead: dict | None = None) -> SymmetryElement:
    """Pass 2 of :func:`canonicalize`: sort the units (heads) of every permutation class by their
    signature (``model`` should already be in canonical frames; ``dead`` maps site names to
    masks of dead units, whose outgoing weights are ignored)."""
    spec.check_model(model)
    return _permutation_pass(spec, model, dead or {}, {})


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
        Relative threshold for dead units, vanishing sign keys and near-equal invariants.

    Returns
    -------
    (canonical_model, g)
        with ``spec.act(g, model)`` equal to ``canonical_model``; every member of the orbit
        gives the same canonical model up to float rounding (generic weights; see the module
        notes for ties).
    """
    if spec is None:
        if example_inputs is None:
            raise ValueError("Argument 'example_inputs' is required when no 'spec' is given.")
        spec = symmetry_spec(model, _as_tuple(example_inputs))
    g1, dead, head_inv, _, framed = _frames_pass(spec, model, tol)
    g2 = _permutation_pass(spec, framed, dead, head_inv)
    g = spec.compose(g2, g1)
    return spec.act(g, model), g


def canonical_report(model: nn.Module, spec: SymmetrySpec, tol: float = 1e-8) -> dict:
    """How unique the canonical form of ``model`` is: ``{"ambiguous": n, "dead": {site: k}}``
    (``ambiguous`` counts near-equal invariants, vanishing sign keys and dead units; 0 means
    the canonical form is unique)."""
    _, dead, _, amb, _ = _frames_pass(spec, model, tol)
    return {"ambiguous": amb, "dead": {k: int(v.sum()) for k, v in dead.items()}}
