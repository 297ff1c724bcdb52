"""The weight-space symmetry group of a network: :class:`SymmetrySpec`, its :class:`Site` and
:class:`Binding` lists and its elements (:class:`SymmetryElement`), with the action on models.

A *site* is a class of unit spaces carrying one element of its group (a group of
:mod:`._site_groups`: monomial, orthogonal, general linear, scalar or block-diagonal per head).
A *binding* says which dimension of which parameter the element acts on, and how (``co``:
rows of a producer, ``W' = A W``; ``contra``: columns of a consumer, ``W' = W A^{-1}``, with
the engine's :math:`\\phi(A)` after activations (Proposition 3.4); ``diag``, ``perm``,
``bn_gamma``, ``bn_var``: the custom actions of gains, PReLU slopes and batch norm, eq. E.47).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import nn

from ._action import apply_bindings
from ._capture import SymmetrySpecError, capture
from ._elements import BlockElement, MonomialElement
from ._site_groups import Block, Monomial
from ._site import Binding, Site, SymmetryElement, _count_str, _fmt_count, _is_inf, _perm_count  # noqa: F401
from ._solve import pieces, solve
from ._trace import Rep, trace_graph

__all__ = ["Site", "Binding", "SymmetryElement", "SymmetrySpec", "symmetry_spec", "verify_equivalence"]


def _as_tuple(example_inputs):
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise TypeError(f"Argument 'example_inputs' must be a tensor or a tuple of tensors, not {type(example_inputs).__name__}.")


def _head_perm(el, heads):
    """The (head) permutation an element carries, to share it with other sites."""
    if isinstance(el, BlockElement):
        return el.head_perm
    if isinstance(el, MonomialElement):
        if heads is None:
            return el.perm
        d = el.n // heads
        return el.perm.view(heads, d)[:, 0] // d
    return None


class SymmetrySpec:
    """The sites of a captured network and its symmetry group (see :func:`symmetry_spec`)."""

    def __init__(self, tr, sol, strict=False):
        self._tr, self._sol = tr, sol
        classes: dict = {}
        for at in sol.atoms:
            classes.setdefault(sol.cls[at.id], []).append(at)
        self._classes = classes

        def atom_name(at):
            ax = tr.axes[at.axis]
            return ax.module + ("" if (at.start, at.stop) == (0, ax.size) else f"[{at.start}:{at.stop}]")

        perm_members: dict = {}
        for c in classes:
            perm_members.setdefault(sol.perm_group[c], []).append(c)
        holder = {}
        for p, cs in perm_members.items():
            h = min(cs, key=lambda c: (c in sol.absorbed, classes[c][0].id))
            for c in cs:
                holder[c] = h
        self._holder = holder
        sites, site_of_class = [], {}
        for c in sorted(classes, key=lambda c: classes[c][0].id):
            ats = classes[c]
            g = sol.groups[c]
            shares = _perm_size_of(g)
            if holder[c] != c and shares:
                perm = atom_name(classes[holder[c]][0])
            elif shares:
                perm = "free"
            else:
                perm = "fixed"
            if _trivial(g, holder[c] == c):
                continue
            members = tuple(("dual:" if sol.parity[a.id] else "") + atom_name(a) for a in ats)
            site = Site(atom_name(ats[0]), ats[0].size, g, members, tuple(sol.reasons.get(c, [])), perm)
            sites.append(site)
            site_of_class[c] = site.name
        # a permutation holder that is not a site (trivial) cannot lend its permutation
        self.sites = tuple(sites)
        self._site_of_class = site_of_class
        self._by_name = {s.name: s for s in sites}
        self._class_of_site = {v: k for k, v in site_of_class.items()}
        notes = list(tr.notes) + list(sol.notes)
        self.activations = tuple(tr.activations)
        for node, ref, group in tr.activations:
            status = getattr(group, "status", "proved")
            label = getattr(group, "label", "") or ""
            if status in ("unknown", "verified-numerically", "estimated") or "estimated" in label:
                if strict:
                    raise SymmetrySpecError(
                        f"strict=True: the group of activation {ref} (node {node!r}) is not proved "
                        f"(status {status!r}{', estimated numerically' if 'estimated' in label else ''}); "
                        "pass strict=False to use it with a note")
                if "estimated" not in label:  # numeric estimates are noted where they are made
                    notes.append(f"the engine's group of activation {ref} (node {node!r}) has status {status!r}: "
                                 f"{group.one_dimensional().describe()} is used"
                                 + (" (a lower bound: all the engine established)" if status == "unknown" else ""))
        if not self.sites:
            notes.append(self._why_no_site())
        self.notes = tuple(dict.fromkeys(notes))
        self._bindings = self._public_bindings()

    def _why_no_site(self) -> str:
        tr = self._tr
        if not tr.axes:
            return "no site: no layer with parameters produces a hidden tensor the analysis can follow"
        reasons = []
        for c, rs in self._sol.reasons.items():
            for r in rs:
                if r not in reasons:
                    reasons.append(r)
        return "no site: every hidden unit space is fixed or trivial (" + ", ".join(reasons[:6]) + ")"

    # Bindings ------------------------------------------------------------------------------
    def _public_bindings(self):
        sol, tr = self._sol, self._tr
        out: dict = {}
        for b in list(tr.bindings) + list(tr.uses):
            primary = not any(b is u for u in tr.uses)
            fqn = b.param
            aliases = tr.cap.aliases.get(fqn, (fqn,))
            mine = pieces(b.rep, sol.axis_atoms, sol.atoms)
            others = [None] * len(mine)
            if isinstance(b.other, Rep):
                theirs = pieces(b.other, sol.axis_atoms, sol.atoms)
                if [p[3] for p in theirs] == [p[3] for p in mine]:  # cut identically (perm-tied)
                    others = [self._site_of_class.get(sol.cls[p[1]]) if p[0] == "axis" else None for p in theirs]
            off = 0
            for (kind, aid, chain, length), other_site in zip(mine, others):
                site = self._site_of_class.get(sol.cls[aid]) if kind == "axis" else None
                rel = "dual" if kind == "axis" and sol.parity[aid] else "same"
                crossed = kind == "axis" and sol.atoms[aid].axis in tr.crossed
                out.setdefault(fqn, []).append(Binding(fqn, aliases, b.dim, b.variance, site, off, length, b.rep.repeat,
                                                       rel, tuple(chain), b.module, b.op, other_site, b.part, primary,
                                                       crossed))
                off += length
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    @property
    def bindings(self) -> Mapping:
        """Parameter/buffer name (one per underlying tensor) -> its :class:`Binding` tuple."""
        return self._bindings

    # Introspection -----------------------------------------------------------------------
    def site(self, name: str) -> Site:
        try:
            return self._by_name[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, list(self._by_name), n=3)
            raise KeyError(f"no site {name!r}" + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")) from None

    @property
    def dimension(self) -> int:
        """Dimension of the continuous part of the group (sum over sites)."""
        return sum(s.dimension for s in self.sites)

    @property
    def log10_components(self) -> float:
        total = 0.0
        for s in self.sites:
            c = s.components
            if _is_inf(c):
                return math.inf
            total += math.log10(c) if c < 10**300 else _log10_big(c)
        return total

    @property
    def components(self):
        """Number of connected components (an int; ``math.inf`` with discrete scalings)."""
        out = 1
        for s in self.sites:
            c = s.components
            if _is_inf(c):
                return math.inf
            out *= c
        return out

    def summary(self) -> str:
        """A table of the sites with per-site and total dimension and components."""
        rows = [("site", "size", "group", "permutation", "dim", "components", "constraints")]
        for s in self.sites:
            perm = s.permutation if s.permutation in ("free", "fixed") else f"shared with {s.permutation}"
            c = s.components
            ctext = "inf" if _is_inf(c) else (str(c) if c < 10**6 else f"10^{_log10_big(c):.1f}")
            rows.append((s.name, str(s.size), s.group.label, perm, str(s.dimension), ctext, ", ".join(s.constraints)))
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
            "sites": [{"name": s.name, "size": s.size, "group": repr(s.group), "label": s.group.label,
                       "permutation": s.permutation, "dimension": s.dimension, "components": _count_str(s.components),
                       "members": list(s.members), "constraints": list(s.constraints)} for s in self.sites],
            "dimension": self.dimension,
            "log10_components": self.log10_components,
            "components": _count_str(comps),
            "notes": list(self.notes),
        }

    # The group ---------------------------------------------------------------------------
    def element(self, elements: Mapping) -> SymmetryElement:
        """A :class:`SymmetryElement` from site name -> element (missing: identity), checked."""
        g = SymmetryElement(elements)
        self._check(g)
        return g

    def identity(self) -> SymmetryElement:
        """The identity element."""
        return SymmetryElement({s.name: s.group.identity() for s in self.sites})

    def sample(self, generator: torch.Generator | None = None) -> SymmetryElement:
        """A random element: each site's ``group.sample`` (permutations shared across the
        sites of a permutation class: drawn once, by the site holding them)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"Argument 'generator' must be a torch.Generator or None, not {type(generator).__name__}.")
        els, shared = {}, {}
        order = sorted(self.sites, key=lambda s: s.permutation != "free")
        for s in order:
            if s.permutation not in ("free", "fixed") and s.permutation in shared:
                els[s.name] = s.group.sample(generator, perm=shared[s.permutation])
            elif s.permutation not in ("free", "fixed") and s.permutation not in self._by_name:
                els[s.name] = _sample_fixed_perm(s.group, generator)
            else:
                el = s.group.sample(generator)
                els[s.name] = el
                if s.permutation == "free":
                    shared[s.name] = _head_perm(el, _shared_heads(s.group))
        return SymmetryElement({s.name: els[s.name] for s in self.sites})

    def _check(self, g, name="g"):
        if not isinstance(g, SymmetryElement):
            raise TypeError(f"Argument {name!r} must be a SymmetryElement, not {type(g).__name__}.")
        for k, v in g.items():
            if k not in self._by_name:
                raise ValueError(f"Argument {name!r} has an element for {k!r}, which is not a site.")
            if v.n != self._by_name[k].size:
                raise ValueError(f"Argument {name!r}: the element of {k!r} acts on {v.n} units, the site has "
                                 f"{self._by_name[k].size}.")

    def compose(self, g: SymmetryElement, h: SymmetryElement) -> SymmetryElement:
        """The product ``g h`` (``act(compose(g, h), m) == act(g, act(h, m))``)."""
        self._check(g, "g")
        self._check(h, "h")
        out = {}
        for s in self.sites:
            a, b = g.get(s.name), h.get(s.name)
            out[s.name] = a.compose(b) if a is not None and b is not None else (a if a is not None else b)
        return SymmetryElement({k: v for k, v in out.items() if v is not None})

    def inverse(self, g: SymmetryElement) -> SymmetryElement:
        """The inverse element."""
        self._check(g)
        return SymmetryElement({k: v.inverse() for k, v in g.items()})

    def contains(self, g: SymmetryElement, tol: float = 1e-8) -> bool:
        """Whether every site's element lies in its group (and shared permutations agree)."""
        self._check(g)
        for s in self.sites:
            if s.name in g and not s.group.contains(g[s.name], tol):
                return False
        for s in self.sites:
            if s.permutation not in ("free", "fixed") and s.permutation in self._by_name:
                h = self._by_name[s.permutation]
                a = _head_perm(g.get(s.name, s.group.identity()), _shared_heads(s.group))
                b = _head_perm(g.get(h.name, h.group.identity()), _shared_heads(h.group))
                if a is not None and b is not None and not torch.equal(a.cpu(), b.cpu()):
                    return False
        return True

    # The action ----------------------------------------------------------------------------
    def _class_element(self, g, c):
        name = self._site_of_class.get(c)
        if name is not None:
            return g.get(name)
        h = self._holder.get(c, c)
        hname = self._site_of_class.get(h)
        if hname is None or h == c or hname not in g:
            return None
        grp = self._sol.groups[c]
        hp = _head_perm(g[hname], _shared_heads(self._by_name[hname].group))
        if hp is None:
            return None
        if isinstance(grp, Monomial) and grp.permutations:
            return MonomialElement(hp, torch.ones(grp.n, dtype=torch.float64))
        if isinstance(grp, Block) and isinstance(grp.inner, Monomial) and hp.numel() == grp.n:
            return MonomialElement(hp, torch.ones(grp.n, dtype=torch.float64))  # blocks of units, moved together
        if isinstance(grp, Block) and grp.head_perm:
            d = grp.inner.n
            return BlockElement(torch.eye(d, dtype=torch.float64).expand(grp.heads, d, d), hp)
        return None

    def _element_of(self, g):
        cache = {}
        sol = self._sol

        def of(aid):
            c = sol.cls[aid]
            if c not in cache:
                cache[c] = self._class_element(g, c)
            el = cache[c]
            if el is not None and sol.parity[aid]:
                el = el.dual()
            return el

        return of

    def check_model(self, model):
        """Raise ``ValueError`` unless ``model`` has the architecture the spec was built from."""
        self._check_model(model)

    def _check_model(self, model):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Argument 'model' must be an nn.Module, not {type(model).__name__}.")
        ref = self._tr.cap.model
        for fqn in self._tensor_bounds():
            try:
                t = _get_tensor(model, fqn)
            except (AttributeError, KeyError):
                raise ValueError(f"Argument 'model' does not have the architecture of the traced model "
                                 f"(no tensor {fqn!r}).") from None
            if t.shape != _get_tensor(ref, fqn).shape:
                raise ValueError(f"Argument 'model' does not have the architecture of the traced model "
                                 f"(tensor {fqn!r} has shape {tuple(t.shape)}).")

    def _tensor_bounds(self):
        out: dict = {}
        for b in self._tr.bindings:
            out.setdefault(b.param, []).append(b)
        return out

    def transformed_tensors(self, g: SymmetryElement, model: nn.Module) -> dict:
        """Canonical tensor name -> its new value under ``g``, for the tensors ``g`` moves (a
        tensor none of whose bindings touches a site of ``g`` is left out); nothing is modified."""
        self._check(g)
        of = self._element_of(g)
        sol = self._sol

        def touched(rep):
            return isinstance(rep, Rep) and any(k == "axis" and of(a) is not None
                                                for k, a, _, _ in pieces(rep, sol.axis_atoms, sol.atoms))

        out = {}
        for fqn, bounds in self._tensor_bounds().items():
            if not any(touched(b.rep) or touched(b.other) for b in bounds):
                continue
            t = _get_tensor(model, fqn)
            out[fqn] = apply_bindings(t, bounds, sol, of)
        for wn in self._tr.weight_norms:
            if wn.v in out:
                out[wn.g] = self._rescaled_magnitude(wn, model, out, of)
        return out

    def _rescaled_magnitude(self, wn, model, out, of):
        """Weight norm ``W = g v / |v|`` with v's columns moved: ``g' = g'_rows |v'_i| / |v_i^rows|``
        (``v^rows``: v with its row bindings only), so that ``W' = A W B^{-1}`` exactly."""
        v0 = _get_tensor(model, wn.v)
        rows = [b for b in self._tensor_bounds()[wn.v] if b.dim == wn.dim]
        vr = apply_bindings(v0, rows, self._sol, of) if rows else v0
        dims = [d for d in range(v0.dim()) if d != wn.dim]
        ratio = (torch.linalg.vector_norm(out[wn.v].to(torch.float64), dim=dims, keepdim=True)
                 / torch.linalg.vector_norm(vr.to(torch.float64), dim=dims, keepdim=True))
        g = out.get(wn.g, _get_tensor(model, wn.g))
        return (g.to(torch.float64) * ratio.reshape(g.shape)).to(g.dtype)

    def act(self, g: SymmetryElement, model: nn.Module) -> nn.Module:
        """A transformed copy of ``model`` computing the same function (``model`` is untouched).

        ``model`` must have the architecture the spec was built from (it may have other
        weights); the copy keeps its device and dtypes. Each underlying tensor is transformed
        once, however many names (tied weights) or uses it has.
        """
        self._check(g)
        self._check_model(model)
        new = _deepcopy(model)
        values = self.transformed_tensors(g, model)
        with torch.no_grad():
            for fqn, v in values.items():
                _get_tensor(new, fqn).copy_(v)
        return new

    def verify(self, model: nn.Module, inputs, kwargs: dict | None = None, g: SymmetryElement | None = None,
               generator: torch.Generator | None = None, *, example_kwargs: dict | None = None) -> float:
        """Act with ``g`` (default: a sample) on ``model`` and return the largest relative output
        difference ``max |f'(x) - f(x)| / max |f(x)|`` on ``inputs`` (eval mode). Run it on
        your own model: it checks the whole analysis end to end."""
        kwargs = example_kwargs if kwargs is None else kwargs
        g = self.sample(generator) if g is None else g
        moved = self.act(g, model)
        ya = _outputs(model, _as_tuple(inputs), kwargs)
        yb = _outputs(moved, _as_tuple(inputs), kwargs)
        if len(ya) != len(yb):
            return math.inf  # the moved model does not even return the same outputs
        scale = max((float(a.abs().max()) for a in ya if a.numel()), default=0.0)
        diff = _largest_difference(ya, yb)
        return diff / scale if scale > 0 else diff


def _deepcopy(model):
    """``copy.deepcopy`` that also copies modules holding computed tensors as plain attributes
    (a pruned module's ``weight`` = orig * mask after a forward): those are detached in the copy
    (its forward pre-hook recomputes them from the transformed tensors)."""
    held = []
    for m in model.modules():
        for k, v in list(m.__dict__.items()):
            if isinstance(v, torch.Tensor) and v.grad_fn is not None:
                held.append((m, k, v))
                m.__dict__[k] = v.detach()
    try:
        return copy.deepcopy(model)
    finally:
        for m, k, v in held:
            m.__dict__[k] = v


def _shared_heads(group):
    """How many heads' permutation a site shares with the others of its permutation class, or
    None when it shares its whole unit permutation (monomial sites, and blocks of monomial
    groups: a group norm's channels, each group's units moving with its block)."""
    if isinstance(group, Block) and not isinstance(group.inner, Monomial):
        return group.heads
    return None


def _sample_fixed_perm(group, generator):
    n = _shared_heads(group) or group.n
    return group.sample(generator, perm=torch.arange(n))


def _perm_size_of(g):
    if isinstance(g, Monomial):
        return g.permutations and g.n > 1
    if isinstance(g, Block):
        return g.head_perm or (isinstance(g.inner, Monomial) and g.inner.permutations)
    return False


def _trivial(g, is_holder) -> bool:
    """A group with nothing to sample (a shared permutation is sampled by its holder)."""
    if g.dimension > 0:
        return False
    if isinstance(g, Monomial):
        from ._site_groups import ONE

        if g.scalings == ONE:
            return not (is_holder and g.permutations and g.n > 1)
        return False
    return g.components == 1


def _log10_big(c: int) -> float:
    """log10 of a (huge) positive int, without converting it to a decimal string."""
    k = max(c.bit_length() - 60, 0)
    return math.log10(c >> k) + k * math.log10(2)


def _get_tensor(model, fqn):
    mod, _, name = fqn.rpartition(".")
    m = model.get_submodule(mod) if mod else model
    if name in m._parameters and m._parameters[name] is not None:
        return m._parameters[name]
    if name in m._buffers and m._buffers[name] is not None:
        return m._buffers[name]
    raise AttributeError(fqn)


def _leaves(y):
    if isinstance(y, torch.Tensor):
        yield y
    elif isinstance(y, (tuple, list)):
        for v in y:
            yield from _leaves(v)
    elif isinstance(y, dict) or hasattr(y, "items"):
        for v in y.values():
            yield from _leaves(v)


def _outputs(model, inputs, kwargs=None):
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            y = model(*inputs, **(kwargs or {}))
    finally:
        for m, t in modes:
            m.training = t
    return [t for t in _leaves(y)]


def symmetry_spec(model: nn.Module, example_inputs, example_kwargs: dict | None = None, *, strict: bool = False,
                  unknown: str = "error", timeout: float | None = None) -> SymmetrySpec:
    """Capture ``model`` with ``torch.export`` and find its weight-space symmetry group.

    Parameters
    ----------
    model : nn.Module
        Any network ``torch.export.export(model, args, kwargs, strict=False)`` can capture.
    example_inputs : Tensor or tuple of Tensor
        Positional inputs for one forward pass (shapes of every intermediate tensor).
    example_kwargs : dict, optional
        Keyword inputs (e.g. ``{"use_cache": False}`` for Hugging Face decoders).
    strict : bool
        Refuse activations whose group is not proved (estimated numerically, or status
        ``"unknown"``/``"verified-numerically"``) instead of noting them.
    unknown : {"error", "freeze"}
        What to do with an operation no rule follows: raise a :class:`SymmetrySpecError`
        naming it (default) or freeze the axes entering it (with a note).
    timeout : float or None
        Wall-clock guard in seconds for the engine on each activation (None: the engine's
        default). The engine's answers are budgeted by counted work, not by this guard.

    Returns
    -------
    SymmetrySpec

    Examples
    --------
    >>> from torch_bridge.models import mlp
    >>> spec = symmetry_spec(mlp([4, 3, 2], activation="tanh"), torch.zeros(1, 4))
    >>> [(s.name, s.size, s.group) for s in spec.sites]
    [('1', 3, Monomial(3, SIGNS, permutations=True))]
    >>> spec.verify(mlp([4, 3, 2], activation="tanh"), torch.randn(5, 4)) < 1e-5
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Argument 'model' must be an nn.Module, not {type(model).__name__}.")
    if unknown not in ("error", "freeze"):
        raise ValueError(f"Argument 'unknown' must be 'error' or 'freeze', not {unknown!r}.")
    if example_kwargs is not None and not isinstance(example_kwargs, dict):
        raise TypeError(f"Argument 'example_kwargs' must be a dict or None, not {type(example_kwargs).__name__}.")
    inputs = _as_tuple(example_inputs)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(model, inputs, example_kwargs)
    tr = trace_graph(cap, unknown=unknown, timeout=timeout)
    return SymmetrySpec(tr, solve(tr), strict=strict)


def verify_equivalence(model_a: nn.Module, model_b: nn.Module, inputs, kwargs: dict | None = None) -> float:
    """The largest absolute difference between the outputs of two models on ``inputs``,
    both evaluated in eval mode (their modes are restored afterwards)."""
    inputs = _as_tuple(inputs)
    ta, tb = _outputs(model_a, inputs, kwargs), _outputs(model_b, inputs, kwargs)
    if len(ta) != len(tb):
        raise ValueError("the two models return different output structures")
    return _largest_difference(ta, tb)


def _largest_difference(ya, yb) -> float:
    """max |a - b| over paired output tensors; inf where shapes differ or a value is not finite
    (a NaN would otherwise vanish inside max() and a broken model would pass)."""
    if any(a.shape != b.shape for a, b in zip(ya, yb)):
        return math.inf
    if any(not bool(torch.isfinite(t).all()) for t in (*ya, *yb) if t.numel()):
        return math.inf
    return max((float((a.double() - b.double()).abs().max()) for a, b in zip(ya, yb) if a.numel()), default=0.0)
