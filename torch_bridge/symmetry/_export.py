"""An alignment as a per-parameter map: what Git Re-Basin-style code and plain state dicts need.

:func:`export_alignment` turns a :class:`~._site.SymmetryElement` into, for every state-dict
key the element moves, a :class:`ParamMap`: one :class:`AxisMap` (or None: untouched) per
tensor dimension. An :class:`AxisMap` over a dimension of size ``m`` is either

* *monomial*: ``perm`` (``m`` indices), ``scale`` (``m`` factors or None) and ``offset`` (``m``
  terms or None): ``out.select(dim, i) = scale[i] * t.select(dim, perm[i]) + offset[i]``, i.e.
  ``t.index_select(dim, perm) * scale + offset`` broadcast along ``dim`` -- Git Re-Basin's
  ``index_select(w, axis, perm)`` with the scalings beside it (``offset`` only for batch-norm
  running variances: :math:`v \\to s^2 (v + \\epsilon) - \\epsilon`);
* *dense*: ``matrix`` (``m x m``): ``out = tensordot`` of ``matrix`` with ``t`` along ``dim``
  (:math:`out_i = \\sum_j M_{ij} t_j`), for sites whose element is not monomial (orthogonal,
  general linear, per-head blocks): consumers' columns get :math:`A^{-T}`, producers' rows
  :math:`A`, already expanded over flattened positions and over the unmoved ranges.

A grouped convolution's weight moves per group of output channels (``ParamMap.parts``: the
``j``-th of ``G`` equal chunks along dim 0 gets its own axes), which no per-axis map of the
whole tensor can express. A weight norm's magnitude ``g`` (``W = g v / |v|``) absorbs the change
of ``v``'s row norms when ``v``'s columns are rescaled, so its map then depends on ``v``: pass the
weights (``state_dict=``). :func:`apply_to_state_dict` applies the maps to a plain state dict,
with no model; it equals ``spec.act(g, model).state_dict()`` (tied names included).

``permutations_only=True`` exports the element's permutations alone, all Git Re-Basin's
permutation specs can express. The permuted model still computes ``model_b``'s function (a
permutation is itself a symmetry) but it is not the aligned model: for tanh, dropping the signs
leaves half the units anti-aligned, a bad permutation for merging. This is never silent: a
:class:`DroppedScalingsWarning` says how many units lose a sign or a scale (and, given the
models, how far the permuted copy lies from the aligned one and from ``model_a``), and a site
whose element is not a scaled permutation (an orthogonal matrix) is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ._action import _runs
from ._elements import MonomialElement, ScalarElement, _as_monomial, _teq, _thash, _trepr
from ._site import SymmetryElement
from ._solve import pieces
from ._trace import Rep

__all__ = ["AxisMap", "ParamMap", "DroppedScalingsWarning", "export_alignment", "apply_to_state_dict"]


class DroppedScalingsWarning(UserWarning):
    """A permutation-only export dropped scalings or signs: the function changes."""


@dataclass(frozen=True, eq=False)
class AxisMap:
    """How one tensor dimension moves (see the module docstring): monomial
    (``perm``, ``scale``, ``offset``) or dense (``matrix``)."""

    perm: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    matrix: torch.Tensor | None = None

    def __post_init__(self):
        if (self.matrix is None) == (self.perm is None):
            raise ValueError("an AxisMap holds either 'perm' (monomial) or 'matrix' (dense)")

    @property
    def size(self) -> int:
        return int(self.matrix.shape[0] if self.matrix is not None else self.perm.shape[0])

    @property
    def is_monomial(self) -> bool:
        return self.matrix is None

    def as_matrix(self) -> torch.Tensor:
        """The dense ``m x m`` matrix (a monomial map's offset is not linear: refused)."""
        if self.matrix is not None:
            return self.matrix
        if self.offset is not None:
            raise ValueError("an AxisMap with an offset (a batch-norm variance) is affine, not a matrix")
        m = self.size
        M = torch.zeros(m, m, dtype=torch.float64, device=self.perm.device)
        M[torch.arange(m, device=self.perm.device), self.perm] = 1.0 if self.scale is None else self.scale.to(M)
        return M

    def apply(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """``t`` (float64) moved along ``dim``."""
        if self.matrix is not None:
            return torch.tensordot(self.matrix.to(t), t, dims=([1], [dim])).movedim(0, dim)
        out = t.index_select(dim, self.perm.to(t.device))
        shape = [1] * t.dim()
        shape[dim] = -1
        if self.scale is not None:
            out = out * self.scale.to(t).view(shape)
        if self.offset is not None:
            out = out + self.offset.to(t).view(shape)
        return out

    def then(self, other: "AxisMap") -> "AxisMap":
        """The map applying ``self`` first, then ``other``."""
        if self.is_monomial and other.is_monomial:
            p1, p2 = self.perm, other.perm.to(self.perm.device)
            ones = torch.ones(self.size, dtype=torch.float64, device=p1.device)
            s1 = ones if self.scale is None else self.scale
            s2 = ones if other.scale is None else other.scale
            o1 = None if self.offset is None else s2 * self.offset[p2]
            off = o1 if other.offset is None else (other.offset if o1 is None else o1 + other.offset)
            scale = None if self.scale is None and other.scale is None else s2 * s1[p2]
            return AxisMap(p1[p2], scale, off)
        return AxisMap(matrix=other.as_matrix() @ self.as_matrix().to(other.as_matrix()))

    def __eq__(self, other):
        if type(other) is not AxisMap:
            return NotImplemented
        return all(_teq(getattr(self, f), getattr(other, f)) for f in _AXIS_FIELDS)

    def __hash__(self):
        return hash(tuple(_thash(getattr(self, f)) for f in _AXIS_FIELDS))

    def __repr__(self):
        # evaluates back (``tensor`` = ``torch.tensor``) up to 1000 entries per tensor
        parts = [f"{f}={_trepr(getattr(self, f))}" for f in _AXIS_FIELDS if getattr(self, f) is not None]
        return f"AxisMap({', '.join(parts)})"


_AXIS_FIELDS = ("perm", "scale", "offset", "matrix")


@dataclass(frozen=True, eq=False)
class ParamMap:
    """One tensor's move: ``axes[d]`` (an :class:`AxisMap` or None) per dimension, applied
    first; then each ``(j, G, axes)`` of ``parts`` moves the ``j``-th of ``G`` equal chunks along
    dim 0 (grouped convolutions). ``m[d]`` and ``len(m)`` read ``axes``."""

    axes: tuple
    parts: tuple = ()

    def __getitem__(self, d):
        return self.axes[d]

    def __len__(self):
        return len(self.axes)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` moved (computed in float64; dtype and device follow ``t``)."""
        if t.dim() != len(self.axes):
            raise ValueError(f"the map is for a {len(self.axes)}-d tensor, not a {t.dim()}-d one")
        x = t.detach().to(torch.float64)
        for d, m in enumerate(self.axes):
            if m is not None:
                if m.size != x.shape[d]:
                    raise ValueError(f"the map moves {m.size} entries along dim {d}, the tensor has {x.shape[d]}")
                x = m.apply(x, d)
        if self.parts:
            G = self.parts[0][1]
            rows = x.shape[0] // G
            by_j = {j: axes for j, _, axes in self.parts}
            chunks = []
            for j in range(G):
                sub = x.narrow(0, j * rows, rows)
                for d, m in enumerate(by_j.get(j, ())):
                    if m is not None:
                        sub = m.apply(sub, d)
                chunks.append(sub)
            x = torch.cat(chunks, 0)
        return x.to(t.dtype)

    def __eq__(self, other):
        if type(other) is not ParamMap:
            return NotImplemented
        return self.axes == other.axes and self.parts == other.parts

    def __hash__(self):
        return hash((self.axes, self.parts))

    def __repr__(self):
        return f"ParamMap({self.axes!r}" + (f", parts={self.parts!r}" if self.parts else "") + ")"


# Building the maps: the action of _action.py, read as per-dimension maps ------------------------

def _unit_map(el, variance, b):
    """(perm, scale, offset) or matrix of one run's element for a binding kind, over its units."""
    if variance == "contra":
        el = el.dual()
    if variance in ("co", "contra", "diag", "bn_gamma") and not isinstance(el, (MonomialElement, ScalarElement)):
        return None, None, None, el.matrix().detach().to(torch.float64)
    if isinstance(el, ScalarElement):
        n = el.n
        perm, scale = torch.arange(n), torch.full((n,), float(el.value), dtype=torch.float64)
    elif isinstance(el, MonomialElement):
        perm, scale = el.perm, el.scale.detach().to(torch.float64)
    else:
        raise AssertionError(f"binding kind {variance!r} needs a monomial element, got {type(el).__name__}")
    if variance == "perm":
        return perm, None, None, None
    if variance == "bn_var":
        eps = float(b.other)
        return perm, scale**2, (scale**2 - 1) * eps, None
    return perm, scale, None, None


def _factors(b, sol, element_of):
    """The input-side factors of a diag / bn_gamma binding, per output unit (None: none)."""
    if b.variance not in ("diag", "bn_gamma") or b.other is None:
        return None
    out = []
    for off, length, el in _runs(b.other, sol, element_of):
        if el is None:
            out.append(torch.ones(length, dtype=torch.float64))
        else:
            s = _as_monomial_strict(el).scale.detach().to(torch.float64).cpu()
            out.append(torch.sign(s) if b.variance == "bn_gamma" else 1.0 / s)
    return torch.cat(out)


def _as_monomial_strict(el):
    if isinstance(el, MonomialElement):
        return el
    if isinstance(el, ScalarElement):
        return MonomialElement(torch.arange(el.n), torch.full((el.n,), float(el.value), dtype=torch.float64))
    raise AssertionError(f"expected a monomial element, got {type(el).__name__}")


def _binding_map(size, b, sol, element_of):
    """The :class:`AxisMap` of one binding over its whole dimension (None: moves nothing)."""
    r = b.rep.repeat
    runs = [(off, length, _unit_map(el, b.variance, b)) for off, length, el in _runs(b.rep, sol, element_of)
            if el is not None]
    # a diag / bn_gamma binding also scales by its input site's element, even where its own
    # units do not move (a gain between a fixed and a moved space)
    fac = _factors(b, sol, element_of)
    if not runs and fac is None:
        return None
    fac = None if fac is None else fac.repeat_interleave(r)
    if all(m[3] is None for _, _, m in runs):
        perm = torch.arange(size)
        scale = offset = None
        for off, length, (p, s, o, _) in runs:
            k = torch.arange(r)
            idx = ((off + torch.arange(length))[:, None] * r + k).reshape(-1)
            perm[idx] = ((off + p.cpu())[:, None] * r + k).reshape(-1)
            if s is not None:
                scale = torch.ones(size, dtype=torch.float64) if scale is None else scale
                scale[idx] = s.cpu().repeat_interleave(r)
            if o is not None:
                offset = torch.zeros(size, dtype=torch.float64) if offset is None else offset
                offset[idx] = o.cpu().repeat_interleave(r)
        if fac is not None:
            scale = fac if scale is None else scale * fac
        # Git Re-Basin reads a pure permutation: no all-ones scale, no all-zero offset
        scale = None if scale is not None and bool((scale == 1).all()) else scale
        offset = None if offset is not None and bool((offset == 0).all()) else offset
        return AxisMap(perm, scale, offset)
    M = torch.eye(size, dtype=torch.float64)
    for off, length, (p, s, o, A) in runs:
        if A is None:
            if o is not None:
                raise AssertionError("an affine (batch-norm variance) map next to a dense one")
            A = AxisMap(p, s).as_matrix()
        lo, hi = off * r, (off + length) * r
        M[lo:hi, lo:hi] = torch.kron(A.cpu(), torch.eye(r, dtype=torch.float64))
    if fac is not None:
        M = fac[:, None] * M
    return AxisMap(matrix=M)


def _axes(shape, bounds, sol, element_of):
    axes = [None] * len(shape)
    for b in bounds:
        m = _binding_map(shape[b.dim], b, sol, element_of)
        if m is not None:
            axes[b.dim] = m if axes[b.dim] is None else axes[b.dim].then(m)
    return tuple(axes)


def _param_map(shape, bounds, sol, element_of):
    whole = [b for b in bounds if b.part is None]
    axes = _axes(shape, whole, sol, element_of)
    groups: dict = {}
    for b in bounds:
        if b.part is not None:
            groups.setdefault(b.part, []).append(b)
    parts = []
    for (j, G), bs in sorted(groups.items()):
        sub = (shape[0] // G,) + tuple(shape[1:])
        ax = _axes(sub, bs, sol, element_of)
        if any(m is not None for m in ax):
            parts.append((j, G, ax))
    if all(m is None for m in axes) and not parts:
        return None
    return ParamMap(axes, tuple(parts))


def _permutations(spec, g, tol):
    """(g with every scaling set to 1, [(site, units with a scaling, sign flips, max |log|s||)])."""
    els, lossy = {}, []
    for name, el in g.items():
        mono = _as_monomial(el, tol)
        if mono is None:
            raise ValueError(f"permutations_only=True: site {name!r} carries a {type(el).__name__} that is not a "
                             "scaled permutation; no permutation represents it (export with permutations_only=False: "
                             "the map then holds its matrix).")
        perm, scale = mono
        moved = (scale - 1).abs() > tol
        if bool(moved.any()):
            a = scale.abs()
            lossy.append((name, int(moved.sum()), int((scale < 0).sum()), float(a.log().abs().max())))
        els[name] = MonomialElement(perm, torch.ones(el.n, dtype=torch.float64))
    return SymmetryElement(els), lossy


def export_alignment(spec, g: SymmetryElement, *, permutations_only: bool = False, state_dict: Mapping | None = None,
                     model_b=None, model_a=None, tol: float = 1e-9) -> dict:
    """The per-parameter map of ``g``: state-dict key -> :class:`ParamMap` (the keys ``g`` moves).

    Parameters
    ----------
    spec : SymmetrySpec
    g : SymmetryElement
        An element of ``spec``'s group (e.g. from :func:`~._align.align`).
    permutations_only : bool
        Export the permutations alone (every map monomial with ``scale=None``); warns with a
        :class:`DroppedScalingsWarning` when ``g`` has scalings or signs, and refuses a site
        whose element is not a scaled permutation.
    state_dict : mapping, optional
        The weights ``g`` will act on; needed only for a weight norm (``g v / |v|``) whose
        direction's columns ``g`` rescales: the magnitude's map then depends on ``v``'s rows
        (an error says so when it is missing).
    model_b, model_a : nn.Module, optional
        With ``permutations_only=True``: the model ``g`` acts on (and the reference it was
        aligned to), so that the warning says how far the permutation-only copy lies from the
        aligned one (and from ``model_a``, beside the full element's distance).
    tol : float
        Scalings within ``tol`` of 1 count as none; a dense element within ``tol`` of a scaled
        permutation counts as one.

    Returns
    -------
    dict
        Every name of every moved tensor (tied weights: each alias) -> its :class:`ParamMap`.

    Examples
    --------
    >>> import torch
    >>> from torch_bridge.models import mlp
    >>> from torch_bridge.symmetry import symmetry_spec
    >>> net = mlp([4, 3, 2], activation="relu")
    >>> spec = symmetry_spec(net, torch.zeros(1, 4))
    >>> g = spec.sample(torch.Generator().manual_seed(0))
    >>> maps = export_alignment(spec, g)
    >>> sorted(maps), [ax is not None for ax in maps["1.weight"].axes], maps["1.weight"][0].perm.tolist()
    (['1.bias', '1.weight', '3.weight'], [True, False], [2, 0, 1])
    >>> maps["3.weight"][1] == AxisMap(g["1"].perm, 1 / g["1"].scale)   # the consumer's columns
    True
    """
    spec._check(g)
    if not isinstance(permutations_only, bool):
        raise TypeError(f"Argument 'permutations_only' must be a bool, not {type(permutations_only).__name__}.")
    if permutations_only:
        g_perm, lossy = _permutations(spec, g, tol)
        if lossy:
            _warn_dropped(spec, g, g_perm, lossy, model_b, model_a)
        g = g_perm
    of = spec._element_of(g)
    sol, tr = spec._sol, spec._tr
    ref = tr.cap.model
    out = {}
    for fqn, bounds in spec._tensor_bounds().items():
        if not any(_touched(b.rep, sol, of) or _touched(b.other, sol, of) for b in bounds):
            continue
        shape = tuple(_shape(ref, fqn))
        m = _param_map(shape, bounds, sol, of)
        if m is None:
            continue
        for name in tr.cap.aliases.get(fqn, (fqn,)):
            out[name] = m
    for wn in getattr(tr, "weight_norms", ()):
        if wn.v in out:
            m = _weight_norm_magnitude(spec, wn, out, of, state_dict, ref)
            if m is not None:
                for name in tr.cap.aliases.get(wn.g, (wn.g,)):
                    out[name] = m
    return out


def _norm_preserving(m: ParamMap, dim: int) -> bool:
    """Whether the map keeps the norms of the slices along ``dim`` (other axes moved by signed
    permutations only)."""
    if m.parts:
        return False
    for d, ax in enumerate(m.axes):
        if d == dim or ax is None:
            continue
        signed = ax.scale is None or bool((ax.scale.abs() == 1).all())
        if not ax.is_monomial or ax.offset is not None or not signed:
            return False
    return True


def _weight_norm_magnitude(spec, wn, out, of, state_dict, ref):
    """The map of a weight norm's magnitude ``g`` (``W = g v / |v|``): its own rows' map, then the
    change of ``v``'s row norms (:meth:`SymmetrySpec.transformed_tensors`), which depends on
    ``v`` unless the columns move by signed permutations."""
    g_map = out.get(wn.g)
    if _norm_preserving(out[wn.v], wn.dim):
        return g_map
    names = spec._tr.cap.aliases.get(wn.v, (wn.v,))
    v0 = next((state_dict[k] for k in names if state_dict is not None and k in state_dict), None)
    if v0 is None:
        raise ValueError(f"the map of {wn.g!r} (the magnitude of the weight norm of {wn.v!r}, whose columns the "
                         "element rescales) depends on the weights: pass state_dict=... (apply_to_state_dict does)")
    v0 = v0.detach().to(torch.float64)
    rows = [b for b in spec._tensor_bounds()[wn.v] if b.dim == wn.dim]
    vr = _param_map(tuple(v0.shape), rows, spec._sol, of) if rows else None
    vr = v0 if vr is None else vr.apply(v0)
    dims = [d for d in range(v0.dim()) if d != wn.dim]
    ratio = (torch.linalg.vector_norm(out[wn.v].apply(v0), dim=dims) / torch.linalg.vector_norm(vr, dim=dims))
    g_shape = tuple(_shape(ref, wn.g))
    axes = list(g_map.axes) if g_map is not None else [None] * len(g_shape)
    rescale = AxisMap(torch.arange(ratio.numel()), ratio.cpu())
    axes[wn.dim] = rescale if axes[wn.dim] is None else axes[wn.dim].then(rescale)
    return ParamMap(tuple(axes))


def _touched(rep, sol, of):
    return isinstance(rep, Rep) and any(k == "axis" and of(a) is not None
                                        for k, a, _, _ in pieces(rep, sol.axis_atoms, sol.atoms))


def _shape(model, fqn):
    from ._spec import _get_tensor

    return _get_tensor(model, fqn).shape


def _warn_dropped(spec, g, g_perm, lossy, model_b, model_a):
    units = sum(u for _, u, _, _ in lossy)
    flips = sum(f for _, _, f, _ in lossy)
    worst = max(w for _, _, _, w in lossy)
    sites = ", ".join(repr(n) for n, *_ in lossy[:4]) + (", ..." if len(lossy) > 4 else "")
    msg = (f"permutations_only=True drops the scalings of {units} unit(s) at {len(lossy)} site(s) ({sites}; "
           f"{flips} sign flip(s), largest |log|s|| = {worst:.3g}): the permuted model keeps model_b's function "
           "but is not the aligned one")
    if model_b is not None:
        from ._align import weight_distance

        full, perm = spec.act(g, model_b), spec.act(g_perm, model_b)
        msg += f"; it lies at weight distance {weight_distance(full, perm):.4g} from it"
        if model_a is not None:
            msg += (f", at {weight_distance(model_a, perm):.4g} from model_a where the full element reaches "
                    f"{weight_distance(model_a, full):.4g}")
    warnings.warn(msg, DroppedScalingsWarning, stacklevel=3)


def apply_to_state_dict(spec, g: SymmetryElement, state_dict: Mapping, *, permutations_only: bool = False,
                        tol: float = 1e-9) -> dict:
    """A new state dict: ``state_dict`` moved by ``g`` with no model (equal to
    ``spec.act(g, model).state_dict()`` for a model holding ``state_dict``).

    Keys ``g`` does not move keep their tensors (the same objects); moved ones are computed in
    float64 and returned in their own dtype and device. ``permutations_only`` as in
    :func:`export_alignment` (warning included).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError("Argument 'state_dict' must be a mapping of names to tensors, not "
                        f"{type(state_dict).__name__}.")
    maps = export_alignment(spec, g, permutations_only=permutations_only, state_dict=state_dict, tol=tol)
    missing = [k for k in maps if k not in state_dict]
    if missing:
        raise ValueError(f"Argument 'state_dict' has no entry {missing[0]!r} (a tensor the element moves); "
                         "strip wrapper prefixes such as 'module.' first.")
    out = dict(state_dict)
    for k, m in maps.items():
        t = state_dict[k]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            what = f"a tensor of dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"Argument 'state_dict': entry {k!r} must be a floating-point tensor, not {what}.")
        try:
            out[k] = m.apply(t)
        except ValueError as e:
            raise ValueError(f"Argument 'state_dict': entry {k!r} of shape {tuple(t.shape)}: {e}.") from None
    return out
