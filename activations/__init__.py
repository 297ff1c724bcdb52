"""The catalogue of activation functions: formulas in ``x``, parameters, numpy versions.

>>> import activations
>>> activations.get("relu").expr
Max(0, x)
"""

from ._activation import Activation, Parameter, lambdify_numpy, x
from ._catalogue import catalogue, get, names, register, unregister
from ._parse import FUNCTIONS, FormulaError, parse_condition, parse_formula

__all__ = [
    "Activation", "Parameter", "x", "lambdify_numpy",
    "catalogue", "get", "names", "register", "unregister",
    "parse_formula", "parse_condition", "FormulaError", "FUNCTIONS",
]
