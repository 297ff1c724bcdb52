"""The tracer: walks the exported ATen graph and applies the layer rules of :mod:`.rules`.

Every node gets a *value*:

* ``None``: not a tensor (sizes, flags);
* :data:`FIXED`: a tensor no group element acts on (inputs, constants, masks, positions);
* :class:`Param`: a parameter or buffer (``fqn``), possibly seen through views (``dims``
  maps the node's dimensions to the tensor's);
* :class:`Derived`: a tensor computed from parameters by something other than a rule's own
  reading (a parametrization, a pruning mask, weight norm): refused where a rule meets it;
* :class:`Rep`: a hidden tensor. ``dim`` carries the units, cut into segments (:class:`Seg`):
  ranges of an :class:`Axis` (the output space of one producer) seen through the chain of
  activations applied since, zero channels (padding) or fixed channels. ``repeat`` > 1 after
  a flatten (each unit spans ``repeat`` consecutive entries). A head-split tensor
  (``view(B, T, H, d)``) has ``heads = H`` with the head index at ``dim`` and the inner index
  at ``inner``; ``scalar`` marks a tensor that carries only the per-head scalar of its
  class's element (after rotary embeddings); ``merged`` > 1 when the heads share their
  dimension with the batch (``nn.MultiheadAttention``'s ``(T, B * H, d)`` view, head innermost);
* :class:`Square`: ``x ** 2`` of a hidden tensor, kept lazy so that ``mean(x ** 2)`` over the
  units (RMS norm) is recognised as a sum of squares; any other consumer materialises it
  as the activation ``x ** 2``.

Rules record *bindings* (which parameter dimension a representation acts on, and how),
*constraints* (a group kind on a representation's class), *ties* (two representations carry
the same element, its inverse transpose, or share their permutation) and notes;
:mod:`._solve` turns them into sites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx

from ._activations import activation_group, estimate_group, function_activation, is_elementwise
from ._capture import LEAF_OP, Captured, SymmetrySpecError

__all__ = ["FIXED", "Param", "Masked", "WeightNormed", "Derived", "Rep", "Seg", "Axis", "Constraint", "Bound", "Tie", "Trace", "trace_graph"]

FIXED = "fixed"


@dataclass(frozen=True)
class Param:
    fqn: str
    dims: tuple  # node dim -> parameter dim (None: broadcast / new)


@dataclass(frozen=True)
class Masked:
    """``param * mask`` with a mask buffer of the same shape (``torch.nn.utils.prune``): handled
    exactly for monomial elements, which move the mask by their permutations."""

    param: str
    mask: str


@dataclass(frozen=True)
class WeightNormed:
    """``g * v / ||v||`` (``aten._weight_norm``, norms over every dimension but ``dim``): handled
    exactly with rows moved by monomial elements (v permuted, g scaled) and columns by any
    element, g then rescaled by the change of v's row norms (:meth:`SymmetrySpec.transformed_tensors`)."""

    v: str
    g: str
    dim: int


@dataclass(frozen=True)
class Derived:
    fqns: frozenset
    op: str
    module: str


@dataclass
class Axis:
    id: int
    size: int
    module: str
    op: str
    cuts: set = field(default_factory=set)


@dataclass(frozen=True)
class Seg:
    kind: str  # "axis", "zero", "fixed"
    length: int
    axis: int = -1
    start: int = 0
    chain: tuple = ()


@dataclass(frozen=True)
class Rep:
    dim: int
    segs: tuple
    repeat: int = 1
    heads: int | None = None
    inner: int | None = None
    scalar: bool = False
    merged: int = 1  # the head dimension holds merged * heads entries, head innermost (MHA's B*H)

    @property
    def units(self) -> int:
        return sum(s.length for s in self.segs)


@dataclass(frozen=True)
class Square:
    rep: Rep
    node: object


@dataclass(frozen=True)
class Constraint:
    """A group kind a representation's class must lie in (resolved per class by the solver).

    kind: "monomial" (``scalings``: an engine group or None for R*, ``perm``: "free"/"fixed"),
    "scaled_perm" (permutations times one global scalar in ``scalings``: a layer norm's input),
    "orthogonal", "scalar" (``scalings``), "complex" (a complex scalar per pair of units in
    ``layout``: the commutant of rotary embeddings), "block" (``heads``; ``inner``: a Constraint for
    each block, ``perm``: "free"/"fixed" for the head permutation).
    """

    kind: str
    reason: str
    scalings: object = None
    perm: str = "free"
    heads: int | None = None
    inner: object = None
    layout: str | None = None


@dataclass(frozen=True)
class Bound:
    """A parameter dimension read by a rule: ``variance`` "co" (t -> g t along ``dim``),
    "contra" (t -> t g^{-1}, i.e. g^{-T} along ``dim``), "diag" (a diagonal conjugated:
    ``rep`` out, ``other`` in), or a rule's custom kind ("bn_var", "bn_gamma", "grouped")."""

    param: str
    dim: int
    variance: str
    rep: object
    other: object = None
    module: str = ""
    op: str = ""
    part: tuple | None = None  # (j, G): only rows j*n/G:(j+1)*n/G of dimension 0 (grouped convolution)


@dataclass(frozen=True)
class Tie:
    a: object
    b: object
    relation: str  # "same", "dual", "perm" (shared permutation), "heads" (a's head permutation = b's units')
    reason: str = ""


def _val_shape(node):
    v = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(v, torch.Tensor):
        return tuple(int(s) for s in v.shape)
    return None


def _flatten(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flatten(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten(o)
    else:
        yield obj


def op_name(node) -> str:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return f"aten.{t.overloadpacket.__name__}" if t.namespace == "aten" else str(t)
    return getattr(t, "__name__", str(t))


class Trace:
    """The walk over the graph (the context the rules talk to) and what it records."""

    def __init__(self, cap: Captured, unknown: str = "error", timeout: float | None = None):
        from . import rules

        self.cap = cap
        self.unknown = unknown
        self.timeout = timeout
        self.rules = rules.RULES
        self.axes: list[Axis] = []
        self.bindings: list[Bound] = []  # the first binding of every (tensor, dim): the action
        self.uses: list[Bound] = []  # later uses of a bound (tensor, dim): tied to the first
        self.constraints: list = []  # (Rep, Constraint)
        self.ties: list[Tie] = []
        self.activations: list = []  # (node name, ActivationRef or label, group)
        self.notes: list = []
        self.refusals: list = []
        self.env: dict = {}
        self._bound: dict = {}  # (param, dim) -> (variance, rep)
        self._squares: dict = {}
        self._masks: dict = {}  # parameter -> pruning-mask buffer (see Masked)
        self._wnorm: dict = {}  # direction parameter v -> (magnitude parameter g, dim) (see WeightNormed)
        self._raw: set = set()  # parameters read directly (not through a weight norm)
        self.derived: list = []  # (parameter names, where): tensors computed from parameters
        self.weight_norms: list = []  # WeightNormed whose v has columns moved: g is rescaled by the action
        self.side: dict = {}  # node -> Rep of hidden units along a non-unit dimension (token mixing)
        self.crossed: set = set()  # ids of the axes of such units (their tensors carry two sites' units)
        self.node = None
        for node in cap.graph.nodes:
            self.node = node
            self.env[node] = self._visit(node)
        self._check_derived()

    def _check_derived(self):
        """A parameter the action moves must not also reach the output through an op no rule
        reads it by (weight norm, a pruning mask, a parametrization, a recurrent layer)."""
        bound = {b.param for b in self.bindings}
        for fqns, where in self.derived:
            hit = sorted(fqns & bound)
            if hit:
                raise SymmetrySpecError(
                    f"cannot follow {where}: it computes on parameter {hit[0]!r}, which the action moves; the result "
                    "would not transform as required (remove the parametrization or tie first)")

    # The context API of the rules -------------------------------------------------------
    def value(self, arg):
        """The raw value of an argument (Square kept lazy)."""
        if isinstance(arg, fx.Node):
            return self.env[arg]
        if isinstance(arg, (list, tuple)):
            return [self.value(a) for a in arg]
        return None

    def rep(self, arg):
        """The value of an argument, with lazy squares materialised as the activation x**2."""
        v = self.value(arg)
        if isinstance(v, Square):
            return self._materialise(v)
        if isinstance(v, list):
            return [self._materialise(x) if isinstance(x, Square) else x for x in v]
        return v

    def shape(self, arg):
        return _val_shape(arg)

    def dtype(self, arg):
        v = arg.meta.get("val") if isinstance(arg, fx.Node) else None
        return v.dtype if isinstance(v, torch.Tensor) else None

    def module(self, node=None) -> str:
        return self.cap.module_of(node if node is not None else self.node)

    def where(self, node=None) -> str:
        node = node if node is not None else self.node
        m = self.module(node)
        return f"{op_name(node)} in module {m!r}" if m else f"{op_name(node)} (node {node.name!r})"

    def new_axis(self, size: int, dim: int, node=None) -> Rep:
        node = node if node is not None else self.node
        ax = Axis(len(self.axes), int(size), self.module(node) or node.name, op_name(node))
        self.axes.append(ax)
        return Rep(dim, (Seg("axis", ax.size, ax.id, 0),))

    def bind(self, param: str, dim: int, rep, variance: str, other=None, part=None):
        """Record that ``param``'s dimension ``dim`` transforms with ``rep``'s element.

        A tensor dimension bound twice (tied weights, a module called twice) ties the two
        representations: "same" for equal variance, "dual" for co against contra.
        """
        node = self.node
        if param in self._wnorm and isinstance(rep, Rep):
            g, wdim = self._wnorm[param]
            if variance not in ("co", "contra"):
                return self.refuse(node, f"weight norm on a {variance} parameter", "remove the weight norm first")
            if dim == wdim:
                # W_i = g_i v_i / |v_i|: P D on the rows is v's rows permuted and g scaled; also
                # when the norm's axis is contravariant (ConvTranspose, dim=0: its input channels),
                # (P D)^-T = P D^-1: v permuted only (scaling v by 1/d_i would lose sign(d_i))
                self.monomial(rep, f"weight norm of {param!r} (rows)")
                self._bind_plain(param, dim, rep, "perm", None, part)
                self._bind_plain(g, wdim, rep, variance, None, part)
            else:
                # columns: v -> v B^{-1} changes the row norms, so the action rescales g by
                # |v'_i| / |v_i| (docs/transformer_symmetries.md, section 12: parameter-dependent,
                # but a group action since W = diag(g / |v|) v moves as W B^{-1})
                wn = WeightNormed(param, g, wdim)
                if wn not in self.weight_norms:
                    self.weight_norms.append(wn)
                self._bind_plain(param, dim, rep, variance, other, part)
            return
        self._bind_plain(param, dim, rep, variance, other, part)

    def _bind_plain(self, param, dim, rep, variance, other=None, part=None):
        node = self.node
        key = (param, dim, part)
        if key in self._bound:
            var0, rep0, other0 = self._bound[key]
            self.uses.append(Bound(param, dim, variance, rep, other, self.module(node), op_name(node), part))
            if {var0, variance} <= {"co", "contra"}:
                self.tie(rep0, rep, "same" if var0 == variance else "dual", f"parameter {param!r} is used twice")
                return
            if var0 == variance:
                self.tie(rep0, rep, "same", f"parameter {param!r} is used twice")
                if other is not None or other0 is not None:
                    self.tie(other0, other, "same", f"parameter {param!r} is used twice")
                return
            self.refuse(node, f"parameter {param!r} is read by two different kinds of layer", "use separate parameters")
            return
        self._bound[key] = (variance, rep, other)
        self.bindings.append(Bound(param, dim, variance, rep, other, self.module(node), op_name(node), part))
        if param in self._masks and isinstance(rep, Rep):
            # a pruning mask moves with the permutations; only monomial elements keep it a mask
            if variance not in ("co", "contra"):
                self.refuse(node, f"a pruning mask on a {variance} parameter", "torch.nn.utils.prune.remove first")
            self.monomial(rep, f"pruning mask of {param!r}")
            self.bind(self._masks[param], dim, rep, "perm", part=part)

    def constrain(self, rep, constraint: Constraint):
        if isinstance(rep, Rep):
            self.constraints.append((rep, constraint))

    def monomial(self, rep, reason, scalings=None, perm="free"):
        self.constrain(rep, Constraint("monomial", reason, scalings, perm))

    def permutations_only(self, rep, reason):
        from ._activations import trivial_scalings

        self.constrain(rep, Constraint("monomial", reason, trivial_scalings(reason)))

    def freeze(self, rep, reason):
        from ._activations import trivial_scalings

        self.constrain(rep, Constraint("monomial", reason, trivial_scalings(reason), "fixed"))

    def tie(self, a, b, relation: str, reason: str = ""):
        if isinstance(a, Rep) or isinstance(b, Rep):
            self.ties.append(Tie(a, b, relation, reason))

    def note(self, text: str):
        if text not in self.notes:
            self.notes.append(text)

    def refuse(self, node, reason: str, fix: str = ""):
        """Refuse the operation (unknown="error") or freeze the hidden axes entering it."""
        node = node if node is not None else self.node
        msg = f"cannot follow {self.where(node)}: {reason}" + (f" ({fix})" if fix else "")
        if self.unknown == "error":
            raise SymmetrySpecError(msg)
        self.note(f"froze the axes entering {self.where(node)}: {reason}")
        for r in self.reps_in(node):
            self.freeze(r, "unsupported op")
        return FIXED

    def reps_in(self, node):
        return [v for v in (self.rep(a) if isinstance(a, fx.Node) else None for a in _flatten((node.args, node.kwargs)))
                if isinstance(v, Rep)]

    def param(self, arg):
        """The :class:`Param` an argument is, or None; a :class:`Derived` weight is refused."""
        v = self.value(arg)
        if isinstance(v, Param):
            if any(v.fqn in (wv, wg) for wv, (wg, _) in self._wnorm.items()):
                self._refuse_mixed_weight_norm(v.fqn)
            self._raw.add(v.fqn)
            return v
        if isinstance(v, Masked):
            self._masks[v.param] = v.mask
            return Param(v.param, tuple(range(len(self.shape(arg)))))
        if isinstance(v, WeightNormed):
            if v.v in self._raw or v.g in self._raw:
                self._refuse_mixed_weight_norm(v.v if v.v in self._raw else v.g)
            self._wnorm[v.v] = (v.g, v.dim)
            return Param(v.v, tuple(range(len(self.shape(arg)))))
        if isinstance(v, Derived):
            self.refuse_derived(v)
        return None

    def _refuse_mixed_weight_norm(self, fqn):
        # the action moves v's rows as a weight norm's (permuted, g scaled): a direct read of v
        # (or of g) would see the wrong transformation; always refused (freezing cannot help)
        raise SymmetrySpecError(
            f"cannot follow {self.where()}: parameter {fqn!r} is read both through a weight norm and directly; "
            "the action cannot transform it for both uses (remove the weight norm with "
            "torch.nn.utils.remove_weight_norm, or use separate parameters)")

    def refuse_derived(self, v: Derived):
        names = ", ".join(sorted(v.fqns))
        raise SymmetrySpecError(
            f"cannot follow {self.where()}: its weight is computed from {names} by {v.op} in module {v.module!r} "
            "(a parametrization, weight norm, spectral norm or pruning mask?); the action would not transform the "
            "computed weight as required: remove it first (torch.nn.utils.parametrize.remove_parametrizations, "
            "torch.nn.utils.prune.remove, torch.nn.utils.remove_weight_norm)")

    def activation(self, rep, ref, group=None, fn=None):
        """Apply an elementwise activation (an :class:`ActivationRef` or a label with ``group``)."""
        if group is None:
            try:
                group = activation_group(ref, self.timeout)
            except Exception as e:  # noqa: BLE001 - any engine failure: fall back to the numeric estimate
                if fn is None:
                    raise SymmetrySpecError(f"the engine failed on activation {ref} at {self.where()}: {e}") from None
                group = estimate_group(fn, str(ref))
                self.note(f"the engine failed on {ref} ({e}); its group was estimated numerically: "
                          f"{group.one_dimensional().describe()}")
        self.activations.append((self.node.name, ref, group))
        if not isinstance(rep, Rep):
            return rep
        self.monomial(rep, group.label or str(ref), group)
        segs = tuple(replace(s, chain=s.chain + (group,)) if s.kind == "axis" else Seg("fixed", s.length) for s in rep.segs)
        return replace(rep, segs=segs)

    def aligned_dim(self, node, arg, d):
        """Dimension ``d`` of argument ``arg`` in ``node``'s (broadcast) output."""
        return len(self.shape(node)) - len(self.shape(arg)) + d

    # The walk -----------------------------------------------------------------------------
    def _materialise(self, sq: Square):
        if sq.node not in self._squares:
            from ._activations import ActivationRef

            saved, self.node = self.node, sq.node
            try:
                self._squares[sq.node] = self.activation(sq.rep, ActivationRef("polynomial", (("degree", 2.0),), "pow"))
            finally:
                self.node = saved
        return self._squares[sq.node]

    def _visit(self, node):
        if node.op == "placeholder":
            fqn = self.cap.params.get(node.name)
            if fqn is not None:
                shape = self.shape(node) or ()
                return Param(fqn, tuple(range(len(shape))))
            return FIXED if self.shape(node) is not None else None
        if node.op == "get_attr":
            return FIXED
        if node.op == "output":
            for r in self.reps_in(node):
                self.freeze(r, "network output")
            return None
        return self._call(node)

    def _call(self, node):
        t = node.target
        vals = list(_flatten([self.value(a) for a in _flatten((node.args, node.kwargs)) if isinstance(a, fx.Node)]))
        has_rep = any(isinstance(v, (Rep, Square)) for v in vals)
        params = [v for v in vals if isinstance(v, (Param, Derived))]
        rule = self._rule(t)
        if t is LEAF_OP:
            return self._leaf(node, has_rep)
        if not has_rep:
            masked = self._masked(node, vals) or self._weight_normed(node, vals)
            if masked is not None:
                return masked
            if rule is not None and params and (getattr(rule, "param_view", False) or getattr(rule, "reads_params", False)):
                return self._constant(rule(self, node))
            # buffers computed on (rotary caches, masks) are constants; parameters computed on
            # are Derived: refused where a rule meets them, and wherever they are also moved
            params = [v for v in params if not (isinstance(v, Param) and self.cap.is_buffer.get(v.fqn))]
            if params:
                fqns = frozenset(f for v in params for f in ((v.fqn,) if isinstance(v, Param) else v.fqns))
                self.derived.append((fqns, self.where(node)))
                if self.shape(node) is None and not isinstance(node.meta.get("val"), (list, tuple)):
                    return None
                return Derived(fqns, op_name(node), self.module(node))
            if self.shape(node) is None and not isinstance(node.meta.get("val"), (list, tuple)):
                return None
            if isinstance(node.meta.get("val"), (list, tuple)):
                return [FIXED] * len(node.meta["val"])
            return FIXED
        if rule is not None:
            return self._constant(rule(self, node))
        ref = function_activation(t, node.args, node.kwargs)
        if ref is not None:
            x = self.rep(node.args[0])
            if isinstance(x, Rep) and len(self.reps_in(node)) == 1:
                return self.activation(x, ref)
        estimated = self._elementwise(node)
        if estimated is not None:
            return estimated
        return self.refuse(node, "the symmetry analysis has no rule for this operation",
                           "add a rule in torch_bridge/symmetry/rules/, or pass unknown='freeze'")

    def _weight_normed(self, node, vals):
        if node.target is not torch.ops.aten._weight_norm.default or len(vals) != 2:
            return None
        v, g = (self.value(a) for a in node.args[:2])
        dim = node.args[2] if len(node.args) > 2 else 0
        if not (isinstance(v, Param) and isinstance(g, Param)) or dim != 0 or \
                v.dims != tuple(range(len(v.dims))) or g.dims != tuple(range(len(g.dims))):
            return None
        return WeightNormed(v.fqn, g.fqn, dim)

    def _masked(self, node, vals):
        if node.target is not torch.ops.aten.mul.Tensor or len(vals) != 2 or not all(isinstance(v, Param) for v in vals):
            return None
        a, b = vals
        if self.cap.is_buffer.get(a.fqn) == self.cap.is_buffer.get(b.fqn):
            return None
        p, m = (a, b) if not self.cap.is_buffer.get(a.fqn) else (b, a)
        sa, sb = (self.shape(x) for x in node.args[:2])
        if sa != sb or p.dims != tuple(range(len(sa))) or m.dims != p.dims:
            return None
        return Masked(p.fqn, m.fqn)

    def _constant(self, v):
        """Buffers computed on (a causal-mask buffer sliced, rotary caches) are constants."""
        if isinstance(v, Derived) and all(self.cap.is_buffer.get(f) for f in v.fqns):
            return FIXED
        if isinstance(v, list):
            return [self._constant(x) for x in v]
        return v

    def _rule(self, t):
        r = self.rules.get(t)
        if r is None and isinstance(t, torch._ops.OpOverload):
            r = self.rules.get(t.overloadpacket)
        return r

    def _leaf(self, node, has_rep):
        from ._activations import module_activation

        name, m = self.cap.leaves[node.args[1]]
        x = self.rep(node.args[0])
        ref = module_activation(m)
        if ref is not None:
            return self.activation(x, ref, fn=m) if has_rep else FIXED
        label = type(m).__name__
        group = estimate_group(m, label)
        self.note(f"{name} ({label}) is not a catalogue activation; its group was estimated numerically: "
                  f"{group.one_dimensional().describe()}")
        return self.activation(x, label, group=group) if has_rep else FIXED

    def _elementwise(self, node):
        """An unknown op of one hidden tensor (other arguments constant) that acts entrywise:
        an activation with a numerically estimated group."""
        if not node.args or not isinstance(node.args[0], fx.Node):
            return None
        x = self.rep(node.args[0])
        if not isinstance(x, Rep) or self.shape(node) != self.shape(node.args[0]):
            return None
        if any(isinstance(a, fx.Node) for a in _flatten((node.args[1:], node.kwargs))):
            return None
        t, rest, kw = node.target, node.args[1:], dict(node.kwargs)
        if not isinstance(t, torch._ops.OpOverload) or t.namespace != "aten":
            return None
        dt = self.dtype(node.args[0])
        if dt is None or not dt.is_floating_point:
            return None

        def fn(z):
            return t(z, *rest, **kw)

        if not is_elementwise(fn, torch.zeros(self.shape(node.args[0]), dtype=dt)):
            return None

        class _Fn(torch.nn.Module):
            def forward(self, z):
                return fn(z)

        label = op_name(node)
        group = estimate_group(_Fn(), label)
        self.note(f"{label} in module {self.module(node)!r} is not a catalogue activation; its group was estimated "
                  f"numerically: {group.one_dimensional().describe()}")
        return self.activation(x, label, group=group)


def trace_graph(cap: Captured, unknown="error", timeout=None) -> Trace:
    if unknown not in ("error", "freeze"):
        raise ValueError(f"Argument 'unknown' must be 'error' or 'freeze', not {unknown!r}.")
    return Trace(cap, unknown, timeout)


def sub_segs(segs, start, stop):
    out, pos = [], 0
    for s in segs:
        a, b = max(start, pos), min(stop, pos + s.length)
        if a < b:
            if s.kind == "axis":
                out.append(replace(s, length=b - a, start=s.start + a - pos))
            else:
                out.append(replace(s, length=b - a))
        pos += s.length
    return tuple(out)


def prod(xs):
    return math.prod(xs)
