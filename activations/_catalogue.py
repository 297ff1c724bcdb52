"""The catalogue of named activations.

Each entry is a sympy formula in the real symbol ``x``; names follow
``torch.nn.functional`` where torch has the function. Numpy versions are compiled from the
formula unless a faster or more stable closed form is given.
"""

from __future__ import annotations

import difflib

import numpy as np
import sympy
from sympy import Abs, Max, Min, Piecewise, Rational, exp, log, sqrt, tanh

from ._activation import Activation, Parameter, x
from ._parse import parse_formula

_S = lambda name: sympy.Symbol(name, real=True)  # noqa: E731

alpha, beta, s, lambd, lo, hi, d = (_S(n) for n in ("alpha", "beta", "negative_slope", "lambd", "min_val", "max_val", "degree"))

_SELU_ALPHA = Rational("1.6732632423543772848170429916717")
_SELU_SCALE = Rational("1.0507009873554804934193349852946")


def _np_sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _np_softplus(z, beta=1.0):
    bz = beta * z
    return (np.maximum(bz, 0) + np.log1p(np.exp(-np.abs(bz)))) / beta


def _np_erf(z):
    import scipy.special

    return scipy.special.erf(z)


_ENTRIES = [
    Activation("identity", x, reference="the identity map", numpy_fn=lambda z: np.array(z, copy=True), torch_name="Identity"),
    Activation("relu", Max(0, x), reference="Nair & Hinton 2010", numpy_fn=lambda z: np.maximum(z, 0), torch_name="relu"),
    Activation(
        "leaky_relu", Piecewise((x, x >= 0), (s * x, True)), (Parameter("negative_slope", 0.01, "real", "slope for x < 0"),),
        reference="Maas et al. 2013", numpy_fn=lambda z, negative_slope: np.where(z >= 0, z, negative_slope * z), torch_name="leaky_relu",
    ),
    Activation(
        "elu", Piecewise((x, x > 0), (alpha * (exp(x) - 1), True)), (Parameter("alpha", 1.0, "real"),),
        reference="Clevert et al. 2016", numpy_fn=lambda z, alpha: np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0))), torch_name="elu",
    ),
    Activation(
        "selu", _SELU_SCALE * Piecewise((x, x > 0), (_SELU_ALPHA * (exp(x) - 1), True)), reference="Klambauer et al. 2017",
        numpy_fn=lambda z: float(_SELU_SCALE) * np.where(z > 0, z, float(_SELU_ALPHA) * np.expm1(np.minimum(z, 0))), torch_name="selu",
    ),
    Activation(
        "celu", Piecewise((x, x > 0), (alpha * (exp(x / alpha) - 1), True)), (Parameter("alpha", 1.0, "nonzero"),),
        reference="Barron 2017", numpy_fn=lambda z, alpha: np.where(z > 0, z, alpha * np.expm1(np.minimum(z / alpha, 0) if alpha > 0 else np.minimum(z, 0) / alpha)),
        torch_name="celu",
    ),
    Activation("gelu", x / 2 * (1 + sympy.erf(x / sqrt(2))), reference="Hendrycks & Gimpel 2016 (erf form)",
               numpy_fn=lambda z: 0.5 * z * (1 + _np_erf(z / np.sqrt(2))), torch_name="gelu"),
    Activation(
        "gelu_tanh", x / 2 * (1 + tanh(sqrt(2 / sympy.pi) * (x + Rational(44715, 1000000) * x**3))),
        reference="Hendrycks & Gimpel 2016 (tanh approximation; torch gelu(approximate='tanh'))",
        numpy_fn=lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))), torch_name="gelu_tanh",
    ),
    Activation("silu", x / (1 + exp(-x)), reference="Elfwing et al. 2018; Ramachandran et al. 2017",
               numpy_fn=lambda z: z * _np_sigmoid(z), torch_name="silu"),
    Activation("swish", x / (1 + exp(-beta * x)), (Parameter("beta", 1.0, "real"),), reference="Ramachandran et al. 2017",
               numpy_fn=lambda z, beta: z * _np_sigmoid(beta * z)),
    Activation("mish", x * tanh(log(1 + exp(x))), reference="Misra 2019",
               numpy_fn=lambda z: z * np.tanh(_np_softplus(z)), torch_name="mish"),
    Activation("softplus", log(1 + exp(beta * x)) / beta, (Parameter("beta", 1.0, "nonzero"),), reference="Dugas et al. 2001",
               numpy_fn=lambda z, beta: _np_softplus(z, beta), torch_name="softplus"),
    Activation("sigmoid", 1 / (1 + exp(-x)), reference="the logistic function", numpy_fn=_np_sigmoid, torch_name="sigmoid"),
    Activation("logsigmoid", -log(1 + exp(-x)), reference="log of the logistic function",
               numpy_fn=lambda z: -_np_softplus(-z), torch_name="logsigmoid"),
    Activation("tanh", tanh(x), reference="hyperbolic tangent", numpy_fn=np.tanh, torch_name="tanh"),
    Activation(
        "hardtanh", Piecewise((lo, x < lo), (hi, x > hi), (x, True)),
        (Parameter("min_val", -1.0, "real"), Parameter("max_val", 1.0, "real")), constraints=(lo < hi,),
        reference="Collobert 2004", numpy_fn=lambda z, min_val, max_val: np.clip(z, min_val, max_val), torch_name="hardtanh",
    ),
    Activation("relu6", Min(Max(0, x), 6), reference="Krizhevsky 2010", numpy_fn=lambda z: np.clip(z, 0, 6), torch_name="relu6"),
    Activation("hardsigmoid", Piecewise((0, x <= -3), (1, x >= 3), (x / 6 + Rational(1, 2), True)),
               reference="Courbariaux et al. 2015 (torch's x/6 + 1/2 form)", numpy_fn=lambda z: np.clip(z / 6 + 0.5, 0, 1), torch_name="hardsigmoid"),
    Activation("hardswish", Piecewise((0, x <= -3), (x, x >= 3), (x * (x + 3) / 6, True)),
               reference="Howard et al. 2019", numpy_fn=lambda z: z * np.clip(z + 3, 0, 6) / 6, torch_name="hardswish"),
    Activation("softsign", x / (1 + Abs(x)), reference="Bergstra et al. 2009", numpy_fn=lambda z: z / (1 + np.abs(z)), torch_name="softsign"),
    Activation("tanhshrink", x - tanh(x), reference="torch.nn.Tanhshrink", numpy_fn=lambda z: z - np.tanh(z), torch_name="tanhshrink"),
    Activation(
        "softshrink", Piecewise((x - lambd, x > lambd), (x + lambd, x < -lambd), (0, True)), (Parameter("lambd", 0.5, "nonnegative"),),
        reference="Donoho 1995 (soft thresholding)", numpy_fn=lambda z, lambd: np.where(z > lambd, z - lambd, np.where(z < -lambd, z + lambd, 0.0)),
        torch_name="softshrink",
    ),
    Activation(
        "hardshrink", Piecewise((x, x > lambd), (x, x < -lambd), (0, True)), (Parameter("lambd", 0.5, "nonnegative"),),
        reference="hard thresholding", numpy_fn=lambda z, lambd: np.where(np.abs(z) > lambd, z, 0.0), torch_name="hardshrink",
    ),
    Activation("gaussian", exp(-x**2 / 2) / sqrt(2 * sympy.pi), reference="the Gaussian RBF of Table 1",
               numpy_fn=lambda z: np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)),
    Activation("polynomial", x**d, (Parameter("degree", 2, "positive_integer"),), reference="x**degree (Table 1)",
               numpy_fn=lambda z, degree: z ** int(degree)),
    Activation("abs", Abs(x), reference="absolute value", numpy_fn=np.abs),
    Activation("sin", sympy.sin(x), reference="sine (SIREN, Sitzmann et al. 2020)", numpy_fn=np.sin),
    Activation("cos", sympy.cos(x), reference="cosine", numpy_fn=np.cos),
    Activation("exp", exp(x), reference="exponential", numpy_fn=np.exp),
    Activation("squared_relu", Max(0, x) ** 2, reference="So et al. 2021 (Primer)", numpy_fn=lambda z: np.maximum(z, 0) ** 2),
]

_REGISTRY: dict[str, Activation] = {a.name: a for a in _ENTRIES}
_ALIASES = {"swish1": "silu", "rbf": "gaussian", "linear": "identity", "logistic": "sigmoid"}


def names() -> tuple:
    """The catalogue's names, in catalogue order."""
    return tuple(_REGISTRY)


def catalogue() -> tuple:
    """Every catalogue :class:`Activation`, in catalogue order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> Activation:
    """The catalogue entry called ``name``; a ``KeyError`` with close matches otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"Argument 'name' must be a string, not {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY) + list(_ALIASES), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"unknown activation {name!r}{hint}")


def register(name: str, formula, parameters=(), *, reference: str = "user-defined", numpy_fn=None, replace: bool = False) -> Activation:
    """Add an activation to the catalogue.

    ``formula`` is a sympy expression in :data:`x` or a string (parsed safely); every other
    free symbol must be listed in ``parameters`` (``Parameter`` objects or ``(name, default)``
    pairs).

    >>> a = register("my_act", "x * sigmoid(2*x)", replace=True)
    >>> a.expr
    x/(1 + exp(-2*x))
    >>> _ = _REGISTRY.pop("my_act")  # leave the catalogue as it was (tests iterate over it)
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"Argument 'name' must be an identifier, not {name!r}.")
    if name in _REGISTRY and not replace:
        raise ValueError(f"Activation {name!r} is already registered; pass replace=True to overwrite it.")
    expr = parse_formula(formula) if isinstance(formula, str) else sympy.sympify(formula, strict=True)
    params = tuple(p if isinstance(p, Parameter) else Parameter(*p) for p in parameters)
    act = Activation(name, expr, params, reference=reference, numpy_fn=numpy_fn)
    _REGISTRY[name] = act
    return act


def unregister(name: str) -> None:
    """Remove a user-registered activation."""
    if name in {a.name for a in _ENTRIES}:
        raise ValueError(f"Cannot unregister built-in activation {name!r}.")
    _REGISTRY.pop(name, None)
