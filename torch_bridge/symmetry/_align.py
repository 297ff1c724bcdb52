"""Aligning two networks modulo their full symmetry group.

:func:`align` returns ``g`` with ``spec.act(g, model_b)`` as close as possible to ``model_a``,
reading the models through the spec's public ``sites`` and ``bindings`` only:

0. (``method="weights"``, ``balance=True``) both models are replaced by the minimum-norm
   points of their orbits under the continuous positive scalings (every such unit balanced:
   incoming norm = outgoing norm; :func:`_balanced`), the steps below run between those, and
   the balancing is folded back into ``g`` at the end;
1. both models are put in their canonical frames (pass 1 of :func:`canonicalize`: monomial
   sites get unit-norm rows with positive sign keys, orthogonal sites their eigenframe,
   general-linear sites their balanced or whitened frame, block sites a frame per head), so
   the remaining freedom is a permutation (head permutation) per permutation class;
2. the permutations start from the canonical sorting of both models (which already maps any
   member of ``model_a``'s orbit onto ``model_a``) and are then improved:

   * ``method="weights"``: coordinate descent over linear assignment problems, as Git
     Re-Basin's weight matching (Ainsworth et al. 2023) does for permutations alone: for
     each class in turn, maximise :math:`\\sum \\langle a_i, b_{\\pi(i)} \\rangle` over every
     row of every tensor bound to its units (heads: over the rows of whole heads), the other
     classes held fixed, and keep the new permutation only if the weight distance falls
     (a weight binding the class on two dimensions makes the assignment a linearisation),
     until a sweep changes nothing (``Block(H, Monomial)`` classes, whose permutations must
     keep blocks together, keep the canonical sorting);
   * ``method="activations"``: one assignment per monomial class on the correlation of the
     sites' producer outputs on ``data`` (any iterable of batches, statistics streamed batch by
     batch: :mod:`._align_data`; default ``example_inputs``), kept where it beats the canonical
     sorting strictly (classes whose producer output cannot be read, and head permutations,
     keep the canonical sorting); a site the data cannot decide gets an
     :class:`~._align_data.UnderdeterminedAlignmentWarning`;

3. with :math:`g_a, h_b` the frames of the two models, :math:`g = g_a^{-1} \\pi h_b`; then
   (``refine_scales=True``; when that is no better than leaving ``model_b`` alone, also
   from the identity, keeping the better result: the frames of two unrelated models need
   not be close) every orthogonal site is refined by orthogonal Procrustes and every
   general-linear site by least squares on its rows (per head for block sites), and every
   monomial site's scalings are re-chosen per unit to minimise the weight distance (a
   closed-form function of the unit's scaling t for each binding: t, 1/t, phi(t), sign t,
   t^2 for batch-norm variances; minimised over a fine grid of S), each step kept only if
   it lowers the distance. Dense sites first try keeping model b's own basis (only the head
   permutation applied), since the canonical frames of two unrelated models need not be
   close. A unit whose distance keeps falling towards t -> 0 or t -> oo (the
   infimum is not attained in S; e.g. batch-norm statistics favouring a vanishing unit) keeps
   its scaling.

4. with ``method="weights"`` a second route runs in the models' own frames: Git Re-Basin's
   weight matching from the identity (units weighted by their size, not normalised), where a
   class whose site holds a sign per unit (tanh, |x|, linear units; not a layer norm's global
   sign) also picks a sign per unit with
   its permutation; it is refined the same way and the closer of the two routes is kept.
   Both routes minimise the weight distance; neither is guaranteed to be the global optimum
   (docs/merging.md measures what that means for loss barriers).

For a planted pair (``model_b = spec.act(k, model_a)``) the frames coincide and each
assignment problem has the identity as its unique optimum (Cauchy-Schwarz), so ``g`` undoes
``k`` exactly (up to duplicate units and the ambiguities :func:`canonical_report` counts).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ._align_data import (Progress, UnderdeterminedAlignmentWarning, activation_matching, feature_distances,
                          first_batch, split_batch, stream_site_stats, warn_underdetermined)
from ._canonical import (_frames_pass, _law, _perm_classes, _perm_element, _permutation_pass, _site_rows,
                         act_inplace, get_tensor)
from ._elements import MonomialElement
from ._site_groups import Block, GeneralLinear, Monomial, Orthogonal
from ._frames import least_squares, procrustes
from ._spec import SymmetryElement, SymmetrySpec, _as_tuple, symmetry_spec

__all__ = ["align", "AlignmentReport", "weight_distance", "UnderdeterminedAlignmentWarning"]


@dataclass(frozen=True)
class AlignmentReport:
    """Distances before and after an alignment.

    ``distance_before``/``distance_after``: Euclidean distance between all floating-point
    parameters and buffers of ``model_a`` and of ``model_b`` / ``spec.act(g, model_b)``.
    ``iterations``: coordinate-descent sweeps (weights) or 1 (activations).

    With data (``method="activations"``, or ``data=`` with either method):
    ``feature_distance_before``/``feature_distance_after``: :math:`\\sqrt{\\sum_s \\mathrm{mean}_x
    \\|a_s(x) - b_s(x)\\|^2}` over the sites whose producer output is read (``a_s``, ``b_s``: the
    two models' pre-activations at site ``s``; the mean runs over every input and position;
    after: of ``spec.act(g, model_b)``), computed from the streamed second moments;
    ``site_feature_distances``: ``((site, before, after), ...)`` per site; ``samples``: inputs
    streamed; ``underdetermined``: the sites warned about
    (:class:`~._align_data.UnderdeterminedAlignmentWarning`). None / empty without data.
    """

    method: str
    distance_before: float
    distance_after: float
    iterations: int
    feature_distance_before: float | None = None
    feature_distance_after: float | None = None
    site_feature_distances: tuple = ()
    samples: int | None = None
    underdetermined: tuple = ()


def weight_distance(model_a: nn.Module, model_b: nn.Module) -> float:
    """Euclidean distance between all floating-point parameters and buffers."""
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys():
        raise ValueError("the models have different parameter names")
    total = 0.0
    for k, v in sa.items():
        if v.is_floating_point():
            total += float(((v.double() - sb[k].double().to(v.device)) ** 2).sum())
    return math.sqrt(total)


def _bound(spec, model) -> dict:
    """The tensors bound to some site, by canonical name."""
    return {fqn: get_tensor(model, fqn) for fqn in spec.bindings}


def _state(spec, g, model) -> dict:
    """Every bound tensor of ``model`` under ``g`` (``transformed_tensors`` may return only the
    tensors ``g`` moves)."""
    out = _bound(spec, model)
    out.update(spec.transformed_tensors(g, model))
    return out


def _dist2(Ta: dict, Tb: dict) -> float:
    """Squared distance over the bound tensors (the others do not move)."""
    return sum(float(((Ta[k].detach().double() - v.detach().double().to(Ta[k].device)) ** 2).sum()) for k, v in Tb.items())


def _rows_of(spec, model, site):
    """All rows (units x features) of every tensor bound to ``site``, in a fixed order."""
    out = []
    for fqn, bounds in spec.bindings.items():
        t = None
        for b in bounds:
            if b.site == site.name:
                t = get_tensor(model, fqn) if t is None else t
                out.append(_site_rows(t, b, {}, ()))
    return out


def _with(g: SymmetryElement, updates: dict) -> SymmetryElement:
    return SymmetryElement({**dict(g), **updates})


# Permutations -----------------------------------------------------------------------------------

def _class_cost(spec, fa_model, moved, sites, order):
    """(cost matrix to maximise, heads?) over the units (heads) of one permutation class:
    model a's rows against ``moved``'s rows put back in model b's order (``order``: the
    class's current permutation), so that dimensions bound to other classes, or to this one
    (a weight mapping the class to itself), stay where the current element puts them."""
    g = sites[0].group
    heads = isinstance(g, Block) and not isinstance(g.inner, Monomial)
    back = torch.argsort(order)
    cost = None
    for s in sites:
        for ra, rb in zip(_rows_of(spec, fa_model, s), _rows_of(spec, moved, s)):
            if heads:
                H = s.group.heads
                ra, rb = ra.reshape(H, -1), rb.reshape(H, -1)
            c = ra.cpu() @ rb.cpu()[back].T
            cost = c if cost is None else cost + c
    return cost, heads


def _descend(spec, Ta, model_b, g, classes, propose, max_iter: int, seed: int, tick=None):
    """Coordinate descent over the permutation classes, in a random order per sweep (``seed``):
    ``propose(g, moved, sites)`` gives a new element for one class (or None), kept only if it
    lowers the weight distance strictly, until a sweep changes nothing. Returns (g, sweeps)."""
    moved = _state(spec, g, model_b)
    best = _dist2(Ta, moved)
    rng = np.random.default_rng(seed)
    it = 0
    for it in range(1, max_iter + 1):
        changed = False
        for i in rng.permutation(len(classes)):
            trial = propose(g, moved, classes[i][1])
            if trial is None:
                continue
            tmoved = _state(spec, trial, model_b)
            d = _dist2(Ta, tmoved)
            if d < best * (1 - 1e-12) - 1e-30:
                g, moved, best, changed = trial, tmoved, d, True
        if tick is not None:
            tick(it)
        if not changed:
            break
    return g, it


def _weight_matching(spec, ca, cb, init: SymmetryElement, max_iter: int, seed: int, tick=None):
    """Weight matching in the canonical frames ``ca``, ``cb``, from ``init``."""
    classes = [(h, ss) for h, ss in _perm_classes(spec).items()
               if not (isinstance(ss[0].group, Block) and isinstance(ss[0].group.inner, Monomial))]
    Ta = _bound(spec, ca)

    def propose(g, moved, sites):
        heads = isinstance(sites[0].group, Block)
        old = _current_order(g.get(sites[0].name), sites[0], heads)
        cost, heads = _class_cost(spec, Ta, moved, sites, old)
        if cost is None:
            return None
        _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
        new = torch.as_tensor(cols, dtype=torch.long)
        if torch.equal(new, old):
            return None
        return _with(g, {s.name: _perm_element(s, new, heads=heads) for s in sites})

    return _descend(spec, Ta, cb, init, classes, propose, max_iter, seed, tick)


def _flip_first(n: int) -> MonomialElement:
    """The identity with unit 0 negated (a per-unit sign, not ``-I``)."""
    scale = torch.ones(n, dtype=torch.float64)
    scale[0] = -1.0
    return MonomialElement(torch.arange(n), scale)


def _sign_site(sites):
    """The one monomial site of a permutation class whose group holds a sign *per unit* (its
    units may flip sign one by one during raw matching), or None. A group holding ``-I`` only
    as one global scalar (:class:`ScaledPermutation`: a layer norm's input) does not count:
    per-unit signs there would change the function."""
    found = [s for s in sites if isinstance(s.group, Monomial) and s.group.per_unit
             and s.group.contains(_flip_first(s.size))]
    return found[0] if len(found) == 1 else None


def _raw_class_cost(spec, Ta, cb, g, sites, sign_site):
    """(cost, signs) for one class in the models' own frames: model a's rows against model b's
    units with this class's element reset to the identity (the other classes as in ``g``), and,
    when ``sign_site`` is given, against them with that site's units negated; per pair the
    better of the two and the sign that gave it."""
    base = _with(g, {s.name: s.group.identity() for s in sites})
    cost = _class_cost(spec, Ta, _state(spec, base, cb), sites, torch.arange(sites[0].size))[0]
    if cost is None or sign_site is None:
        return cost, None
    n = sign_site.size
    flipped = _with(base, {sign_site.name: MonomialElement(torch.arange(n), -torch.ones(n, dtype=torch.float64))})
    minus = _class_cost(spec, Ta, _state(spec, flipped, cb), sites, torch.arange(n))[0]
    signs = torch.where(minus > cost, -1.0, 1.0).to(torch.float64)
    return torch.maximum(cost, minus), signs


def _raw_weight_matching(spec, model_a, model_b, max_iter: int, seed: int, tick=None):
    """Git Re-Basin's weight matching in the models' own frames (no canonical frames), from the
    identity, extended to the sign flips of the engine's groups: for a class whose site holds a
    sign per unit (tanh, |x|, linear units; :func:`_sign_site`) each assignment also picks a sign
    per unit. Units are weighted by their size, as in Ainsworth et al.; the canonical route
    weights them equally."""
    classes = [(h, ss) for h, ss in _perm_classes(spec).items() if all(isinstance(s.group, Monomial) for s in ss)]
    sign_sites = {ss[0].name: _sign_site(ss) for _, ss in classes}  # fixed per class: not per sweep
    Ta = _bound(spec, model_a)

    def propose(g, _moved, sites):
        sign_site = sign_sites[sites[0].name]
        cost, signs = _raw_class_cost(spec, Ta, model_b, g, sites, sign_site)
        if cost is None:
            return None
        _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
        perm = torch.as_tensor(cols, dtype=torch.long)
        els = {s.name: _perm_element(s, perm, heads=False) for s in sites}
        if signs is not None:
            els[sign_site.name] = MonomialElement(perm, signs[torch.arange(len(perm)), perm])
        return _with(g, els)

    return _descend(spec, Ta, model_b, spec.identity(), classes, propose, max_iter, seed, tick)


def _current_order(el, site, heads):
    n = site.group.heads if heads else site.size
    if el is None:
        return torch.arange(n)
    if heads:
        return el.head_perm.cpu()
    return el.perm.cpu()


# Continuous refinement -------------------------------------------------------------------------

def _dense_features(spec, model, site):
    X, Y = [], []
    for fqn, bounds in spec.bindings.items():
        t = None
        for b in bounds:
            law = _law(b, site.name)
            if law is None:
                continue
            t = get_tensor(model, fqn) if t is None else t
            (X if law > 0 else Y).append(_site_rows(t, b, {}, ()))
    cat = lambda parts: torch.cat(parts, 1) if parts else None  # noqa: E731
    return cat(X), cat(Y)


def _fit(group, Xa, Ya, Xb, Yb):
    """The element of a dense group (O or GL) fitting b's features to a's; a group with its own
    closed-form fit (:meth:`ComplexDiagonal.fit`) gives it."""
    if hasattr(group, "fit"):
        return group.fit(Xa, Ya, Xb, Yb)
    if isinstance(group, Orthogonal):
        Fa = torch.cat([f for f in (Xa, Ya) if f is not None], 1)
        Fb = torch.cat([f for f in (Xb, Yb) if f is not None], 1)
        return procrustes(Fa, Fb)
    if Xa is not None:
        return least_squares(Xa, Xb)
    return least_squares(Ya, Yb).dual()


def _refine_dense(spec, model_a, moved, g):
    from ._elements import BlockElement

    Ta = _bound(spec, model_a)
    for site in spec.sites:
        grp = site.group
        dense_block = isinstance(grp, Block) and (isinstance(grp.inner, (Orthogonal, GeneralLinear)) or hasattr(grp.inner, "fit"))
        if not (isinstance(grp, (Orthogonal, GeneralLinear)) or hasattr(grp, "fit") or dense_block):
            continue
        # the frames map b's site onto a's frame, which is arbitrary for unrelated models:
        # try keeping b's own basis (with the chosen head permutation) first
        cur = g.get(site.name)
        if cur is not None:
            moved, g = _keep_if_closer(spec, Ta, moved, g, SymmetryElement({site.name: _perm_only(cur).compose(cur.inverse())}))
        Xa, Ya = _dense_features(spec, model_a, site)
        Xb, Yb = _dense_features(spec, moved, site)
        if Xa is None and Ya is None:
            continue
        if dense_block:
            H, d = grp.heads, grp.inner.n
            sl = lambda F, h: None if F is None else F[h * d:(h + 1) * d]  # noqa: E731
            blocks = [_fit(grp.inner, sl(Xa, h), sl(Ya, h), sl(Xb, h), sl(Yb, h)).matrix() for h in range(H)]
            e = BlockElement(torch.stack(blocks), torch.arange(H))
        else:
            e = _fit(grp, Xa, Ya, Xb, Yb)
        moved, g = _keep_if_closer(spec, Ta, moved, g, SymmetryElement({site.name: e}))
    return moved, g


def _perm_only(el):
    """The permutation part of a dense site element (blocks: the head permutation)."""
    from ._elements import BlockElement, DenseElement

    if isinstance(el, BlockElement):
        d = el.blocks.shape[1]
        return BlockElement(torch.eye(d, dtype=el.dtype).expand(el.heads, d, d), el.head_perm)
    return DenseElement(torch.eye(el.n, dtype=el.dtype), orthogonal=True)


def _keep_if_closer(spec, Ta, moved, g, e):
    """(moved, g) updated by ``e`` (in place) if that lowers the distance to model a."""
    trial = spec.transformed_tensors(e, moved)
    cur = {k: get_tensor(moved, k) for k in trial}  # only the tensors e moves differ
    if _dist2(Ta, trial) < _dist2(Ta, cur):
        with torch.no_grad():
            for k, v in trial.items():
                get_tensor(moved, k).copy_(v)
        g = spec.compose(e, g)
    return moved, g


#: Half-width of the log grid of candidate scalings (|log t| <= LOG_GRID).
LOG_GRID = 7.0


def _candidates(scalings, fine_center=None):
    """Candidate scalings in S: a log grid (continuous part), powers (discrete) and signs."""
    s = scalings
    if s.positive == "all":
        if fine_center is None:
            u = np.concatenate([np.linspace(-LOG_GRID, LOG_GRID, 1401), [0.0]])
        else:
            u = np.concatenate([fine_center + np.linspace(-0.011, 0.011, 221), [0.0]])
        pos = np.exp(u)
    elif s.positive == "discrete":
        pos = float(s.generator) ** np.arange(-40, 41, dtype=float)
    else:
        pos = np.ones(1)
    if s.negative is not None:
        return np.concatenate([pos, float(s.negative) * pos])
    return pos


def _scale_terms(spec, model_a, moved, site):
    """[(R, A, f)] per binding: the squared distance is sum f(t)^2 R - 2 f(t) A per unit."""
    terms = []
    mods = dict(moved.named_modules())
    for fqn, bounds in spec.bindings.items():
        ta = tb = None
        for b in bounds:
            if b.site != site.name and b.other_site != site.name:
                continue
            if b.site == site.name and b.other_site == site.name and b.variance in ("diag",):
                continue
            if b.site != site.name and b.length != site.size:
                continue  # the input side of a diag / bn_gamma binding over several sites
            f = _scale_law(b, site.name)
            if f is None:
                continue
            if ta is None:
                ta, tb = get_tensor(model_a, fqn), get_tensor(moved, fqn)
            # (the input side of a diag / bn_gamma binding: rows along the output's units,
            # which share the input's permutation)
            xa, xb = _site_rows(ta, b, {}, ()), _site_rows(tb, b, {}, ())
            if b.variance == "bn_var":
                eps = getattr(mods.get(b.module), "eps", None)
                if eps is None:
                    continue
                xa, xb = xa + eps, xb + eps
            terms.append(((xb * xb).sum(1).cpu().numpy(), (xa * xb).sum(1).cpu().numpy(), f))
    return terms


def _scale_law(b, site):
    """f(t) (a function of candidate scalings) by which binding ``b``'s rows scale."""
    if b.site == site:
        if b.variance == "perm":
            return None
        if b.variance == "bn_var":
            return lambda t: t * t
        if b.variance == "bn_gamma" and b.other_site == site:
            return np.abs
        e = 1 if b.variance in ("co", "diag", "bn_gamma") else -1
        if b.relation == "dual":
            e = -e
        chain = b.chain

        def f(t, e=e, chain=chain):
            v = t
            for act in chain:
                v = act.phi_scalar(v)
            return v if e > 0 else 1.0 / v

        return f
    if b.other_site == site:
        if b.variance == "diag":
            return lambda t: 1.0 / t
        if b.variance == "bn_gamma":
            return np.sign
    return None


def _objective(terms, t):
    out = np.zeros_like(t, dtype=float)
    for R, A, f in terms:
        v = f(t)
        out += v * v * R[:, None] - 2 * v * A[:, None]
    return out


def _refine_scales(spec, model_a, moved, g, sweeps: int = 2):
    Ta = _bound(spec, model_a)
    for _ in range(sweeps):
        for site in spec.sites:
            grp = site.group
            inner = grp.inner if isinstance(grp, Block) else grp
            if not isinstance(inner, Monomial) or (inner.scalings.positive == "trivial" and inner.scalings.negative is None):
                continue
            if not inner.per_unit:
                continue  # one scalar for all units (chosen by the frames); per-unit scalings would leave the group
            terms = _scale_terms(spec, model_a, moved, site)
            if not terms:
                continue
            n = site.size
            cand = _candidates(inner.scalings)
            with np.errstate(all="ignore"):
                f = _objective(terms, np.broadcast_to(cand, (n, len(cand))).copy())
                best = cand[np.nanargmin(np.where(np.isfinite(f), f, np.inf), axis=1)]
                if inner.scalings.positive == "all":
                    # an optimum on the edge of the grid is an infimum at t -> 0 or oo (not
                    # attained in S): keep the unit's scaling rather than drift to the edge
                    best = np.where(np.abs(np.log(np.abs(best))) >= LOG_GRID - 1e-9, 1.0, best)
                    fine = np.stack([np.sign(b) * _candidates(inner.scalings, math.log(abs(b)))[:222] for b in best])
                    ff = _objective(terms, fine)
                    best = fine[np.arange(n), np.argmin(np.where(np.isfinite(ff), ff, np.inf), axis=1)]
                cur = _objective(terms, np.ones((n, 1)))[:, 0]
                newf = _objective(terms, best[:, None])[:, 0]
            best = np.where(newf < cur, best, 1.0)
            if np.all(best == 1.0):
                continue
            e = MonomialElement(torch.arange(n), torch.as_tensor(best, dtype=torch.float64))
            moved, g = _keep_if_closer(spec, Ta, moved, g, SymmetryElement({site.name: e}))
    return moved, g


def _refined(spec, model_a, model_b, g):
    moved = spec.act(g, model_b)
    moved, g = _refine_dense(spec, model_a, moved, g)
    moved, g = _refine_scales(spec, model_a, moved, g)
    return g, weight_distance(model_a, moved)


# Balanced frames ---------------------------------------------------------------------------------

def _balance_rows(spec, site):
    """[(fqn, binding, law)] of the primary bindings along ``site`` if every one of them scales
    by t (law +1) or 1/t (law -1) or is only permuted, else None (batch-norm statistics, rows
    through an activation with :math:`\\phi(t) \\ne t` for t > 0, a diag binding into the site,
    a tensor carrying the site on two dimensions: their norms are not :math:`t^2\\|x\\|^2` per
    unit, so the per-site update below would not be exact)."""
    out = []
    for fqn, bounds in spec.bindings.items():
        dims = set()
        for b in bounds:
            if b.other_site == site.name and b.site != site.name:
                return None
            if b.site != site.name or not b.primary or b.variance == "perm":
                continue
            law = _law(b, site.name)
            if law is None:
                law = _positive_law(b)
            if law is None:
                return None
            dims.add(b.dim)
            out.append((fqn, b, law))
        if len(dims) > 1:
            return None  # W -> D W D^{-1} (a recurrent weight): not separable per unit
    return out


def _positive_law(b):
    """+1 / -1 for a co / contra binding whose activation chain acts as the identity on positive
    scalings (phi(t) = t for t > 0, e.g. phi(t) = |t| of LeakyReLU(-1)), else None."""
    if b.variance not in ("co", "contra") or not b.chain:
        return None
    for t in (0.37, 1.0, 2.9):
        v = t
        for act in b.chain:
            v = act.phi_scalar(v)
        if not math.isclose(float(v), t, rel_tol=1e-12):
            return None
    base = 1 if b.variance == "co" else -1
    return base if b.relation == "same" else -base


#: Balancing stops when no unit's scaling changes by more than this (relative).
BALANCE_TOL = 1e-12
#: At most this many sweeps over the sites (the descent converges linearly; tens suffice on MLPs).
BALANCE_SWEEPS = 1000


def _balanced(spec, model):
    """(k, k.model): the minimum-norm representative of ``model``'s orbit under the continuous
    positive scalings of its per-unit monomial sites.

    A unit with incoming rows X (scaling by t) and outgoing rows Y (by 1/t) contributes
    :math:`t^2\\|X\\|^2 + t^{-2}\\|Y\\|^2`, minimal at :math:`t = \\sqrt{\\|Y\\|/\\|X\\|}` (incoming
    norm = outgoing norm: the unit is *balanced*). The total squared norm is convex in
    :math:`\\log t` and separable within a site, so block coordinate descent over the sites
    converges to the unique minimiser (units with no incoming or no outgoing weight keep t = 1).
    Sites whose rows do not scale by t or 1/t (batch norm, activations with phi) are left alone,
    and so are sites with no activation (a layer norm's affine output feeding a linear layer)."""
    sites = []
    for s in spec.sites:
        if not (isinstance(s.group, Monomial) and s.group.per_unit and s.group.scalings.positive == "all"):
            continue
        rows = _balance_rows(spec, s)
        # units of a positively homogeneous activation only (ReLU, |x|: a binding through its
        # chain): balancing the affine output of a layer norm feeding a linear layer (no
        # activation) raised the GPT-2 pair's barrier (docs/merging.md section 6)
        if rows and {law for _, _, law in rows} == {1, -1} and any(b.chain for _, b, _ in rows):
            sites.append((s, rows))
    k = spec.identity()
    if not sites:
        return k, model
    work = copy.deepcopy(model).double()  # float64 iterates: float32 rounding would stall the descent
    for _ in range(BALANCE_SWEEPS):
        worst = 0.0
        for s, rows in sites:
            nx = torch.zeros(s.size, dtype=torch.float64)
            ny = torch.zeros(s.size, dtype=torch.float64)
            for fqn, b, law in rows:
                r = (_site_rows(get_tensor(work, fqn), b, {}, ()) ** 2).sum(1).cpu()
                if law > 0:
                    nx += r
                else:
                    ny += r
            ok = (nx > 0) & (ny > 0)
            t = torch.where(ok, (ny / torch.where(ok, nx, 1.0)) ** 0.25, torch.ones_like(nx))
            worst = max(worst, float((t.log().abs()).max()))
            e = SymmetryElement({s.name: MonomialElement(torch.arange(s.size), t)})
            act_inplace(spec, e, work)
            k = spec.compose(e, k)
        if worst < BALANCE_TOL:
            break
    return k, spec.act(k, model)


#: Relative weight distance below which an alignment is an exact match (nothing left to improve).
EXACT = 1e-9

#: ``example_inputs`` used as the data (one tensor) are streamed in chunks of this many inputs.
EXAMPLE_CHUNK = 256


def align(model_a: nn.Module, model_b: nn.Module, example_inputs=None, method: str = "weights", *, data=None,
          spec: SymmetrySpec | None = None, example_kwargs: dict | None = None, max_iter: int = 100, seed: int = 0,
          refine_scales: bool = True, tol: float = 1e-8, progress=None, return_report: bool = False,
          restarts: int = 1, balance: bool = True):
    """The group element ``g`` bringing ``model_b`` closest to ``model_a``.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two networks of the same architecture.
    example_inputs : Tensor or tuple of Tensor, optional
        Tracing inputs (not needed when ``spec`` is given and ``method="weights"``, nor when
        ``data`` is given: the spec is then traced on its first batch); also the data for
        ``method="activations"`` when ``data`` is absent.
    method : {"weights", "activations"}
    data : iterable of batches, optional
        A ``DataLoader`` or any iterable (a generator: one pass) of tensors, ``(input, target,
        ...)`` tuples or dicts of keyword inputs, for activation matching; statistics are
        streamed batch by batch (float64, on the models' device), the features never held.
        With ``method="weights"`` it only gives the report its feature distances.
    spec : SymmetrySpec, optional
        Spec of the architecture (traced from ``model_a`` when absent).
    example_kwargs : dict, optional
        Keyword inputs for the tracing and every forward pass (``attention_mask``, ...).
    max_iter : int
        Maximum coordinate-descent sweeps for weight matching.
    seed : int
        Seed of the random order of classes in each sweep.
    restarts : int
        ``method="weights"``: how many orders of the classes (seeds ``seed, seed + 1, ...``) the
        raw-frame route is run with; the closest result (weight distance) is kept. Coordinate
        descent ends in a local optimum that depends on the order; more restarts cost time
        linearly. 0: the canonical route only (on a large model the raw route costs several
        times the canonical one: GPT-2 small, docs/torch_bridge.md). The raw route is skipped
        when the canonical route already matches the models exactly (a planted pair).
    balance : bool
        ``method="weights"``: match the *balanced* representatives of the two models (every
        unit of a positively homogeneous activation, e.g. ReLU's, rescaled so that its incoming and
        outgoing weights have equal norms: the minimum-norm point of its orbit), i.e. minimise
        :math:`\\|k_a\\theta_a - g'\\,k_b\\theta_b\\|` and return :math:`g = k_a^{-1} g' k_b`.
        The models' own unit scales are set by their random initialisation (gradient flow
        conserves each unit's :math:`\\|\\mathrm{in}\\|^2 - \\|\\mathrm{out}\\|^2`), and matching
        them lowers the weight distance to ``model_a`` but not the loss barrier
        (docs/merging.md section 6). False: minimise the distance to ``model_a`` as given.
        No effect on networks without such scalings (tanh, GELU) nor on ``"activations"``.
    refine_scales : bool
        After the permutations, refine the continuous part: Procrustes / least squares on the
        dense sites, per-unit scalings on the monomial sites (each kept only if it lowers the
        weight distance).
    tol : float
        Tolerance of the canonical frames (dead units, vanishing sign keys).
    progress : None, bool or callable
        None/False: silent; True: a tqdm bar per stage (data, frames, weight sweeps,
        refinement) once a stage runs past 2 s; a callable gets ``(stage, done, total)``.
    return_report : bool
        Also return an :class:`AlignmentReport` with the distances before and after.

    Returns
    -------
    g : SymmetryElement
        ``spec.act(g, model_b)`` is the aligned copy of ``model_b``.
    report : AlignmentReport, only with ``return_report=True``.

    Warns
    -----
    UnderdeterminedAlignmentWarning
        ``method="activations"``: a site whose element the data cannot determine (fewer
        samples than units, constant or perfectly correlated units, a rank-deficient feature
        covariance), named in the message.
    """
    from ._align_data import _placement, _to_model

    if method not in ("weights", "activations"):
        raise ValueError(f"Argument 'method' must be 'weights' or 'activations', not {method!r}.")
    if not isinstance(balance, bool):
        raise ValueError(f"Argument 'balance' must be True or False, not {balance!r}.")
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"Argument 'restarts' must be a non-negative integer, not {restarts!r}.")
    if example_kwargs is not None and not isinstance(example_kwargs, dict):
        raise TypeError(f"Argument 'example_kwargs' must be a dict or None, not {type(example_kwargs).__name__}.")
    if isinstance(data, torch.Tensor):
        raise TypeError("Argument 'data' must be an iterable of batches, not a tensor (iterating a tensor yields "
                        "single samples); pass [x] for one batch, or x as 'example_inputs'.")
    bar = Progress(progress)
    batches = total = None
    if data is not None:
        try:
            total = len(data)
        except TypeError:  # generators, iterable datasets
            total = None
        first, batches = first_batch(data)
    if example_inputs is not None:
        inputs, trace_kwargs = _as_tuple(example_inputs), example_kwargs
    elif data is not None:
        device, dtype = _placement(model_a)
        args, kw = split_batch(first)
        inputs = tuple(_to_model(t, device, dtype) for t in args)
        trace_kwargs = {k: _to_model(v, device, dtype) for k, v in {**(example_kwargs or {}), **kw}.items()} or None
    elif spec is not None and method == "weights":
        inputs, trace_kwargs = None, example_kwargs
    else:
        raise ValueError("align needs 'example_inputs' or 'data' (or, for method='weights', a 'spec').")
    if spec is None:
        spec = symmetry_spec(model_a, inputs, trace_kwargs)
    spec.check_model(model_b)
    if batches is None and method == "activations":
        if len(inputs) == 1 and not example_kwargs and inputs[0].dim() > 0:
            batches = inputs[0].split(EXAMPLE_CHUNK)  # same statistics, a fraction of the memory
            total = len(batches)
        else:
            batches, total = [(inputs,)], 1
    before = None  # model b's weight distance to model a, once computed
    try:
        stats, samples, underdetermined = None, None, ()
        if batches is not None and (method == "activations" or return_report):
            stats, samples = stream_site_stats(spec, model_a, model_b, batches, example_kwargs,
                                               bar.start("data", total), total)
            if method == "activations":
                underdetermined = warn_underdetermined(spec, model_a, model_b, stats)
        tick = bar.start("frames", 2)
        # weight matching between the minimum-norm representatives of the positive-scaling
        # orbits (docs/merging.md section 6): the models' own scales carry their initialisation
        ka = kb = None
        ma, mb = model_a, model_b
        if method == "weights" and balance:
            ka, ma = _balanced(spec, model_a)
            kb, mb = _balanced(spec, model_b)
        ga, dead_a, inv_a, _, ca = _frames_pass(spec, ma, tol)
        tick(1)
        hb, dead_b, inv_b, _, cb = _frames_pass(spec, mb, tol)
        tick(2)
        pa = _permutation_pass(spec, ca, dead_a, inv_a)
        pb = _permutation_pass(spec, cb, dead_b, inv_b)
        init = spec.compose(spec.inverse(pa), pb)
        if method == "weights":
            pi, iterations = _weight_matching(spec, ca, cb, init, max_iter, seed, bar.start("weight sweeps", max_iter))
        else:
            pi, iterations = activation_matching(spec, stats, ga, hb, init), 1
        g = spec.compose(spec.inverse(ga), spec.compose(pi, hb))
        if refine_scales:
            tick = bar.start("refinement", 2)
            g, d = _refined(spec, ma, mb, g)
            tick(1)
            # two unrelated models: the canonical frames need not be close; when the result is
            # no better than leaving model b alone, refine from the identity and keep the better
            before = weight_distance(ma, mb)
            if d >= before:
                g0, d0 = _refined(spec, ma, mb, spec.identity())
                if d0 < d:
                    g, d = g0, d0
            if method == "weights" and d > EXACT * before:
                # the raw-frame route (units weighted by size, signs chosen with the permutation)
                # finds other optima than the canonical one: keep the closer of the two
                for r in range(restarts):
                    raw, _ = _raw_weight_matching(spec, ma, mb, max_iter, seed + r)
                    g1, d1 = _refined(spec, ma, mb, raw)
                    if d1 < d:
                        g, d = g1, d1
            tick(2)
        if ka is not None:
            g = spec.compose(spec.inverse(ka), spec.compose(g, kb))  # back to the models' own frames
            before = None
    finally:
        bar.close()
    if not spec.contains(g, tol=1e-6):
        # never hand back a transformation outside the derived group: it would not be a symmetry
        raise RuntimeError("align produced an element outside the spec's group (a bug in groupcalc; please report "
                           "it with the model): refusing to return it")
    if not return_report:
        return g
    feats = feature_distances(stats, g) if stats else ((), None, None)
    if before is None:
        before = weight_distance(model_a, model_b)
    # after: of spec.act(g, model_b) itself (what the caller gets), not of the refinement's working copy
    report = AlignmentReport(method, before, weight_distance(model_a, spec.act(g, model_b)), iterations,
                             feats[1], feats[2], feats[0], samples, underdetermined)
    return g, report
