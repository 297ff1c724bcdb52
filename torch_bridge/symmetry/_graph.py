"""Tracing a network with torch.fx and finding the hidden axes its symmetries act on.

The walk gives every tensor of the graph a *representation* of its symmetry axis:

* ``FIXED``: a tensor no group element acts on (inputs, constants);
* ``None``: not a tensor (sizes, flags);
* a :class:`Rep`: the tensor dimension ``dim`` that carries channels, cut into segments.
  A segment is a range of an :class:`Axis` (the output units of one Linear/Conv/BatchNorm
  module) seen through the chain of activations applied since (``chain``), or a run of
  channels known to be zero (zero padding) or fixed. ``repeat`` > 1 after a flatten: each
  unit then spans ``repeat`` consecutive entries.

Along the way it records constraints: residual additions *tie* two representations (the same
group element on both, appendix E.9.2); batch norm ties only the permutation of its input and
output (its extra per-channel scalings, eq. E.47); activations and max-pooling restrict the
scalings (an axis feeding several consumers gets the intersection, Proposition 3.4); the
network output and unsupported consumers *freeze* an axis. ``_solve.solve`` then refines every
axis into *atoms* (ranges on which the constraints are uniform) and joins atoms into
permutation classes and scaling classes (union-find).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..models import CatalogueActivation
from ._activations import (PASS_THROUGH_MODULES, activation_group, estimate_group, function_activation, is_elementwise,
                           module_activation)

FIXED = "fixed"


class SymmetrySpecError(ValueError):
    """The network cannot be analysed (an operation the tracer cannot follow, a bad argument)."""


@dataclass
class Axis:
    id: int
    size: int
    module: str  # qualified name of the producing module
    kind: str  # "linear", "conv", "batchnorm" or "layernorm"
    cuts: set = field(default_factory=set)


@dataclass(frozen=True)
class Seg:
    kind: str  # "axis", "zero", "fixed"
    length: int
    axis: int = -1
    start: int = 0
    chain: tuple = ()  # groups of the activations applied since the axis


@dataclass(frozen=True)
class Rep:
    dim: int
    segs: tuple
    repeat: int = 1

    @property
    def units(self) -> int:
        return sum(s.length for s in self.segs)


@dataclass
class Call:
    """One call of a Linear/Conv/BatchNorm module in the graph."""

    module: str
    kind: str
    node: str
    in_rep: object  # Rep, FIXED
    out_axis: int


# Groups used as structural constraints (not activation tables: these come from the
# operations themselves: max-pooling commutes with positive scalings, constants with none).
def _structural(positive, negative=None, label=""):
    from groupcalc import Scalings
    from groupcalc._groups import IntertwinerGroup

    return IntertwinerGroup.from_scalings(Scalings(positive, None, negative), label=label)


def _pool_group():
    return _structural("all", None, "max-pooling")


def _trivial_group(label="fixed scale"):
    return _structural("trivial", None, label)


def _sign_group(label):
    return _structural("trivial", -1, label)


def transparent(group) -> bool:
    """Whether phi is the identity on S (then a tensor after the activation carries the same
    element as before it)."""
    return _transparent_cached(group)


_TRANSPARENT: dict = {}


def _transparent_cached(group) -> bool:
    key = repr(group)
    if key not in _TRANSPARENT:
        s = group.one_dimensional()
        rng = np.random.default_rng(0)
        vals = [1.0]
        if s.positive != "trivial":
            from groupcalc._groups import IntertwinerGroup
            vals += list(IntertwinerGroup.from_scalings(type(s)(s.positive, s.generator, None, s.phi)).sample_scalings(6, rng))
        if s.negative is not None:
            vals += [float(s.negative) * v for v in vals]
        v = np.array(vals, dtype=float)
        with np.errstate(all="ignore"):
            out = group.phi_scalar(v)
        _TRANSPARENT[key] = bool(np.allclose(out, v, rtol=1e-9, atol=1e-12))
    return _TRANSPARENT[key]


class _Tracer(fx.Tracer):
    """Standard leaves plus :class:`CatalogueActivation` and any parameter-free user module
    that acts entrywise (each is then one activation, with a numerically estimated group),
    instead of the primitive operations inside it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        # decided before tracing: calling a module while fx traces would be recorded
        self.elementwise = set()
        for _, m in model.named_modules():
            if isinstance(m, CatalogueActivation) or m.__module__.startswith("torch.nn"):
                continue
            if any(True for _ in m.parameters()) or any(True for _ in m.buffers()) or any(True for _ in m.children()):
                continue
            if is_elementwise(m, torch.zeros(3, 5, 4, dtype=torch.float64)):
                self.elementwise.add(id(m))

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, CatalogueActivation) or id(m) in self.elementwise:
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example_inputs: tuple) -> fx.GraphModule:
    """A GraphModule of ``model`` with tensor metadata (shapes) on every node."""
    try:
        graph = _Tracer(model).trace(model)
    except Exception as e:  # noqa: BLE001 - report any tracing failure in one line
        raise SymmetrySpecError(f"torch.fx cannot trace the model ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                "data-dependent control flow must be removed or wrapped in a leaf module") from None
    gm = fx.GraphModule(model, graph)
    modes = {name: m.training for name, m in model.named_modules()}
    model.eval()  # no running-statistics update while propagating shapes
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        for name, m in model.named_modules():
            m.training = modes[name]
    return gm


def _meta(node):
    return node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None


def _shape(node):
    m = _meta(node)
    return tuple(m.shape) if m is not None and hasattr(m, "shape") else None


def _flatten_args(obj):
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flatten_args(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten_args(o)
    else:
        yield obj


def _describe(node) -> str:
    t = node.target
    name = t if isinstance(t, str) else getattr(t, "__name__", repr(t))
    mod = "" if isinstance(t, str) else (getattr(t, "__module__", None) or "torch")
    full = f"{mod}.{name}" if node.op == "call_function" else name
    return f"{node.op} {full!r} (node {node.name!r})"


_ADD = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub, "add", "add_", "sub", "sub_", "__add__", "__radd__"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
_PASS = {operator.neg, torch.neg, "neg", "contiguous", "clone", torch.clone, "detach", "float", "double", "half",
         "to", "type_as", F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.positive}
_MAXPOOL = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d}
_AVGPOOL = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
            F.adaptive_avg_pool3d, F.interpolate, F.upsample}
_SOFTMAX = {F.softmax, torch.softmax, F.log_softmax, torch.log_softmax, F.softmin, "softmax", "log_softmax"}
_REDUCE_LINEAR = {torch.mean, torch.sum, "mean", "sum"}
_REDUCE_MAX = {torch.amax, "amax"}
_NON_TENSOR = {"size", "dim", "numel", getattr, len}


class Analysis:
    """The walk over the graph and the constraints it records."""

    def __init__(self, model: nn.Module, example_inputs: tuple, unknown: str = "error", timeout: float = 5.0):
        if unknown not in ("error", "freeze"):
            raise ValueError(f"Argument 'unknown' must be 'error' or 'freeze', not {unknown!r}.")
        self.model = model
        self.unknown = unknown
        self.timeout = timeout
        self.gm = trace(model, example_inputs)
        self.modules = dict(self.gm.named_modules())
        self.axes: list[Axis] = []
        self.ties: list = []  # (Rep|FIXED, Rep|FIXED, "full" | "perm")
        self.constraints: list = []  # (Rep, group, freeze_perm: bool)
        self.calls: list[Call] = []
        self.module_axis: dict = {}
        self.activations: list = []  # (node name, ActivationRef or label, group)
        self.notes: list = []
        self.env: dict = {}
        for node in self.gm.graph.nodes:
            self.env[node] = self._visit(node)

    # Helpers --------------------------------------------------------------------------
    def _val(self, a):
        if isinstance(a, fx.Node):
            return self.env[a]
        return None

    def _new_axis(self, size, module, kind) -> int:
        ax = Axis(len(self.axes), int(size), module, kind)
        self.axes.append(ax)
        return ax.id

    def _axis_rep(self, axis, dim) -> Rep:
        return Rep(dim, (Seg("axis", self.axes[axis].size, axis, 0),))

    def _constrain(self, rep, group, freeze_perm=False):
        if isinstance(rep, Rep):
            self.constraints.append((rep, group, freeze_perm))

    def _freeze(self, rep, label="frozen"):
        self._constrain(rep, _trivial_group(label), True)

    def _tie(self, a, b, mode="full"):
        if isinstance(a, Rep) or isinstance(b, Rep):
            self.ties.append((a, b, mode))

    def _unsupported(self, node, reason, reps):
        if self.unknown == "error":
            raise SymmetrySpecError(f"cannot follow {_describe(node)}: {reason}")
        self.notes.append(f"froze the axes entering {_describe(node)}: {reason}")
        for r in reps:
            self._freeze(r, "unsupported op")
        return FIXED

    def _reps_in(self, node):
        return [v for v in (self._val(a) for a in _flatten_args((node.args, node.kwargs))) if isinstance(v, Rep)]

    # The walk ---------------------------------------------------------------------------
    def _visit(self, node):
        if node.op == "placeholder":
            return FIXED if _meta(node) is not None else None
        if node.op == "get_attr":
            return FIXED
        if node.op == "output":
            for r in self._reps_in(node):
                self._freeze(r, "network output")
            return None
        if node.op == "call_module":
            return self._module(node)
        return self._function(node)

    def _module(self, node):
        m = self.modules[node.target]
        x = self._val(node.args[0]) if node.args else None
        shape_in = _shape(node.args[0]) if node.args else None
        name = node.target
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            conv = not isinstance(m, nn.Linear)
            if isinstance(x, Rep):
                if conv and (x.dim != 1 or x.repeat != 1):
                    return self._unsupported(node, "the channel axis is not dimension 1", [x])
                if conv and m.groups != 1:
                    return self._unsupported(node, f"grouped convolution (groups={m.groups}) mixes channels blockwise", [x])
                if not conv and x.dim != len(shape_in) - 1:
                    return self._unsupported(node, "the Linear layer acts on a dimension other than the hidden axis", [x])
            out_dim = 1 if conv else len(_shape(node)) - 1
            return self._producer(node, name, "conv" if conv else "linear", x, out_dim, m.out_channels if conv else m.out_features)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if isinstance(x, Rep) and (x.dim != 1 or x.repeat != 1):
                return self._unsupported(node, "batch norm over a dimension other than the hidden axis", [x])
            out = self._producer(node, name, "batchnorm", x, 1, m.num_features, perm_only=True)
            if isinstance(x, Rep):
                # eq. E.47: the batch norm absorbs any non-zero scaling of its input (a label
                # only: R* constrains nothing)
                self._constrain(x, _structural("all", -1, "batch-norm input"))
                if not (m.track_running_stats and m.running_mean is not None):
                    # batch statistics: (s x - s m) / sqrt(s^2 v + eps) is exact only for s = +-1
                    self._constrain(x, _sign_group("batch norm without running statistics"))
                if not m.affine:
                    self._constrain(x, _structural("all", None, "batch norm without affine"))
            if not m.affine:
                self._constrain(out, _trivial_group("batch norm without affine"))
            return out
        if isinstance(m, nn.LayerNorm):
            nd = len(shape_in)
            if len(m.normalized_shape) != 1 or (isinstance(x, Rep) and (x.dim != nd - 1 or x.repeat != 1)):
                return self._unsupported(node, "layer norm over more than the hidden axis", self._reps_in(node))
            out = self._producer(node, name, "layernorm", x, nd - 1, m.normalized_shape[0], perm_only=True)
            # LN(D x) != D LN(x) unless D is a multiple of the identity: permutations only
            self._constrain(x, _trivial_group("layer-norm input"))
            if not m.elementwise_affine:
                self._constrain(out, _trivial_group("layer norm without affine"))
            return out
        if isinstance(m, PASS_THROUGH_MODULES):
            return x
        ref = module_activation(m)
        if ref is not None:
            return self._activation(node, x, ref, fn=m)
        if isinstance(m, nn.Flatten):
            return self._flatten(node, x, m.start_dim, m.end_dim)
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
            if getattr(m, "return_indices", False):
                return self._unsupported(node, "max-pooling with return_indices", self._reps_in(node))
            return self._pool(node, x, maximum=True)
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                          nn.AdaptiveAvgPool3d, nn.Upsample)):
            return self._pool(node, x, maximum=False)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            self._constrain(x, _trivial_group("softmax"))
            return x
        if not isinstance(x, Rep):
            if not self._reps_in(node):
                return FIXED if _meta(node) is not None else None
        # An unknown leaf module: an elementwise one gets the numeric estimate.
        if len(node.args) == 1 and not node.kwargs and not any(True for _ in m.parameters()) and shape_in is not None:
            example = torch.zeros(shape_in, dtype=_meta(node.args[0]).dtype)
            if example.is_floating_point() and is_elementwise(m, example):
                label = type(m).__name__
                group = estimate_group(m, label)
                self.notes.append(f"{name} ({label}) is not a catalogue activation; its group was estimated numerically: "
                                  f"{group.one_dimensional().describe()}")
                return self._activation(node, x, label, group=group)
        return self._unsupported(node, f"{type(m).__name__} is not an elementwise activation, a Linear/Conv/BatchNorm "
                                       "layer or a pooling/reshaping the symmetry analysis knows", self._reps_in(node))

    def _producer(self, node, name, kind, x, out_dim, size, perm_only=False):
        if name in self.module_axis:
            first = self.module_axis[name]
            # A module called twice shares its parameters: both calls see the same element.
            self._tie(x, first.in_rep, "full")
            axis = first.out_axis
        else:
            axis = self._new_axis(size, name, kind)
            call = Call(name, kind, node.name, x, axis)
            self.calls.append(call)
            self.module_axis[name] = call
        out = self._axis_rep(axis, out_dim)
        if perm_only:
            self._tie(x, out, "perm")
        return out

    def _activation(self, node, x, ref, group=None, fn=None):
        if group is None:
            try:
                group = activation_group(ref, self.timeout)
            except Exception as e:  # noqa: BLE001 - any engine failure: fall back to the numeric estimate
                if fn is None:
                    raise SymmetrySpecError(f"the engine failed on activation {ref} at node {node.name!r}: {e}") from None
                group = estimate_group(fn, str(ref))
                self.notes.append(f"the engine failed on {ref} ({e}); its group was estimated numerically: "
                                  f"{group.one_dimensional().describe()}")
        self.activations.append((node.name, ref, group))
        if not isinstance(x, Rep):
            return x
        self._constrain(x, group)
        segs = tuple(replace(s, chain=s.chain + (group,)) if s.kind == "axis" else Seg("fixed", s.length) for s in x.segs)
        return replace(x, segs=segs)

    def _pool(self, node, x, maximum):
        if not isinstance(x, Rep):
            return x
        nd = len(_shape(node.args[0]))
        t = node.target
        name = type(self.modules[t]).__name__ if node.op == "call_module" else getattr(t, "__name__", str(t))
        # pooling acts on the last k dimensions (k from the 1d/2d/3d in its name; upsampling
        # and interpolation on everything after the channels)
        k = next((int(c) for c in ("1", "2", "3") if f"{c}d" in name), nd - 2)
        if x.dim >= nd - k or x.dim < 1:
            return self._unsupported(node, "pooling over the hidden axis", [x])
        if x.repeat != 1:
            return self._unsupported(node, "pooling a flattened tensor", [x])
        if maximum:
            self._constrain(x, _pool_group())
        return x

    def _flatten(self, node, x, start, end):
        if not isinstance(x, Rep):
            return x
        shape = _shape(node.args[0])
        nd = len(shape)
        start, end = start % nd, end % nd
        if end <= start:
            return x
        d = x.dim
        if d < start:
            return x
        if d > end:
            return replace(x, dim=d - (end - start))
        if d != start:
            return self._unsupported(node, "flatten puts the hidden axis after other dimensions (interleaved units)", [x])
        r = math.prod(shape[start + 1:end + 1])
        return replace(x, repeat=x.repeat * r)

    def _reshape(self, node, x):
        if not isinstance(x, Rep):
            return x
        si, so = _shape(node.args[0]), _shape(node)
        if si == so:
            return x
        d = x.dim
        pre = math.prod(si[:d])
        acc, j = 1, 0
        while j < len(so) and acc < pre:
            acc *= so[j]
            j += 1
        while j < len(so) and acc == pre and so[j] == 1 and si[d] != 1:
            j += 1
        if acc == pre and j < len(so):
            for m in range(d + 1, len(si) + 1):
                r = math.prod(si[d + 1:m])
                if so[j] == si[d] * r:
                    return Rep(j, x.segs, x.repeat * r)
        return self._unsupported(node, f"reshape {si} -> {so} splits or interleaves the hidden axis", [x])

    def _function(self, node):
        t = node.target
        args, kwargs = node.args, node.kwargs
        vals = [self._val(a) for a in args]
        x = vals[0] if vals else None
        try:
            hashable_t = t in _NON_TENSOR
        except TypeError:
            hashable_t = False
        if hashable_t or (_meta(node) is None and not self._reps_in(node)):
            return None if _meta(node) is None else FIXED
        if not self._reps_in(node):
            return FIXED
        ref = function_activation(t, args, kwargs) if isinstance(x, Rep) else None
        if ref is not None and len([v for v in vals if isinstance(v, Rep)]) == 1:
            return self._activation(node, x, ref)
        if t in _ADD:
            return self._add(node, vals)
        if t in _MUL or t in _DIV:
            return self._mul(node, vals, div=t in _DIV)
        if t in _PASS:
            return x
        if t in (torch.flatten, "flatten"):
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0 if t is torch.flatten else 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            return self._flatten(node, x, start, end)
        if t in ("view", "reshape", torch.reshape):
            return self._reshape(node, x)
        if t in _MAXPOOL:
            return self._pool(node, x, maximum=True)
        if t in _AVGPOOL:
            return self._pool(node, x, maximum=False)
        if t in _SOFTMAX:
            self._constrain(x, _trivial_group("softmax"))
            return x
        if t in (torch.cat, torch.concat):
            return self._cat(node)
        if t is operator.getitem:
            return self._getitem(node, x, args[1])
        if t is F.pad:
            return self._pad(node, x)
        if t in _REDUCE_LINEAR or t in _REDUCE_MAX:
            return self._reduce(node, x, maximum=t in _REDUCE_MAX)
        if t in ("permute", torch.permute, "transpose", torch.transpose):
            return self._permute(node, x)
        estimated = self._elementwise_function(node, x)
        if estimated is not None:
            return estimated
        return self._unsupported(node, "the symmetry analysis does not know this operation", self._reps_in(node))

    def _elementwise_function(self, node, x):
        """An unknown function of one hidden tensor (other arguments constant) that turns out
        to act entrywise: an activation with a numerically estimated group."""
        if not isinstance(x, Rep) or _shape(node) != _shape(node.args[0]):
            return None
        if any(isinstance(a, fx.Node) for a in _flatten_args((node.args[1:], node.kwargs))):
            return None
        t, rest, kw = node.target, node.args[1:], dict(node.kwargs)

        def fn(z):
            return getattr(z, t)(*rest, **kw) if isinstance(t, str) else t(z, *rest, **kw)

        meta = _meta(node.args[0])
        if not meta.dtype.is_floating_point:
            return None
        example = torch.zeros(_shape(node.args[0]), dtype=meta.dtype)
        if not is_elementwise(fn, example):
            return None

        class _Fn(nn.Module):
            def forward(self, z):
                return fn(z)

        label = _describe(node).split(" ")[1].strip("'")
        group = estimate_group(_Fn(), label)
        self.notes.append(f"{label} is not a catalogue activation; its group was estimated numerically: "
                          f"{group.one_dimensional().describe()}")
        return self._activation(node, x, label, group=group)

    def _aligned_dim(self, node, arg_node, rep):
        return len(_shape(node)) - len(_shape(arg_node)) + rep.dim

    def _add(self, node, vals):
        reps = [(a, v) for a, v in zip(node.args, vals) if isinstance(v, Rep)]
        others = [(a, v) for a, v in zip(node.args[:2], vals[:2]) if not isinstance(v, Rep)]
        if len(reps) == 2:
            (na, a), (nb, b) = reps
            if (self._aligned_dim(node, na, a) == self._aligned_dim(node, nb, b) and a.units == b.units
                    and a.repeat == b.repeat):
                self._tie(a, b, "full")
                return replace(a, dim=self._aligned_dim(node, na, a))
            for r in (a, b):
                self._freeze(r, "broadcast addition")
            return FIXED
        (na, a), = reps
        for o_node, o in others:
            if isinstance(o_node, (int, float)):
                if o_node != 0:
                    self._constrain(a, _trivial_group("added constant"))
            elif isinstance(o_node, fx.Node) and _shape(o_node) is not None:
                so = _shape(o_node)
                d = self._aligned_dim(node, na, a)
                k = len(so) - len(_shape(node)) + d
                if 0 <= k < len(so) and so[k] != 1:
                    self._freeze(a, "added per-channel constant")
                    return FIXED
                self._constrain(a, _trivial_group("added constant"))
        return replace(a, dim=self._aligned_dim(node, na, a))

    def _mul(self, node, vals, div):
        reps = [(a, v) for a, v in zip(node.args, vals) if isinstance(v, Rep)]
        if len(reps) == 2:
            (na, a), (nb, b) = reps
            if (self._aligned_dim(node, na, a) == self._aligned_dim(node, nb, b) and a.units == b.units
                    and a.repeat == b.repeat):
                # x * y moves as P (D_x D_y); keeping it simple and sound: tie and fix scales.
                self._tie(a, b, "full")
                self._constrain(a, _trivial_group("product of hidden tensors"))
                return replace(a, dim=self._aligned_dim(node, na, a))
            for r in (a, b):
                self._freeze(r, "broadcast product")
            return FIXED
        (na, a), = reps
        if div and node.args[0] is not na:
            return self._unsupported(node, "division by a hidden tensor", [a])
        other = node.args[1] if node.args[0] is na else node.args[0]
        if isinstance(other, fx.Node) and _shape(other) is not None:
            so = _shape(other)
            d = self._aligned_dim(node, na, a)
            k = len(so) - len(_shape(node)) + d
            if 0 <= k < len(so) and so[k] != 1:
                # a per-channel factor commutes with scalings but pins the permutation
                self._constrain(a, _structural("all", -1, "per-channel factor"), True)
        return replace(a, dim=self._aligned_dim(node, na, a))

    def _cat(self, node):
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        nd = len(_shape(node))
        dim %= nd
        vals = [self._val(t) for t in tensors]
        reps = [v for v in vals if isinstance(v, Rep)]
        if all(isinstance(v, Rep) and v.dim == dim for v in reps) and all(v.repeat == 1 for v in reps):
            segs = []
            for t, v in zip(tensors, vals):
                if isinstance(v, Rep):
                    segs += list(v.segs)
                else:
                    segs.append(Seg("fixed", _shape(t)[dim]))
            return Rep(dim, tuple(segs))
        if any(v.dim == dim for v in reps):
            return self._unsupported(node, "concatenation mixing hidden and flattened axes", reps)
        first = reps[0]
        for v in vals[1:]:
            self._tie(first, v, "full") if isinstance(v, Rep) else self._freeze(first, "concatenated with a fixed tensor")
        if any(not isinstance(v, Rep) for v in vals):
            for r in reps:
                self._freeze(r, "concatenated with a fixed tensor")
        return first

    def _getitem(self, node, x, index):
        if not isinstance(x, Rep):
            return x
        si = _shape(node.args[0])
        if not isinstance(index, tuple):
            index = (index,)
        if any(isinstance(i, fx.Node) for i in index):
            return self._unsupported(node, "indexing with a tensor", [x])
        n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
        expanded = []
        for i in index:
            if i is Ellipsis:
                expanded += [slice(None)] * (len(si) - n_real)
            else:
                expanded.append(i)
        expanded += [slice(None)] * (len(si) - sum(1 for i in expanded if i is not None))
        in_dim, out_dim, result = 0, 0, None
        for i in expanded:
            if i is None:
                out_dim += 1
                continue
            if in_dim == x.dim:
                if isinstance(i, int):
                    return self._unsupported(node, "picking a single channel of a hidden axis", [x])
                start, stop, step = i.indices(si[in_dim])
                if (start, stop, step) == (0, si[in_dim], 1):
                    result = replace(x, dim=out_dim)
                elif step == 1 and x.repeat == 1:
                    result = Rep(out_dim, _sub_segs(x.segs, start, stop))
                else:
                    return self._unsupported(node, "strided slicing of a hidden axis", [x])
            if isinstance(i, slice):
                out_dim += 1
            in_dim += 1
        return result

    def _pad(self, node, x):
        pad = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
        nd = len(_shape(node))
        k = nd - 1 - x.dim  # pair index of the hidden axis in the pad list
        if 2 * k + 1 < len(pad) and (pad[2 * k] or pad[2 * k + 1]):
            if mode != "constant" or (value not in (None, 0, 0.0)) or x.repeat != 1:
                return self._unsupported(node, "non-zero padding of the hidden axis", [x])
            segs = (Seg("zero", pad[2 * k]),) if pad[2 * k] else ()
            segs += x.segs + ((Seg("zero", pad[2 * k + 1]),) if pad[2 * k + 1] else ())
            return Rep(x.dim, segs)
        if mode == "constant" and value not in (None, 0, 0.0):
            self._constrain(x, _trivial_group("constant padding"))
        return x

    def _reduce(self, node, x, maximum):
        args, kwargs = node.args, node.kwargs
        dims = args[1] if len(args) > 1 else kwargs.get("dim", None)
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        nd = len(_shape(node.args[0]))
        if dims is None:
            dims = tuple(range(nd))
        dims = {d % nd for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        if x.dim in dims:
            # summing or maximising over the units: invariant under permutations only
            self._constrain(x, _trivial_group("reduction over the hidden axis"))
            return FIXED
        if maximum:
            self._constrain(x, _pool_group())
        if keep:
            return x
        return replace(x, dim=x.dim - sum(1 for d in dims if d < x.dim))

    def _permute(self, node, x):
        t = node.target
        nd = len(_shape(node))
        if t in ("transpose", torch.transpose):
            a, b = (node.args[1] % nd, node.args[2] % nd)
            d = b if x.dim == a else a if x.dim == b else x.dim
            return replace(x, dim=d)
        order = node.args[1:] if t == "permute" and not isinstance(node.args[1], (tuple, list)) else node.args[1]
        order = [o % nd for o in order]
        return replace(x, dim=order.index(x.dim))


def _sub_segs(segs, start, stop):
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
