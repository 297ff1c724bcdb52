"""Parse a user's formula into sympy without ever calling ``eval``.

sympy's ``sympify``/``parse_expr`` evaluate Python code, so a formula typed on the command
line must not reach them. We parse with :func:`ast.parse` (which builds a syntax tree and
runs nothing), accept a small whitelist of node types and function names, and build the
sympy expression ourselves.
"""

from __future__ import annotations

import ast
from fractions import Fraction

import sympy

from ._activation import x

#: Longest formula text accepted.
MAX_LENGTH = 2000
#: Most syntax-tree nodes accepted.
MAX_NODES = 400
#: Largest magnitude of a numeric literal, and of an integer exponent.
MAX_NUMBER = 10**6
MAX_EXPONENT = 64


class FormulaError(ValueError):
    """A formula could not be read; the message is one line meant for the user."""


def _erf(z):
    return sympy.erf(z)


def _softplus(z):
    return sympy.log(1 + sympy.exp(z))


def _sigmoid(z):
    return 1 / (1 + sympy.exp(-z))


def _relu(z):
    return sympy.Max(0, z)


_UNARY = {
    "exp": sympy.exp, "log": sympy.log, "ln": sympy.log, "sqrt": sympy.sqrt,
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "atan": sympy.atan, "arctan": sympy.atan,
    "asinh": sympy.asinh, "arcsinh": sympy.asinh,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "sech": sympy.sech,
    "erf": _erf, "erfc": sympy.erfc, "abs": sympy.Abs, "Abs": sympy.Abs,
    "sign": sympy.sign, "Heaviside": sympy.Heaviside, "heaviside": sympy.Heaviside,
    "sigmoid": _sigmoid, "softplus": _softplus, "relu": _relu,
}
_NARY = {"Max": sympy.Max, "max": sympy.Max, "Min": sympy.Min, "min": sympy.Min}
_CONSTANTS = {"pi": sympy.pi, "E": sympy.E, "e": sympy.E}
_RESERVED = set(_UNARY) | set(_NARY) | set(_CONSTANTS) | {"Piecewise", "where"}

FUNCTIONS = tuple(sorted(set(_UNARY) | set(_NARY) | {"where"}))


def parse_formula(text: str, *, variable: str = "x") -> sympy.Expr:
    """Parse ``text`` into a sympy expression in the real symbol ``x``.

    Every other name becomes a real parameter. Supported: numbers, ``+ - * / **`` (``^``
    is read as a power), the functions in :data:`FUNCTIONS`, and ``where(cond, a, b)``
    with comparisons for piecewise formulas.

    >>> parse_formula("max(0, x) + 0.5*x")
    x/2 + Max(0, x)
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is too long ({len(text)} characters; at most {MAX_LENGTH})")
    if not text.strip():
        raise FormulaError("formula is empty")
    try:
        tree = ast.parse(text.replace("^", "**").strip(), mode="eval")
    except SyntaxError as err:
        col = f" at column {err.offset}" if err.offset else ""
        raise FormulaError(f"cannot parse formula {text!r}: invalid syntax{col}") from None
    n = sum(1 for _ in ast.walk(tree))
    if n > MAX_NODES:
        raise FormulaError(f"formula is too large ({n} syntax nodes; at most {MAX_NODES})")
    builder = _Builder(variable)
    expr = builder.build(tree.body)
    if isinstance(expr, (sympy.core.relational.Relational, sympy.logic.boolalg.BooleanFunction, sympy.logic.boolalg.BooleanAtom)) or not isinstance(expr, sympy.Expr):
        raise FormulaError("formula must be a real-valued expression, not a condition")
    if x not in expr.free_symbols:
        if builder.saw_variable:
            return expr
        # A formula without the variable is a constant activation: allowed, but only if
        # it is written as such (e.g. "3"); a bare function name is a user error.
    if expr.has(sympy.I):
        raise FormulaError("formula must be real: it contains the imaginary unit")
    return expr


class _Builder:
    def __init__(self, variable):
        self.variable = variable
        self.saw_variable = False

    def build(self, node):
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise FormulaError(f"unsupported syntax in formula: {type(node).__name__}")
        return method(node)

    def _Constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise FormulaError(f"unsupported constant {v!r} in formula")
        if abs(v) > MAX_NUMBER:
            raise FormulaError(f"number {v!r} is too large (at most {MAX_NUMBER:g} in magnitude)")
        if isinstance(v, float):
            return sympy.Rational(Fraction(repr(v)))
        return sympy.Integer(v)

    def _Name(self, node):
        name = node.id
        if name == self.variable:
            self.saw_variable = True
            return x
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _UNARY or name in _NARY:
            raise FormulaError(f"function {name!r} is used without an argument")
        if name.startswith("_") or name in {"I", "j", "oo", "nan", "zoo"}:
            raise FormulaError(f"name {name!r} is not allowed in a formula")
        return sympy.Symbol(name, real=True)

    def _UnaryOp(self, node):
        v = self.build(node.operand)
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return v
        raise FormulaError(f"unsupported operator {type(node.op).__name__} in formula")

    def _BinOp(self, node):
        a, b = self.build(node.left), self.build(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return a + b
        if isinstance(op, ast.Sub):
            return a - b
        if isinstance(op, ast.Mult):
            return a * b
        if isinstance(op, ast.Div):
            if b == 0:
                raise FormulaError("division by zero in formula")
            return a / b
        if isinstance(op, ast.Pow):
            if b.is_number and (abs(b) > MAX_EXPONENT):
                raise FormulaError(f"exponent {b} is too large (at most {MAX_EXPONENT})")
            if not b.is_number and not a.is_number:
                raise FormulaError("a power with a variable exponent and variable base is not supported")
            return a**b
        raise FormulaError(f"unsupported operator {type(op).__name__} in formula")

    def _Compare(self, node):
        if len(node.ops) != 1:
            raise FormulaError("chained comparisons are not supported; use and/or")
        a, b = self.build(node.left), self.build(node.comparators[0])
        ops = {ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt, ast.GtE: sympy.Ge}
        op = ops.get(type(node.ops[0]))
        if op is None:
            raise FormulaError("only <, <=, >, >= comparisons are supported")
        return op(a, b)

    def _BoolOp(self, node):
        vals = [self.build(v) for v in node.values]
        return sympy.And(*vals) if isinstance(node.op, ast.And) else sympy.Or(*vals)

    def _Call(self, node):
        if not isinstance(node.func, ast.Name):
            raise FormulaError("only plain function calls like tanh(x) are allowed")
        if node.keywords:
            raise FormulaError(f"keyword arguments are not allowed in {node.func.id}(...)")
        name = node.func.id
        args = [self.build(a) for a in node.args]
        if name in _UNARY:
            if len(args) != 1:
                raise FormulaError(f"function {name!r} takes one argument, got {len(args)}")
            return _UNARY[name](args[0])
        if name in _NARY:
            if len(args) < 2:
                raise FormulaError(f"function {name!r} takes at least two arguments")
            return _NARY[name](*args)
        if name == "where":
            if len(args) != 3:
                raise FormulaError("where(condition, value_if_true, value_otherwise) takes three arguments")
            cond, a, b = args
            if not isinstance(cond, sympy.logic.boolalg.Boolean):
                raise FormulaError("the first argument of where(...) must be a comparison")
            return sympy.Piecewise((a, cond), (b, True))
        import difflib

        close = difflib.get_close_matches(name, FUNCTIONS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise FormulaError(f"unknown function {name!r} in formula{hint}")
