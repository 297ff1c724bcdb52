"""The :class:`Activation` value: a formula in ``x``, its parameters and a numpy version."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy

#: The real variable every activation formula is written in.
x = sympy.Symbol("x", real=True)

_DOMAINS = ("real", "positive", "nonnegative", "nonzero", "positive_integer")


@dataclass(frozen=True)
class Parameter:
    """A named real parameter of an activation.

    ``domain`` is one of ``"real"``, ``"positive"``, ``"nonnegative"``, ``"nonzero"`` and
    ``"positive_integer"``: the values for which the catalogue formula is meant (torch's
    own restrictions where torch has the function).
    """

    name: str
    default: float
    domain: str = "real"
    description: str = ""

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Parameter name must be an identifier, not {self.name!r}.")
        if self.domain not in _DOMAINS:
            raise ValueError(f"Argument 'domain' must be one of {_DOMAINS}, not {self.domain!r}.")
        object.__setattr__(self, "default", sympy.nsimplify(self.default, rational=True))
        if not self.admits(self.default):
            raise ValueError(f"Default {self.default} of parameter {self.name!r} is outside its domain {self.domain!r}.")

    @property
    def symbol(self) -> sympy.Symbol:
        return sympy.Symbol(self.name, real=True)

    def admits(self, value) -> bool:
        """Whether ``value`` (a number) lies in the parameter's domain."""
        v = sympy.nsimplify(value, rational=True) if not isinstance(value, sympy.Basic) else value
        if not v.is_real:
            return False
        if self.domain == "positive":
            return bool(v > 0)
        if self.domain == "nonnegative":
            return bool(v >= 0)
        if self.domain == "nonzero":
            return bool(v != 0)
        if self.domain == "positive_integer":
            return bool(v.is_integer and v > 0)
        return True

    def condition(self) -> sympy.Basic:
        """The domain as a sympy condition on :attr:`symbol`."""
        s = self.symbol
        return {
            "real": sympy.true,
            "positive": s > 0,
            "nonnegative": s >= 0,
            "nonzero": sympy.Ne(s, 0),
            "positive_integer": sympy.And(s > 0, sympy.Eq(s, sympy.floor(s))),
        }[self.domain]


@dataclass(frozen=True)
class Activation:
    """An activation function: a sympy expression in :data:`x` plus a numpy version.

    Parameters
    ----------
    name : str
        The catalogue name (torch.nn.functional's where it has one).
    expr : sympy.Expr
        The formula in the real symbol :data:`x`; parameters appear as real symbols.
    parameters : tuple of Parameter
    reference : str
        Where the function comes from.
    numpy_fn : callable, optional
        ``numpy_fn(x, **params)`` evaluating the function on an array; by default the
        formula is compiled with :func:`sympy.lambdify`.
    constraints : tuple of sympy conditions
        Extra joint conditions on the parameters (for example ``min_val < max_val``).
    """

    name: str
    expr: sympy.Expr
    parameters: tuple = ()
    reference: str = ""
    numpy_fn: Callable | None = field(default=None, compare=False, repr=False)
    constraints: tuple = ()
    torch_name: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "parameters", tuple(self.parameters))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        names = {p.name for p in self.parameters}
        free = {s.name for s in self.expr.free_symbols} - {"x"}
        if not free <= names:
            raise ValueError(f"Activation {self.name!r}: symbols {sorted(free - names)} are not declared parameters.")

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.parameters}

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def bind(self, **values) -> dict:
        """Validate parameter values; missing ones take their defaults (exact rationals)."""
        out = {}
        for key in values:
            if key not in {p.name for p in self.parameters}:
                known = ", ".join(p.name for p in self.parameters) or "none"
                raise ValueError(f"Activation {self.name!r} has no parameter {key!r} (parameters: {known}).")
        for p in self.parameters:
            v = values.get(p.name, p.default)
            if isinstance(v, str):
                raise ValueError(f"Argument {p.name!r} must be a number, not {v!r}.")
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"Argument {p.name!r} must be a finite real number, not {v!r}.")
            v = sympy.nsimplify(v, rational=True) if not isinstance(v, sympy.Basic) else v
            if not p.admits(v):
                raise ValueError(f"Argument {p.name!r} must be {p.domain.replace('_', ' ')}, not {v}.")
            out[p.name] = v
        subs = {sympy.Symbol(k, real=True): v for k, v in out.items()}
        for c in self.constraints:
            if c.subs(subs) is sympy.false:
                raise ValueError(f"Parameters of {self.name!r} must satisfy {c}, got {out}.")
        return out

    def formula(self, **values) -> sympy.Expr:
        """The expression with the given parameter values substituted (others stay symbolic)."""
        subs = {sympy.Symbol(k, real=True): sympy.nsimplify(v, rational=True) for k, v in values.items()}
        return self.expr.subs(subs)

    def __call__(self, inputs, **values):
        """Evaluate on a numpy array (defaults for missing parameters)."""
        params = {k: float(v) for k, v in self.bind(**values).items()}
        arr = np.asarray(inputs)
        if self.numpy_fn is not None:
            return self.numpy_fn(arr, **params)
        return _lambdified(self.expr, tuple(sorted(params)))(arr, *(params[k] for k in sorted(params)))


_LAMBDA_CACHE: dict = {}


def _lambdified(expr, names):
    key = (expr, names)
    if key not in _LAMBDA_CACHE:
        _LAMBDA_CACHE[key] = lambdify_numpy(expr, names)
    return _LAMBDA_CACHE[key]


def lambdify_numpy(expr: sympy.Expr, names=()):
    """Compile a formula in ``x`` (and named parameters) to a numpy function.

    ``erf`` comes from scipy; piecewise parts vectorise through ``numpy.select``.
    """
    syms = [x] + [sympy.Symbol(n, real=True) for n in names]
    modules = ["numpy"]
    if expr.has(sympy.erf, sympy.erfc):  # scipy.special is slow to import: only when needed
        import scipy.special

        modules = [{"erf": scipy.special.erf, "erfc": scipy.special.erfc}, "numpy"]
    f = sympy.lambdify(syms, expr, modules=modules)

    def fn(arr, *params):
        arr = np.asarray(arr)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = f(arr, *params)
        return np.broadcast_to(np.asarray(out, dtype=np.result_type(arr, np.float32) if arr.dtype.kind == "f" else float), arr.shape).copy()

    return fn
