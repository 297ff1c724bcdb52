"""Aligning two networks modulo their full symmetry group (permutations, scalings, signs).

:func:`align` returns ``g`` with ``spec.act(g, model_b)`` as close as possible to ``model_a``:

1. both models are put in canonical scalings (:func:`canonical_scalings`: unit-norm
   incoming rows with positive sign keys), so the remaining freedom is a permutation per
   permutation class;
2. the permutations start from the canonical sorting of both models (which already maps any
   member of ``model_a``'s orbit onto ``model_a``) and are then improved:

   * ``method="weights"``: coordinate descent over linear assignment problems, as Git
     Re-Basin's weight matching (Ainsworth et al. 2023) does for permutations alone: for
     each class in turn, maximise :math:`\\sum \\langle a_i, b_{\\pi(i)} \\rangle` over the
     incoming rows and outgoing columns of its units, the other classes held fixed, until a
     sweep changes nothing;
   * ``method="activations"``: one assignment per class on the correlation of the classes'
     pre-activation outputs on ``example_inputs`` (activations do not depend on other
     classes' permutations);

3. with :math:`g_a, h_b` the canonical scalings of the two models,
   :math:`g_1 = g_a^{-1} \\pi h_b` brings ``model_b`` into ``model_a``'s frame; finally
   (``refine_scales=True``) each site's scalings are re-chosen to minimise the weight
   distance to ``model_a`` (the distance is, per unit, a closed-form function of its
   scaling t: quadratic in t for its incoming rows and batch-norm statistics, in 1/t for
   its outgoing columns; minimised over a fine grid of S), site after site, twice.

For a planted pair (``model_b = spec.act(k, model_a)``) the canonical forms coincide and each
assignment problem has the identity as its unique optimum (Cauchy-Schwarz), so ``g`` undoes
``k`` exactly (up to duplicate units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ._canonical import _consumers_of, _perm_class_atoms, _producer_of, _rows, canonical_permutations, canonical_scalings
from ._graph import Rep
from ._spec import SymmetryElement, SymmetrySpec, _as_tuple, symmetry_spec

__all__ = ["align", "AlignmentReport", "weight_distance"]


@dataclass(frozen=True)
class AlignmentReport:
    """Distances before and after an alignment.

    ``distance_before``/``distance_after``: Euclidean distance between all floating-point
    parameters and buffers of ``model_a`` and of ``model_b`` / ``spec.act(g, model_b)``.
    ``iterations``: coordinate-descent sweeps (weights) or 1 (activations).
    """

    method: str
    distance_before: float
    distance_after: float
    iterations: int


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


def _unit_features(spec, mods, atoms, g):
    """Per-unit features (rows and columns) of the given atoms under ``g``."""
    feats = []
    for atom in atoms:
        call = _producer_of(spec, atom.axis)
        feats.append(_rows(spec, call, mods[call.module], g, atom, stats=True))
        for ccall, pos in _consumers_of(spec, atom.id):
            W = spec.transformed_parameters(ccall, mods[ccall.module], g, inputs=False, outputs=True)["weight"]
            feats.append(_columns_from(W, pos))
    return feats


def _columns_from(W, pos):
    W = W.detach().to(torch.float64)
    cols = W[:, pos.reshape(-1)].reshape(W.shape[0], pos.shape[0], pos.shape[1], -1)
    return cols.permute(1, 0, 2, 3).reshape(pos.shape[0], -1)


def _with_perm(g: SymmetryElement, holder: str, perm) -> SymmetryElement:
    perms = dict(g.perms)
    perms[holder] = perm
    return SymmetryElement(perms, dict(g.scales))


def _weight_matching(spec, mods_a, mods_b, init: SymmetryElement, max_iter: int, seed: int):
    holders = list(spec._perm_site.values())
    atoms = {h: _perm_class_atoms(spec, h) for h in holders}
    ident = spec.identity()
    feats_a = {h: _unit_features(spec, mods_a, atoms[h], ident) for h in holders}
    g = init
    rng = np.random.default_rng(seed)
    it = 0
    for it in range(1, max_iter + 1):
        changed = False
        for i in rng.permutation(len(holders)):
            h = holders[i]
            n = spec.site(h).size
            trial = _with_perm(g, h, torch.arange(n))
            fb = _unit_features(spec, mods_b, atoms[h], trial)
            cost = sum((fa.cpu() @ fbb.cpu().T) for fa, fbb in zip(feats_a[h], fb)).numpy()
            _, cols = linear_sum_assignment(cost, maximize=True)
            new = torch.as_tensor(cols, dtype=torch.long)
            old = g.perms.get(h, torch.arange(n))
            # keep the current permutation unless the new one is strictly better
            if not torch.equal(new, old.cpu()) and cost[np.arange(n), cols].sum() > cost[np.arange(n), old.cpu().numpy()].sum() * (1 + 1e-12) + 1e-12:
                g = _with_perm(g, h, new)
                changed = True
        if not changed:
            break
    return g, it


def _activation_matching(spec, ca, cb, inputs):
    holders = list(spec._perm_site.values())
    acts = {}

    def record(model, key):
        out = {}
        hooks = []
        mods = dict(model.named_modules())
        for call in spec._a.calls:
            def hook(_m, _i, y, name=call.module):
                out[name] = y.detach()
            hooks.append(mods[call.module].register_forward_hook(hook))
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                model(*inputs)
        finally:
            for hd in hooks:
                hd.remove()
            for m, t in modes:
                m.training = t
        acts[key] = out

    record(ca, "a")
    record(cb, "b")
    perms = {}
    for h in holders:
        n = spec.site(h).size
        cost = np.zeros((n, n))
        for atom in _perm_class_atoms(spec, h):
            call = _producer_of(spec, atom.axis)
            za, zb = (acts[k][call.module] for k in ("a", "b"))
            dim = 1 if call.kind != "linear" else za.dim() - 1
            za = za.movedim(dim, 0)[atom.start:atom.stop].reshape(atom.size, -1).double().cpu()
            zb = zb.movedim(dim, 0)[atom.start:atom.stop].reshape(atom.size, -1).double().cpu()
            za = za - za.mean(1, keepdim=True)
            zb = zb - zb.mean(1, keepdim=True)
            za = za / za.norm(dim=1, keepdim=True).clamp_min(1e-12)
            zb = zb / zb.norm(dim=1, keepdim=True).clamp_min(1e-12)
            cost += (za @ zb.T).numpy()
        _, cols = linear_sum_assignment(cost, maximize=True)
        perms[h] = torch.as_tensor(cols, dtype=torch.long)
    return SymmetryElement(perms, {})


def _candidates(group, fine_center=None):
    """Candidate scalings in S: a log grid (continuous part), powers (discrete) and signs."""
    s = group.one_dimensional()
    if s.positive == "all":
        if fine_center is None:
            u = np.concatenate([np.linspace(-7.0, 7.0, 1401), [0.0]])
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


def _site_terms(spec, site, mods_a, mods_b, g):
    """Per-unit coefficients of the squared distance as a function of the site's scaling t
    (the site's own scaling held at 1 in ``g``)."""
    n = site.size
    z = lambda: np.zeros(n)  # noqa: E731
    T = {k: z() for k in ("R", "A", "C", "B", "Rm", "Am", "Rs", "As", "Ag")}
    for atom in spec._classes[site._scale_class]:
        call = _producer_of(spec, atom.axis)
        pb = spec.transformed_parameters(call, mods_b[call.module], g)
        sl = slice(atom.start, atom.stop)
        if call.kind in ("batchnorm", "layernorm"):
            keys = [k for k in ("weight", "bias") if k in pb]
            ra = [getattr(mods_a[call.module], k).detach().double()[sl] for k in keys]
            rb = [pb[k].double()[sl] for k in keys]
        else:
            ra = [mods_a[call.module].weight.detach().double()[sl].reshape(atom.size, -1)]
            rb = [pb["weight"].double()[sl].reshape(atom.size, -1)]
            if "bias" in pb:
                ra.append(mods_a[call.module].bias.detach().double()[sl])
                rb.append(pb["bias"].double()[sl])
        for x, y in zip(ra, rb):
            x, y = x.reshape(atom.size, -1).cpu(), y.reshape(atom.size, -1).cpu()
            T["R"] += (y * y).sum(1).numpy()
            T["A"] += (x * y).sum(1).numpy()
        off = 0  # every atom of a scale class spans the whole site
        for ccall in spec._a.calls:
            if not isinstance(ccall.in_rep, Rep):
                continue
            for kind, aid, _, length, start in _pieces_at(spec, ccall.in_rep):
                if kind != "axis" or aid != atom.id:
                    continue
                if ccall.kind == "layernorm":
                    continue  # its input sites have trivial scalings
                pcb = spec.transformed_parameters(ccall, mods_b[ccall.module], g)
                ma = mods_a[ccall.module]
                if ccall.kind == "batchnorm":
                    s2 = slice(start, start + length)
                    if "running_mean" in pcb:
                        mu_a, mu_b = ma.running_mean.double()[s2].cpu(), pcb["running_mean"].double()[s2].cpu()
                        sd_a = torch.sqrt(ma.running_var.double()[s2] + ma.eps).cpu()
                        sd_b = torch.sqrt(pcb["running_var"].double()[s2] + ma.eps).cpu()
                        T["Rm"][off:off + length] += (mu_b * mu_b).numpy()
                        T["Am"][off:off + length] += (mu_a * mu_b).numpy()
                        T["Rs"][off:off + length] += (sd_b * sd_b).numpy()
                        T["As"][off:off + length] += (sd_a * sd_b).numpy()
                    if "weight" in pcb:
                        T["Ag"][off:off + length] += (ma.weight.detach().double()[s2].cpu() * pcb["weight"].double()[s2].cpu()).numpy()
                    continue
                r = ccall.in_rep.repeat
                pos = torch.arange(start, start + length)[:, None] * r + torch.arange(r)[None, :]
                ca = _columns_from(ma.weight, pos).cpu()
                cb = _columns_from(pcb["weight"], pos).cpu()
                T["C"][off:off + length] += (cb * cb).sum(1).numpy()
                T["B"][off:off + length] += (ca * cb).sum(1).numpy()
    return T


def _pieces_at(spec, rep):
    from ._solve import _pieces

    off = 0
    for kind, aid, chain, length in _pieces(rep, spec._s.axis_atoms, spec._s.atoms):
        yield kind, aid, chain, length, off
        off += length


def _objective(T, t):
    """Squared distance (up to a constant) for candidate scalings ``t`` (units x candidates)."""
    a = np.abs(t)
    return (t * t * (T["R"] + T["Rm"])[:, None] - 2 * t * (T["A"] + T["Am"])[:, None]
            + (T["C"][:, None] / (t * t)) - 2 * T["B"][:, None] / t
            + a * a * T["Rs"][:, None] - 2 * a * T["As"][:, None] - 2 * np.sign(t) * T["Ag"][:, None])


def _refine_scales(spec, model_a, model_b, sweeps: int = 2) -> SymmetryElement:
    """Scalings T (no permutations) decreasing the distance from spec.act(T, model_b) to
    model_a, by exact per-unit minimisation over S, site after site."""
    mods_a, mods_b = dict(model_a.named_modules()), dict(model_b.named_modules())
    g = spec.identity()
    for _ in range(sweeps):
        for site in spec.sites:
            s = site.group.one_dimensional()
            if s.positive == "trivial" and s.negative is None:
                continue
            trial = SymmetryElement(dict(g.perms), {**g.scales, site.name: torch.ones(site.size, dtype=torch.float64)})
            T = _site_terms(spec, site, mods_a, mods_b, trial)
            cand = _candidates(site.group)
            f = _objective(T, np.broadcast_to(cand, (site.size, len(cand))))
            best = cand[np.argmin(f, axis=1)]
            if s.positive == "all":
                fine = np.stack([np.sign(b) * _candidates(site.group, math.log(abs(b)))[: 222] for b in best])
                fine = fine[:, :222]
                ff = _objective(T, fine)
                best = fine[np.arange(site.size), np.argmin(ff, axis=1)]
            cur = _objective(T, np.ones((site.size, 1)))[:, 0]
            newf = _objective(T, best[:, None])[:, 0]
            best = np.where(newf < cur, best, 1.0)
            g = SymmetryElement(dict(g.perms), {**g.scales, site.name: torch.as_tensor(best, dtype=torch.float64)})
    return g


def align(model_a: nn.Module, model_b: nn.Module, example_inputs, method: str = "weights", *,
          spec: SymmetrySpec | None = None, max_iter: int = 100, seed: int = 0, refine_scales: bool = True,
          return_report: bool = False):
    """The group element ``g`` bringing ``model_b`` closest to ``model_a``.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two networks of the same architecture.
    example_inputs : Tensor or tuple of Tensor
        Tracing inputs; also the data for ``method="activations"``.
    method : {"weights", "activations"}
    spec : SymmetrySpec, optional
        Spec of the architecture (traced from ``model_a`` when absent).
    max_iter : int
        Maximum coordinate-descent sweeps for weight matching.
    seed : int
        Seed of the random order of classes in each sweep.
    refine_scales : bool
        After the permutations, minimise the weight distance over each site's scalings
        (per unit, exactly over a fine grid of S; two sweeps over the sites).
    return_report : bool
        Also return an :class:`AlignmentReport` with the distances before and after.

    Returns
    -------
    g : SymmetryElement
        ``spec.act(g, model_b)`` is the aligned copy of ``model_b``.
    report : AlignmentReport, only with ``return_report=True``.
    """
    if method not in ("weights", "activations"):
        raise ValueError(f"Argument 'method' must be 'weights' or 'activations', not {method!r}.")
    inputs = _as_tuple(example_inputs)
    if spec is None:
        spec = symmetry_spec(model_a, inputs)
    spec._check_model(model_b)
    ga = canonical_scalings(spec, model_a)
    hb = canonical_scalings(spec, model_b)
    ca, cb = spec.act(ga, model_a), spec.act(hb, model_b)
    if method == "weights":
        pa = canonical_permutations(spec, ca)
        pb = canonical_permutations(spec, cb)
        init = spec.compose(spec.inverse(pa), pb)
        pi, iterations = _weight_matching(spec, dict(ca.named_modules()), dict(cb.named_modules()), init, max_iter, seed)
    else:
        pi, iterations = _activation_matching(spec, ca, cb, inputs), 1
    g = spec.compose(spec.inverse(ga), spec.compose(pi, hb))
    if refine_scales:
        T = _refine_scales(spec, model_a, spec.act(g, model_b))
        g = spec.compose(T, g)
    if not return_report:
        return g
    report = AlignmentReport(method, weight_distance(model_a, model_b), weight_distance(model_a, spec.act(g, model_b)), iterations)
    return g, report
