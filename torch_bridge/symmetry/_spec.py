"""The weight-space symmetry group of a network: :class:`SymmetrySpec`, its :class:`Site`
list and its elements (:class:`SymmetryElement`), with the action on models.

Conventions. An element acts on a hidden vector of a site by
:math:`(g \\cdot h)_i = s_i\\, h_{\\pi(i)}`, i.e. :math:`A = D P` with ``perm = pi`` and
``scale = s``. A Linear/Conv layer producing the site becomes :math:`W' = A W`, ``b' = A b``;
a layer consuming it after an activation :math:`\\sigma` becomes :math:`W' = W \\phi(A)^{-1}`
(Proposition 3.4). A batch norm with input element :math:`D_1 P` and output element
:math:`D_2 P` (eq. E.47) maps its running statistics to :math:`\\mu' = D_1 P \\mu`,
:math:`v' = D_1^2 (P v + \\epsilon) - \\epsilon` and its affine parameters to
:math:`\\gamma' = D_2\\, \\mathrm{sign}(D_1) P\\gamma`, :math:`\\beta' = D_2 P \\beta`, which is
exact in eval mode (in training mode the batch statistics make it exact up to the
:math:`\\epsilon` term).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._graph import Analysis, Rep, Seg, transparent
from ._solve import Solution, _pieces, solve

__all__ = ["Site", "SymmetryElement", "SymmetrySpec", "symmetry_spec", "verify_equivalence"]


def _as_tuple(example_inputs):
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise TypeError(f"Argument 'example_inputs' must be a tensor or a tuple of tensors, not {type(example_inputs).__name__}.")


def _monomial(group, label):
    from groupcalc._groups import IntertwinerGroup

    if group is None:
        from groupcalc import Scalings

        return IntertwinerGroup.from_scalings(Scalings("all", None, -1), label=label or "unconstrained")
    if group.kind == "monomial":
        return group
    return IntertwinerGroup.from_scalings(group.one_dimensional(), label=group.label)


@dataclass(frozen=True)
class Site:
    """A hidden axis (or a run of tied axes) with the group acting on it.

    Attributes
    ----------
    name : str
        The producing module of the site's first unit range (``"layers.0.0.bn1"``), with the
        range when the site covers part of that module's outputs (``"...bn2[8:24]"``).
    size : int
        Number of units.
    group : groupcalc.IntertwinerGroup
        Monomial group ``{P D : d_i in S}``; ``group.positive_scalings`` and
        ``group.negative_scalings`` describe S.
    permutation : str
        ``"free"``; ``"fixed"`` (the network pins the order, e.g. at the output); or the name
        of the site whose permutation this one shares (batch-norm input and output).
    members : tuple of str
        Every module output range the site's element acts on (residual additions tie several).
    constraints : tuple of str
        What restricted S (activations, max-pooling, ...).
    """

    name: str
    size: int
    group: object
    permutation: str
    members: tuple
    constraints: tuple = ()
    _scale_class: int = field(default=-1, repr=False, compare=False)
    _perm_class: int = field(default=-1, repr=False, compare=False)

    @property
    def dimension(self) -> int:
        """Dimension of the continuous part of the scalings on this site."""
        return self.size if self.group.positive_scalings == "all" else 0

    @property
    def components(self):
        """Number of connected components this site contributes (its permutations counted
        only on the site holding them); ``math.inf`` for discrete scalings."""
        if self.group.positive_scalings == "discrete":
            return math.inf
        perms = math.factorial(self.size) if self.permutation == "free" else 1
        return perms * (2 ** self.size if self.group.negative_scalings else 1)

    def scalings_text(self) -> str:
        return self.group.one_dimensional().describe()


@dataclass(frozen=True, eq=False)
class SymmetryElement:
    """An element of a network's symmetry group: a permutation per site holding one (``perms``)
    and the diagonal scalings per site (``scales``, float64); missing entries are identities."""

    perms: dict
    scales: dict

    def to(self, device) -> "SymmetryElement":
        return SymmetryElement({k: v.to(device) for k, v in self.perms.items()},
                               {k: v.to(device) for k, v in self.scales.items()})


def _is_inf(c) -> bool:
    return isinstance(c, float) and math.isinf(c)


def _count_str(c):
    """Exact decimal string of a component count; None when infinite or too long for JSON."""
    if _is_inf(c) or c.bit_length() > 10_000:
        return None
    return str(c)


def _fmt_count(logc: float, exact) -> str:
    if exact is not None and exact < 10**15:
        return str(exact)
    if _is_inf(logc):
        return "inf"
    return f"10^{logc:.1f}"


class SymmetrySpec:
    """The sites of a traced network and its symmetry group (see :func:`symmetry_spec`)."""

    def __init__(self, analysis: Analysis, solution: Solution):
        self._a = analysis
        self._s = solution
        sol = solution
        classes: dict = {}
        for at in sol.atoms:
            classes.setdefault(sol.scale_class[at.id], []).append(at)
        # principal of each permutation class (the site that holds the permutation): the
        # first-created scale class that is not a batch-norm input, i.e. the one feeding the
        # activation rather than the one the batch norm absorbs
        bn_inputs = set()
        for call in analysis.calls:
            if call.kind in ("batchnorm", "layernorm") and isinstance(call.in_rep, Rep):
                bn_inputs |= {aid for k, aid, _, _ in _pieces(call.in_rep, sol.axis_atoms, sol.atoms) if k == "axis"}
        absorbed = {sol.scale_class[a] for a in bn_inputs}
        perm_members: dict = {}
        for c in classes:
            perm_members.setdefault(sol.perm_class[classes[c][0].id], []).append(c)
        self._principal = {p: min(cs, key=lambda c: (c in absorbed, classes[c][0].id)) for p, cs in perm_members.items()
                           if p not in sol.perm_frozen}
        self._classes = classes
        names = {}
        for c, ats in classes.items():
            at = ats[0]
            ax = analysis.axes[at.axis]
            names[c] = ax.module + ("" if (at.start, at.stop) == (0, ax.size) else f"[{at.start}:{at.stop}]")
        self._class_name = names
        sites = []
        for c in sorted(classes, key=lambda c: classes[c][0].id):
            ats = classes[c]
            group = _monomial(sol.groups.get(c), " & ".join(sol.labels.get(c, [])))
            p = sol.perm_class[ats[0].id]
            if p in sol.perm_frozen:
                perm = "fixed"
            elif self._principal[p] == c:
                perm = "free"
            else:
                perm = names[self._principal[p]]
            trivial_s = group.positive_scalings == "trivial" and not group.negative_scalings
            if trivial_s and (perm != "free" or ats[0].size < 2):
                continue
            members = tuple(
                analysis.axes[a.axis].module + ("" if (a.start, a.stop) == (0, analysis.axes[a.axis].size) else f"[{a.start}:{a.stop}]")
                for a in ats)
            sites.append(Site(names[c], ats[0].size, group, perm, members, tuple(sol.labels.get(c, [])), c, p))
        self.sites = tuple(sites)
        self._site_of_class = {s._scale_class: s for s in sites}
        self._perm_site = {p: names[c] for p, c in self._principal.items() if c in self._site_of_class}
        self._by_name = {s.name: s for s in sites}
        self.notes = tuple(analysis.notes)
        self.activations = tuple(analysis.activations)

    # Introspection -----------------------------------------------------------------------
    def site(self, name: str) -> Site:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no site {name!r}; sites are {[s.name for s in self.sites]}") from None

    @property
    def dimension(self) -> int:
        """Total dimension of the continuous symmetries."""
        return sum(s.dimension for s in self.sites)

    @property
    def log10_components(self) -> float:
        total = 0.0
        for s in self.sites:
            c = s.components
            if _is_inf(c):
                return math.inf
            total += math.lgamma(s.size + 1) / math.log(10) if s.permutation == "free" else 0.0
            total += s.size * math.log10(2) if s.group.negative_scalings else 0.0
        return total

    @property
    def components(self):
        """Total number of connected components (a Python int; ``math.inf`` if discrete)."""
        out = 1
        for s in self.sites:
            c = s.components
            if _is_inf(c):
                return math.inf
            out *= c
        return out

    def summary(self) -> str:
        """A table of the sites with per-site and total dimension and components."""
        rows = [("site", "size", "scalings S", "permutation", "dim", "components", "constraints")]
        for s in self.sites:
            perm = s.permutation if s.permutation in ("free", "fixed") else f"shared with {s.permutation}"
            comps = s.components
            if _is_inf(comps):
                ctext = "inf"
            elif s.permutation == "free" and s.group.negative_scalings:
                ctext = f"{s.size}!·2^{s.size}"
            elif s.permutation == "free":
                ctext = f"{s.size}!"
            elif s.group.negative_scalings:
                ctext = f"2^{s.size}"
            else:
                ctext = "1"
            rows.append((s.name, str(s.size), s.scalings_text(), perm, str(s.dimension), ctext, ", ".join(s.constraints)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        comps = self.components
        lines.append(f"total: {len(self.sites)} sites, dimension {self.dimension}, components "
                     f"{_fmt_count(self.log10_components, None if isinstance(comps, float) else comps)}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<SymmetrySpec: {len(self.sites)} sites, dimension {self.dimension}>"

    def to_json(self) -> dict:
        comps = self.components
        return {
            "sites": [{"name": s.name, "size": s.size, "positive_scalings": s.group.positive_scalings,
                       "negative_scalings": s.group.negative_scalings, "generator": s.group.generator,
                       "permutation": s.permutation, "dimension": s.dimension,
                       "components": _count_str(s.components),
                       "members": list(s.members), "constraints": list(s.constraints)} for s in self.sites],
            "dimension": self.dimension,
            "log10_components": self.log10_components,  # components is None when astronomically large
            "components": _count_str(comps),
            "notes": list(self.notes),
        }

    # The group ---------------------------------------------------------------------------
    def identity(self) -> SymmetryElement:
        """The identity element."""
        perms = {self._perm_site[p]: torch.arange(self._by_name[self._perm_site[p]].size) for p in self._perm_site}
        scales = {s.name: torch.ones(s.size, dtype=torch.float64) for s in self.sites}
        return SymmetryElement(perms, scales)

    def sample(self, generator: torch.Generator | None = None) -> SymmetryElement:
        """A random element: uniform permutations and the scalings of each site's group
        (``IntertwinerGroup.sample_scalings``: log-normal positive parts, random signs)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"Argument 'generator' must be a torch.Generator or None, not {type(generator).__name__}.")
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng(seed)
        perms = {name: torch.randperm(self._by_name[name].size, generator=generator) for name in self._perm_site.values()}
        scales = {s.name: torch.as_tensor(s.group.sample_scalings(s.size, rng), dtype=torch.float64) for s in self.sites}
        return SymmetryElement(perms, scales)

    def _check(self, g, name="g"):
        if not isinstance(g, SymmetryElement):
            raise TypeError(f"Argument {name!r} must be a SymmetryElement, not {type(g).__name__}.")
        for k, v in g.perms.items():
            if k not in self._by_name or self._by_name[k].permutation != "free":
                raise ValueError(f"Argument {name!r} has a permutation for {k!r}, which is not a site holding one.")
            if v.shape != (self._by_name[k].size,):
                raise ValueError(f"Argument {name!r}: permutation of {k!r} must have shape ({self._by_name[k].size},), not {tuple(v.shape)}.")
        for k, v in g.scales.items():
            if k not in self._by_name:
                raise ValueError(f"Argument {name!r} has scalings for {k!r}, which is not a site.")
            if v.shape != (self._by_name[k].size,):
                raise ValueError(f"Argument {name!r}: scalings of {k!r} must have shape ({self._by_name[k].size},), not {tuple(v.shape)}.")

    def _perm_of(self, g, site: Site):
        """The permutation acting on ``site`` (its own or the one it shares)."""
        holder = site.name if site.permutation == "free" else site.permutation
        if site.permutation == "fixed" or holder not in g.perms:
            return None
        return g.perms[holder]

    def compose(self, g: SymmetryElement, h: SymmetryElement) -> SymmetryElement:
        """The product ``g h`` (``act(compose(g, h), m) == act(g, act(h, m))``)."""
        self._check(g, "g")
        self._check(h, "h")
        perms = {}
        for name in self._perm_site.values():
            n = self._by_name[name].size
            pg, ph = g.perms.get(name, torch.arange(n)), h.perms.get(name, torch.arange(n))
            perms[name] = ph.to(pg.device)[pg]
        scales = {}
        for s in self.sites:
            sg = g.scales.get(s.name, torch.ones(s.size, dtype=torch.float64))
            sh = h.scales.get(s.name, torch.ones(s.size, dtype=torch.float64)).to(sg.device)
            pg = self._perm_of(g, s)
            scales[s.name] = sg * (sh if pg is None else sh[pg.to(sh.device)])
        return SymmetryElement(perms, scales)

    def inverse(self, g: SymmetryElement) -> SymmetryElement:
        """The inverse element."""
        self._check(g)
        perms = {k: torch.argsort(v) for k, v in g.perms.items()}
        scales = {}
        for s in self.sites:
            sg = g.scales.get(s.name, torch.ones(s.size, dtype=torch.float64))
            p = self._perm_of(g, s)
            scales[s.name] = 1.0 / (sg if p is None else sg[torch.argsort(p).to(sg.device)])
        return SymmetryElement(perms, scales)

    def contains(self, g: SymmetryElement, tol: float = 1e-8) -> bool:
        """Whether every permutation is one and every scaling lies in its site's S."""
        self._check(g)
        for k, v in g.perms.items():
            if not torch.equal(torch.sort(v.cpu()).values, torch.arange(len(v))):
                return False
        for s in self.sites:
            if s.name in g.scales and not bool(np.all(s.group.scalar_in_s(g.scales[s.name].cpu().numpy(), tol))):
                return False
        return True

    # The action ----------------------------------------------------------------------------
    def _atom_element(self, g, aid):
        sol = self._s
        at = sol.atoms[aid]
        c = sol.scale_class[aid]
        site = self._site_of_class.get(c)
        perm = torch.arange(at.size)
        scale = torch.ones(at.size, dtype=torch.float64)
        if site is not None:
            p = self._perm_of(g, site)
            if p is not None:
                perm = p.cpu()
            if site.name in g.scales:
                scale = g.scales[site.name].detach().cpu().to(torch.float64)
        elif sol.perm_class[aid] in self._perm_site:
            holder = self._perm_site[sol.perm_class[aid]]
            if holder in g.perms:
                perm = g.perms[holder].cpu()
        return perm, scale

    def _expand(self, rep, g):
        """(index, scale) over the entries of ``rep``'s dimension, or None for the identity."""
        if not isinstance(rep, Rep):
            return None
        idx, scl, off = [], [], 0
        for kind, aid, chain, length in _pieces(rep, self._s.axis_atoms, self._s.atoms):
            if kind == "axis":
                perm, scale = self._atom_element(g, aid)
                if chain and not all(transparent(gr) for gr in chain):
                    v = scale.numpy()
                    for gr in chain:
                        v = gr.phi_scalar(v)
                    scale = torch.as_tensor(np.asarray(v, dtype=float), dtype=torch.float64)
                idx.append(perm + off)
                scl.append(scale)
            else:
                idx.append(torch.arange(off, off + length))
                scl.append(torch.ones(length, dtype=torch.float64))
            off += length
        idx, scl = torch.cat(idx), torch.cat(scl)
        r = rep.repeat
        if r > 1:
            idx = (idx[:, None] * r + torch.arange(r)[None, :]).reshape(-1)
            scl = scl.repeat_interleave(r)
        return idx, scl

    def _axis_rep(self, axis):
        return Rep(0, (Seg("axis", self._a.axes[axis].size, axis, 0),))

    def transformed_parameters(self, call, module: nn.Module, g: SymmetryElement, inputs: bool = True, outputs: bool = True) -> dict:
        """New values of ``module``'s parameters/buffers under ``g`` (nothing is modified)."""
        out = self._expand(self._axis_rep(call.out_axis), g) if outputs else None
        inp = self._expand(call.in_rep, g) if inputs else None
        res = {}
        if call.kind in ("linear", "conv"):
            W = module.weight
            dev = W.device
            Wd = W.detach().to(torch.float64)
            shape = (-1,) + (1,) * (W.dim() - 1)
            if out is not None:
                po, so = out[0].to(dev), out[1].to(dev)
                Wd = Wd[po] * so.view(shape)
            if inp is not None:
                pi, si = inp[0].to(dev), inp[1].to(dev)
                Wd = Wd[:, pi] / si.view((1, -1) + (1,) * (W.dim() - 2))
            res["weight"] = Wd.to(W.dtype)
            if module.bias is not None:
                b = module.bias.detach().to(torch.float64)
                if out is not None:
                    b = b[po] * so
                res["bias"] = b.to(module.bias.dtype)
            return res
        if call.kind == "layernorm":
            if module.weight is None:
                return res
            dev = module.weight.device
            n = module.weight.shape[0]
            po, so = (out[0].to(dev), out[1].to(dev)) if out is not None else (torch.arange(n, device=dev), torch.ones(n, dtype=torch.float64, device=dev))
            p = po if out is not None else (inp[0].to(dev) if inp is not None else po)
            res["weight"] = (module.weight.detach().to(torch.float64)[p] * so).to(module.weight.dtype)
            if module.bias is not None:
                res["bias"] = (module.bias.detach().to(torch.float64)[p] * so).to(module.bias.dtype)
            return res
        # batch norm
        ref = module.weight if module.weight is not None else module.running_mean
        dev = ref.device if ref is not None else torch.device("cpu")
        n = module.num_features
        po, so = (out[0].to(dev), out[1].to(dev)) if out is not None else (torch.arange(n, device=dev), torch.ones(n, dtype=torch.float64, device=dev))
        if inp is not None:
            pi, si = inp[0].to(dev), inp[1].to(dev)
        else:
            pi, si = po, torch.ones(n, dtype=torch.float64, device=dev)
        # input and output share the permutation (the tie of eq. E.47); when only one side is
        # transformed, the permutation comes from the side that is.
        p = po if out is not None else pi
        sign = torch.sign(si)
        if module.weight is not None:
            res["weight"] = (module.weight.detach().to(torch.float64)[p] * so * sign).to(module.weight.dtype)
            res["bias"] = (module.bias.detach().to(torch.float64)[p] * so).to(module.bias.dtype)
        if module.running_mean is not None:
            eps = module.eps
            res["running_mean"] = (module.running_mean.to(torch.float64)[p] * si).to(module.running_mean.dtype)
            res["running_var"] = (si**2 * (module.running_var.to(torch.float64)[p] + eps) - eps).to(module.running_var.dtype)
        return res

    def _check_model(self, model):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Argument 'model' must be an nn.Module, not {type(model).__name__}.")
        mods = dict(model.named_modules())
        for call in self._a.calls:
            m, ref = mods.get(call.module), self._a.modules[call.module]
            if m is None or type(m) is not type(ref) or getattr(m, "weight", None) is not None and m.weight.shape != ref.weight.shape:
                raise ValueError(f"Argument 'model' does not have the architecture of the traced model (module {call.module!r}).")
        return mods

    def act(self, g: SymmetryElement, model: nn.Module) -> nn.Module:
        """A transformed copy of ``model`` computing the same function (``model`` is untouched).

        ``model`` must have the architecture the spec was built from (it may have other
        weights); the copy keeps its device and dtypes.
        """
        self._check(g)
        self._check_model(model)
        new = copy.deepcopy(model)
        self.act_(g, new, source=model)
        return new

    def act_(self, g: SymmetryElement, model: nn.Module, source: nn.Module | None = None) -> nn.Module:
        """In-place version of :meth:`act` (reads ``source``'s tensors if given)."""
        src = dict((source or model).named_modules())
        dst = dict(model.named_modules())
        with torch.no_grad():
            for call in self._a.calls:
                new = self.transformed_parameters(call, src[call.module], g)
                target = dst[call.module]
                for k, v in new.items():
                    getattr(target, k).copy_(v)
        return model

    @property
    def calls(self):
        return tuple(self._a.calls)


def symmetry_spec(model: nn.Module, example_inputs, *, unknown: str = "error", timeout: float = 5.0) -> SymmetrySpec:
    """Trace ``model`` and find every hidden axis a weight-space symmetry acts on.

    Parameters
    ----------
    model : nn.Module
        Any network torch.fx can trace, built from Linear/Conv/BatchNorm modules, elementwise
        activations (modules or functions), pooling, flattening, residual additions,
        concatenation and slicing/zero-padding of channels.
    example_inputs : Tensor or tuple of Tensor
        Inputs for one forward pass (shapes of every intermediate tensor).
    unknown : {"error", "freeze"}
        What to do with an operation the analysis cannot follow: raise a
        :class:`SymmetrySpecError` naming it (default) or freeze the axes entering it
        (identity only there; the rest of the group stays valid).
    timeout : float
        Seconds the engine may spend on each activation.

    Returns
    -------
    SymmetrySpec

    Examples
    --------
    >>> from torch_bridge.models import mlp
    >>> spec = symmetry_spec(mlp([4, 3, 2], activation="tanh"), torch.zeros(1, 4))
    >>> [(s.name, s.size, s.group.positive_scalings, s.group.negative_scalings) for s in spec.sites]
    [('1', 3, 'trivial', True)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Argument 'model' must be an nn.Module, not {type(model).__name__}.")
    inputs = _as_tuple(example_inputs)
    analysis = Analysis(model, inputs, unknown=unknown, timeout=timeout)
    return SymmetrySpec(analysis, solve(analysis))


def verify_equivalence(model_a: nn.Module, model_b: nn.Module, inputs) -> float:
    """The largest absolute difference between the outputs of two models on ``inputs``,
    both evaluated in eval mode (their modes are restored afterwards)."""
    inputs = _as_tuple(inputs)
    modes = [(m, m.training) for net in (model_a, model_b) for m in net.modules()]
    try:
        model_a.eval()
        model_b.eval()
        with torch.no_grad():
            ya, yb = model_a(*inputs), model_b(*inputs)
    finally:
        for m, t in modes:
            m.training = t
    ta = [t for t in _leaves(ya)]
    tb = [t for t in _leaves(yb)]
    if len(ta) != len(tb):
        raise ValueError("the two models return different output structures")
    return max((float((a - b).abs().max()) if a.numel() else 0.0) for a, b in zip(ta, tb))


def _leaves(y):
    if isinstance(y, torch.Tensor):
        yield y
    elif isinstance(y, (tuple, list)):
        for v in y:
            yield from _leaves(v)
    elif isinstance(y, dict):
        for v in y.values():
            yield from _leaves(v)
