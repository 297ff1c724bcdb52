"""Elementwise torch activations (modules, functions, tensor methods) -> catalogue entries.

:func:`module_activation` and :func:`function_activation` return an :class:`ActivationRef`
(catalogue name + parameter values) or ``None`` for things that are not activations.
:func:`activation_group` turns a reference into the engine's group object, and
:func:`estimate_group` runs the numeric black-box search of ``groupcalc._check`` on an
elementwise module the catalogue does not know.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models import CatalogueActivation

__all__ = ["ActivationRef", "module_activation", "function_activation", "activation_group", "estimate_group",
           "is_elementwise", "PASS_THROUGH_MODULES", "structural", "trivial_scalings", "positive_scalings",
           "all_scalings", "sign_scalings", "transparent"]


@dataclass(frozen=True)
class ActivationRef:
    """A catalogue activation with parameter values, as found in a network."""

    name: str
    params: tuple = ()  # sorted (name, float) pairs
    source: str = field(default="", compare=False)

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}({args})" if args else self.name


def _ref(name, source="", **params) -> ActivationRef:
    return ActivationRef(name, tuple(sorted((k, float(v)) for k, v in params.items())), source)


#: Modules that are the identity map for symmetry purposes (dropout is the identity in eval
#: mode and multiplies by a random mask in training mode, which commutes with P D as well).
PASS_THROUGH_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def module_activation(m: nn.Module) -> ActivationRef | None:
    """The catalogue entry of an activation module, or None when ``m`` is not a known one.

    >>> module_activation(nn.LeakyReLU(0.2))
    ActivationRef(name='leaky_relu', params=(('negative_slope', 0.2),), source='LeakyReLU')
    """
    src = type(m).__name__
    if isinstance(m, CatalogueActivation):
        return _ref(m.name, src, **m.params)
    if isinstance(m, nn.Identity):
        return _ref("identity", src)
    # Subclasses first: ReLU6 is a Hardtanh.
    if isinstance(m, nn.ReLU6):
        return _ref("relu6", src)
    if isinstance(m, nn.Hardtanh):
        return _ref("hardtanh", src, min_val=m.min_val, max_val=m.max_val)
    if isinstance(m, nn.ReLU):
        return _ref("relu", src)
    if isinstance(m, nn.LeakyReLU):
        return _ref("leaky_relu", src, negative_slope=m.negative_slope)
    if isinstance(m, nn.RReLU):
        # In eval mode RReLU is leaky_relu with the mean slope; in training mode the slope is
        # random per element and only positive scalings and permutations commute with it.
        return _ref("leaky_relu", src, negative_slope=(m.lower + m.upper) / 2)
    if isinstance(m, nn.PReLU):
        if m.weight.numel() != 1:
            return None  # per-channel slopes: the permutation would have to move them too
        return _ref("leaky_relu", src, negative_slope=float(m.weight.detach().reshape(())))
    if isinstance(m, nn.ELU):
        return _ref("elu", src, alpha=m.alpha)
    if isinstance(m, nn.CELU):
        return _ref("celu", src, alpha=m.alpha)
    if isinstance(m, nn.GELU):
        return _ref("gelu_tanh" if m.approximate == "tanh" else "gelu", src)
    if isinstance(m, nn.Softplus):
        # torch switches to the identity where beta*x > threshold (a float32 rounding
        # device); the catalogue formula is the exact softplus.
        return _ref("softplus", src, beta=m.beta)
    if isinstance(m, nn.Softshrink):
        return _ref("softshrink", src, lambd=m.lambd)
    if isinstance(m, nn.Hardshrink):
        return _ref("hardshrink", src, lambd=m.lambd)
    simple = {
        nn.SELU: "selu", nn.SiLU: "silu", nn.Mish: "mish", nn.Sigmoid: "sigmoid", nn.LogSigmoid: "logsigmoid",
        nn.Tanh: "tanh", nn.Hardsigmoid: "hardsigmoid", nn.Hardswish: "hardswish", nn.Softsign: "softsign",
        nn.Tanhshrink: "tanhshrink",
    }
    for cls, name in simple.items():
        if isinstance(m, cls):
            return _ref(name, src)
    if type(m).__module__ == "transformers.activations" and src in _HF_ACTIVATIONS:
        return _ref(_HF_ACTIVATIONS[src], src)
    return None


# Hugging Face's activation modules with a catalogue entry (each computes exactly that formula).
_HF_ACTIVATIONS = {"NewGELUActivation": "gelu_tanh", "GELUTanh": "gelu_tanh", "PytorchGELUTanh": "gelu_tanh",
                   "GELUActivation": "gelu", "SiLUActivation": "silu"}


def _bind(fn, args, kwargs, names_defaults):
    """Parameter values of a functional call from positional/keyword arguments."""
    out = {}
    for i, (name, default) in enumerate(names_defaults, start=1):
        if name in kwargs:
            out[name] = kwargs[name]
        elif len(args) > i:
            out[name] = args[i]
        else:
            out[name] = default
    return out


# target -> (catalogue name, ((torch argument, default), ...), {torch argument: catalogue parameter})
_FUNCTIONS: dict = {}


def _add(targets, name, params=(), rename=None):
    for t in targets:
        if t is not None:
            _FUNCTIONS[t] = (name, params, rename or {})


_add([torch.relu, F.relu, torch.relu_, F.relu_, "relu", "relu_"], "relu")
_add([F.leaky_relu, F.leaky_relu_, "leaky_relu"], "leaky_relu", (("negative_slope", 0.01),))
_add([F.elu, F.elu_, "elu"], "elu", (("alpha", 1.0),))
_add([F.celu, F.celu_], "celu", (("alpha", 1.0),))
_add([F.selu, torch.selu, F.selu_], "selu")
_add([F.silu], "silu")
_add([F.mish], "mish")
_add([F.softplus], "softplus", (("beta", 1.0),))
_add([torch.sigmoid, F.sigmoid, "sigmoid", "sigmoid_"], "sigmoid")
_add([F.logsigmoid], "logsigmoid")
_add([torch.tanh, F.tanh, "tanh", "tanh_"], "tanh")
_add([F.hardtanh, F.hardtanh_], "hardtanh", (("min_val", -1.0), ("max_val", 1.0)))
_add([F.relu6], "relu6")
_add([F.hardsigmoid], "hardsigmoid")
_add([F.hardswish], "hardswish")
_add([F.softsign], "softsign")
_add([F.tanhshrink], "tanhshrink")
_add([F.softshrink], "softshrink", (("lambd", 0.5),))
_add([F.hardshrink, "hardshrink"], "hardshrink", (("lambd", 0.5),))
_add([torch.sin, "sin", "sin_"], "sin")
# The ATen forms torch.export produces (positional parameters after the input, as in the schema).
_aten = torch.ops.aten
_add([_aten.relu.default, _aten.relu_.default], "relu")
_add([_aten.leaky_relu.default, _aten.leaky_relu_.default], "leaky_relu", (("negative_slope", 0.01),))
_add([_aten.celu.default, _aten.celu_.default], "celu", (("alpha", 1.0),))
_add([_aten.selu.default, _aten.selu_.default], "selu")
_add([_aten.silu.default, _aten.silu_.default], "silu")
_add([_aten.mish.default, _aten.mish_.default], "mish")
_add([_aten.softplus.default], "softplus", (("beta", 1.0),))
_add([_aten.sigmoid.default, _aten.sigmoid_.default], "sigmoid")
_add([_aten.log_sigmoid.default], "logsigmoid")
_add([_aten.tanh.default, _aten.tanh_.default], "tanh")
_add([_aten.hardtanh.default, _aten.hardtanh_.default], "hardtanh", (("min_val", -1.0), ("max_val", 1.0)))
_add([_aten.relu6.default], "relu6")
_add([_aten.hardsigmoid.default, _aten.hardsigmoid_.default], "hardsigmoid")
_add([_aten.hardswish.default, _aten.hardswish_.default], "hardswish")
_add([_aten.softshrink.default], "softshrink", (("lambd", 0.5),))
_add([_aten.hardshrink.default], "hardshrink", (("lambd", 0.5),))
_add([_aten.sin.default, _aten.sin_.default], "sin")
_add([_aten.cos.default, _aten.cos_.default], "cos")
_add([_aten.exp.default, _aten.exp_.default], "exp")
_add([_aten.abs.default, _aten.abs_.default], "abs")
_add([torch.cos, "cos", "cos_"], "cos")
_add([torch.exp, "exp", "exp_"], "exp")
_add([torch.abs, torch.absolute, "abs", "abs_"], "abs")


def function_activation(target, args=(), kwargs=None) -> ActivationRef | None:
    """The catalogue entry of a functional call (``torch.relu``, ``F.gelu``, ``x.tanh()``,
    ``x ** 3``, ...) on its first argument, or None.

    ``target`` is an fx ``call_function`` target (a function) or a ``call_method`` name.

    >>> function_activation(F.leaky_relu, (None, 0.3))
    ActivationRef(name='leaky_relu', params=(('negative_slope', 0.3),), source='leaky_relu')
    >>> function_activation(F.gelu, (None,), {"approximate": "tanh"}).name
    'gelu_tanh'
    """
    kwargs = dict(kwargs or {})
    if isinstance(target, torch._ops.OpOverload):
        src = target.overloadpacket.__name__
    else:
        src = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    if target in (torch.ops.aten.elu.default, torch.ops.aten.elu_.default):
        alpha, scale, in_scale = (list(args[1:4]) + [1.0, 1.0, 1.0][len(args[1:4]):])
        alpha, scale, in_scale = kwargs.get("alpha", alpha), kwargs.get("scale", scale), kwargs.get("input_scale", in_scale)
        if scale == 1 and in_scale == 1:
            return _ref("elu", "elu", alpha=alpha)
        return None
    if target in (torch.ops.aten.rrelu.default,) and not (args[3] if len(args) > 3 else kwargs.get("training", False)):
        lower = args[1] if len(args) > 1 else kwargs.get("lower", 1 / 8)
        upper = args[2] if len(args) > 2 else kwargs.get("upper", 1 / 3)
        return _ref("leaky_relu", "rrelu", negative_slope=(lower + upper) / 2)
    if target in (torch.ops.aten.gelu.default, torch.ops.aten.gelu_.default):
        approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return _ref("gelu_tanh" if approx == "tanh" else "gelu", "gelu")
    if target in (torch.ops.aten.square.default,):
        return _ref("polynomial", "square", degree=2)
    if target is F.gelu or target == "gelu":
        approx = kwargs.get("approximate", args[1] if len(args) > 1 else "none")
        return _ref("gelu_tanh" if approx == "tanh" else "gelu", src)
    if target in (operator.pow, torch.pow, "pow", torch.square, "square", torch.ops.aten.pow.Tensor_Scalar):
        if target in (torch.square, "square"):
            return _ref("polynomial", src, degree=2)
        exponent = args[1] if len(args) > 1 else kwargs.get("exponent")
        if isinstance(exponent, int) and not isinstance(exponent, bool) and exponent >= 1:
            return _ref("polynomial", src, degree=exponent)
        if isinstance(exponent, float) and exponent.is_integer() and exponent >= 1:
            return _ref("polynomial", src, degree=int(exponent))
        return None
    try:
        entry = _FUNCTIONS.get(target)
    except TypeError:  # unhashable target
        entry = None
    if entry is None:
        return None
    name, params, rename = entry
    values = _bind(target, args, kwargs, params)
    return _ref(name, src, **{rename.get(k, k): float(v) for k, v in values.items()})


def activation_group(ref: ActivationRef, timeout: float | None = None):
    """The engine's :class:`groupcalc.IntertwinerGroup` for a catalogue activation
    (``groupcalc.group``), labelled with the parameter values.

    ``timeout`` is the engine's wall-clock guard (None: the engine default); the answer is
    budgeted by counted work. Not cached here: ``groupcalc.group`` caches proved and
    numerically verified groups and derives an ``"unknown"`` one again; the group keeps its
    ``status``, which :class:`SymmetrySpec` notes (or refuses with ``strict=True``)."""
    import dataclasses

    try:
        import groupcalc

        group = groupcalc.group
    except AttributeError:  # not re-exported (yet): the same function from its module
        from groupcalc._groups import group

    params = ref.kwargs
    if ref.name == "polynomial":
        params = {"degree": int(params["degree"])}
    g = group(ref.name, timeout=timeout, **params)
    return dataclasses.replace(g, label=str(ref))


# Groups used as structural constraints (not activation tables: these come from the
# operations themselves: max-pooling commutes with positive scalings, constants with none).
def structural(positive, negative=None, label=""):
    """An engine group {P D : d_i in S} with S given by its positive part and negative element."""
    from groupcalc import Scalings
    from groupcalc._groups import IntertwinerGroup

    return IntertwinerGroup.from_scalings(Scalings(positive, None, negative), label=label)


def trivial_scalings(label="fixed scale"):
    return structural("trivial", None, label)


def positive_scalings(label):
    return structural("all", None, label)


def all_scalings(label):
    return structural("all", -1, label)


def sign_scalings(label):
    return structural("trivial", -1, label)


_TRANSPARENT: dict = {}


def transparent(group) -> bool:
    """Whether phi is the identity on S (then a tensor after the activation carries the same
    element as before it)."""
    import numpy as np

    key = repr(group)
    if key not in _TRANSPARENT:
        s = group.one_dimensional()
        vals = [1.0]
        if s.positive != "trivial":
            from groupcalc._groups import IntertwinerGroup

            rng = np.random.default_rng(0)
            vals += list(IntertwinerGroup.from_scalings(type(s)(s.positive, s.generator, None, s.phi)).sample_scalings(6, rng))
        if s.negative is not None:
            vals += [float(s.negative) * v for v in vals]
        v = np.array(vals, dtype=float)
        with np.errstate(all="ignore"):
            out = group.phi_scalar(v)
        _TRANSPARENT[key] = bool(np.allclose(out, v, rtol=1e-9, atol=1e-12))
    return _TRANSPARENT[key]


def is_elementwise(fn, example: torch.Tensor, trials: int = 2, tol: float = 1e-6) -> bool:
    """Whether ``fn`` acts entrywise on tensors shaped like ``example`` (numeric test).

    An entrywise map commutes with every permutation of the entries; a random permutation
    of all entries is tried ``trials`` times on random inputs.
    """
    g = torch.Generator().manual_seed(0)
    shape = tuple(example.shape)
    with torch.no_grad():
        for _ in range(trials):
            x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
            perm = torch.randperm(x.numel(), generator=g)
            try:
                y = fn(x.to(example.dtype).to(example.device)).double().cpu()
                yp = fn(x.reshape(-1)[perm].reshape(shape).to(example.dtype).to(example.device)).double().cpu()
            except Exception:  # noqa: BLE001 - anything that fails is not a usable activation
                return False
            if y.shape != x.shape:
                return False
            scale = max(1.0, float(y.abs().max()))
            if not torch.allclose(yp.reshape(-1), y.reshape(-1)[perm], atol=tol * scale, rtol=tol):
                return False
    return True


def estimate_group(module: nn.Module, label: str):
    """The numerically estimated group of an unknown elementwise module.

    Uses ``groupcalc._check.search_scalings`` (a black-box scan of sigma(a x) = b sigma(x));
    phi is taken to be the identity when every fitted ``b`` equals its ``a``, otherwise only
    the permutations are kept (phi unknown in closed form).
    """
    import sympy

    from groupcalc import Scalings
    from groupcalc._check import search_scalings
    from groupcalc._groups import IntertwinerGroup

    def sigma(x):
        with torch.no_grad():
            return module(torch.as_tensor(x, dtype=torch.float64)).double().numpy()

    found = search_scalings(sigma)
    phi_is_identity = all(math.isclose(b, a, rel_tol=1e-6, abs_tol=1e-9) for a, b in found.phi)
    if not phi_is_identity:
        return IntertwinerGroup.from_scalings(Scalings("trivial"), label=f"{label} (estimated; phi not identity, permutations only)")
    gen = None if found.generator is None else sympy.nsimplify(found.generator, tolerance=1e-9, rational=False)
    neg = None if found.negative is None else sympy.nsimplify(found.negative, tolerance=1e-9, rational=False)
    return IntertwinerGroup.from_scalings(Scalings(found.positive, gen, neg), label=f"{label} (estimated numerically)")
