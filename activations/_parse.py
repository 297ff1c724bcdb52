"""Parse a user's formula into sympy without ever calling ``eval``.

sympy's ``sympify``/``parse_expr`` evaluate Python code, so a formula typed on the command
line must not reach them. We parse with :func:`ast.parse` (which builds a syntax tree and
runs nothing), check the whole tree against a whitelist of node types, names and functions
*before* any sympy object is built, and then build the sympy expression ourselves.

The grammar covers everything groupcalc prints (sympy's ``str`` of the catalogue formulas,
of the case conditions, of phi and of the generators) and what sympy users write:
``Piecewise((e, cond), ..., (e, True))``, ``Eq``/``Ne``/``==``/``!=``, comparisons and
their chains, ``And``/``Or``/``Not``/``&``/``|``/``~``, ``Heaviside``, ``sign``,
``Max``/``Min``/``Abs``, ``Rational(p, q)``, exact rationals of any size. docs/engine.md
("Formula syntax") lists it. Size is bounded for the whole formula (characters, syntax
nodes, nesting depth, total digits), and powers are refused before they are computed when
their result would be too large, so no input makes the parser hang.
"""

from __future__ import annotations

import ast
import difflib
import functools
import math
import re
from fractions import Fraction

import sympy
from sympy.core.relational import Relational
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from ._activation import x

#: Longest formula text accepted (characters).
MAX_LENGTH = 5000
#: Most syntax-tree nodes accepted.
MAX_NODES = 2000
#: The same two limits for a condition (groupcalc prints merged cases as long disjunctions).
MAX_CONDITION_LENGTH = 20000
MAX_CONDITION_NODES = 8000
#: Deepest nesting of the syntax tree accepted.
MAX_DEPTH = 60
#: Most decimal digits accepted in all numeric literals of one formula together.
MAX_DIGITS = 2000
#: Largest magnitude of a numeric exponent (``x**64``, ``x**(-37/10)``).
MAX_EXPONENT = 64
#: Most decimal digits of a number the parser computes (e.g. ``(10**30)**64`` is refused).
MAX_RESULT_DIGITS = 10000
#: Most decimal digits of a number under a numeric root (sympy factors it to simplify the root).
MAX_ROOT_DIGITS = 200
#: Largest decimal exponent of a number in a formula other than an exact rational, every
#: sub-term included: each lies within ``10**-MAX_MAGNITUDE`` and ``10**MAX_MAGNITUDE`` in
#: magnitude, bounded from its structure before sympy sees it. sympy decides a sign, an
#: integer part or an order by computing digits, and ``sign(sin(exp(10**40/3)))`` would need
#: 10**39 digits of e (while building the formula, and again when printing it).
MAX_MAGNITUDE = 1000
#: Most arguments of all Max and Min calls of a formula together (sympy compares them
#: pairwise, and a nested Max is flattened into one).
MAX_ARGS = 32


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


#: Functions of one argument.
_UNARY = {
    "exp": sympy.exp, "sqrt": sympy.sqrt,
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "atan": sympy.atan, "arctan": sympy.atan,
    "asinh": sympy.asinh, "arcsinh": sympy.asinh,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "sech": sympy.sech,
    "erf": _erf, "erfc": sympy.erfc, "abs": sympy.Abs, "Abs": sympy.Abs,
    "sign": sympy.sign, "floor": sympy.floor, "ceiling": sympy.ceiling,
    "sigmoid": _sigmoid, "softplus": _softplus, "relu": _relu,
}
_NARY = {"Max": sympy.Max, "max": sympy.Max, "Min": sympy.Min, "min": sympy.Min}
_RELATIONS = {"Eq": sympy.Eq, "Ne": sympy.Ne, "Lt": sympy.Lt, "Le": sympy.Le, "Gt": sympy.Gt, "Ge": sympy.Ge}
_LOGIC = {"And": sympy.And, "Or": sympy.Or, "Not": sympy.Not, "Xor": sympy.Xor, "ITE": sympy.ITE}
#: Functions with their own argument rules (see ``_Builder._Call``).
_SPECIAL = ("log", "ln", "Heaviside", "heaviside", "Mod", "Piecewise", "where", "Rational", "Integer", "Float", "Contains")
#: The sets allowed as the second argument of ``Contains(e, set)`` (groupcalc prints
#: ``Contains(-1/c, Naturals)`` for a family of special parameter values).
_SETS = {"Naturals": sympy.S.Naturals, "Naturals0": sympy.S.Naturals0, "Integers": sympy.S.Integers, "Reals": sympy.S.Reals}
_CONSTANTS = {"pi": sympy.pi, "E": sympy.E, "e": sympy.E, "oo": sympy.oo}
_FORBIDDEN_NAMES = {"I", "j", "nan", "zoo"}

#: Every function name the parser knows.
FUNCTIONS = tuple(sorted(set(_UNARY) | set(_NARY) | set(_RELATIONS) | set(_LOGIC) | set(_SPECIAL)))
_KNOWN_CALLS = frozenset(FUNCTIONS)

_COMPARE = {ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt, ast.GtE: sympy.Ge, ast.Eq: sympy.Eq, ast.NotEq: sympy.Ne}

#: Node types allowed anywhere in the tree (the builder decides where each may stand).
_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Constant, ast.Tuple,
    ast.keyword, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.BitAnd, ast.BitOr, ast.USub, ast.UAdd,
    ast.Not, ast.Invert, ast.And, ast.Or, *_COMPARE,
)
_DESCRIBE = {
    ast.Attribute: "attribute access ('.')", ast.Subscript: "indexing ('[...]')", ast.Lambda: "lambda",
    ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension", ast.List: "a list", ast.Set: "a set", ast.Dict: "a dict",
    ast.IfExp: "'a if c else b' (use where(c, a, b) or Piecewise)", ast.NamedExpr: "':='", ast.Starred: "'*' unpacking",
    ast.JoinedStr: "an f-string", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.FloorDiv: "'//'", ast.Mod: "'%' (use Mod(a, b))", ast.MatMult: "'@'", ast.LShift: "'<<'", ast.RShift: "'>>'",
    ast.BitXor: "'^'", ast.Is: "'is'", ast.IsNot: "'is not'", ast.In: "'in'", ast.NotIn: "'not in'",
}
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_FRACTION = re.compile(r"[+-]?\d+(/\d+)?")


def parse_formula(text: str, *, variable: str = "x") -> sympy.Expr:
    """Parse ``text`` into a real sympy expression in the real symbol ``variable``.

    Every other name becomes a real parameter. The grammar (docs/engine.md, "Formula
    syntax") covers everything groupcalc prints: sympy's own syntax for the catalogue's
    formulas (``Piecewise((x, x >= 0), (negative_slope*x, True))``, ``Max``, ``Abs``,
    ``Heaviside``, ``sign``, exact rationals of any size) as well as ``where(cond, a, b)``
    and ``^`` for powers. Nothing is evaluated as Python.

    Parameters
    ----------
    text : str
        The formula.
    variable : str
        The name of the variable (``"x"``: the symbol :data:`activations.x`; phi is written
        in ``"a"``).

    Raises
    ------
    FormulaError
        With a one-line message naming what is wrong.

    Examples
    --------
    >>> parse_formula("max(0, x) + 0.5*x")
    x/2 + Max(0, x)
    >>> parse_formula("Piecewise((x, x >= 0), (negative_slope*x, True))")
    Piecewise((x, x >= 0), (negative_slope*x, True))
    >>> parse_formula("a**2", variable="a")
    a**2
    """
    builder, node = _prepare(text, variable, "formula", MAX_LENGTH, MAX_NODES)
    expr = builder.expr(node, "the formula")
    if expr.has(sympy.I):
        raise FormulaError("formula must be real: it contains the imaginary unit")
    if expr.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        raise FormulaError(f"formula must be finite, but it evaluates to {expr}")
    _check_magnitude(expr, "the formula")
    _check_exponents(expr)
    return expr


def parse_condition(text: str, *, variable: str = "x") -> sympy.Basic:
    """Parse a condition (as printed in a case of ``groupcalc group``) into a sympy boolean.

    Same grammar as :func:`parse_formula`; the result must be a condition: a comparison,
    ``Eq``/``Ne``, their combinations with ``&``, ``|``, ``~``, ``And``, ``Or``, ``Not``,
    or ``True``/``False``.

    >>> parse_condition("Ne(alpha, 0) & (0 < lambd) & (lambd < 1)")
    (0 < lambd) & (lambd < 1) & Ne(alpha, 0)
    >>> parse_condition("True")
    True
    """
    builder, node = _prepare(text, variable, "condition", MAX_CONDITION_LENGTH, MAX_CONDITION_NODES)
    cond = builder.cond(node, "the condition")
    if cond.has(sympy.I):
        raise FormulaError("condition must be real: it contains the imaginary unit")
    _check_magnitude(cond, "the condition")
    _check_exponents(cond)
    return cond


def _prepare(text, variable, what, max_length, max_nodes):
    """Syntax tree of ``text`` checked against every limit and the whitelist; nothing built yet."""
    if not isinstance(text, str):
        raise FormulaError(f"a {what} must be a string, not {type(text).__name__}")
    if not isinstance(variable, str) or not variable.isidentifier():
        raise FormulaError(f"Argument 'variable' must be an identifier, not {variable!r}")
    if len(text) > max_length:
        raise FormulaError(f"{what} is too long ({len(text)} characters; at most {max_length})")
    source = text.replace("^", "**").strip()
    if not source:
        raise FormulaError(f"{what} is empty")
    digits = sum(len(m) for m in re.findall(r"\d+", source))
    if digits > MAX_DIGITS:
        raise FormulaError(f"{what} has too many digits ({digits}; at most {MAX_DIGITS} in all numbers together)")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        if "nested" in str(err.msg):
            raise FormulaError(f"{what} is nested too deeply (at most {MAX_DEPTH} levels)") from None
        col = f" at column {err.offset}" if err.offset else ""
        raise FormulaError(f"cannot parse {what} {_short(text)}: invalid syntax{col}") from None
    except (RecursionError, MemoryError, ValueError):
        raise FormulaError(f"{what} is nested too deeply (at most {MAX_DEPTH} levels)") from None
    _vet(tree, what, max_nodes)
    return _Builder(variable, source, what), tree.body


def _short(text, n=60):
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def _vet(tree, what, max_nodes):
    """Refuse the tree before anything is built: size, depth, node types, then names and calls."""
    nodes = []
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            nodes.append(node)  # (operator and context nodes are shared singletons: not counted)
        if len(nodes) > max_nodes:
            raise FormulaError(f"{what} is too large (more than {max_nodes} syntax nodes)")
        if depth > MAX_DEPTH:
            raise FormulaError(f"{what} is nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            raise FormulaError(f"only plain function calls like tanh(x) are allowed in a {what}, not {_dotted(node.func)}(...)")
        if not isinstance(node, _ALLOWED):
            desc = _DESCRIBE.get(type(node), type(node).__name__)
            if isinstance(node, ast.Attribute):
                desc = f"attribute access ({_dotted(node)!r}; write the bare function name, e.g. exp(x))"
            raise FormulaError(f"unsupported syntax in {what}: {desc} is not allowed")
        for child in ast.iter_child_nodes(node):
            # a chain a + b - c + ... (or * /, &, |) is one level however long: it is built iteratively
            same = isinstance(node, ast.BinOp) and child is node.left and _family(child) is not None and _family(child) == _family(node)
            stack.append((child, depth if same else depth + 1))
    extrema = 0
    for node in nodes:
        if isinstance(node, ast.Name) and (node.id.startswith("_") or node.id in _FORBIDDEN_NAMES):
            raise FormulaError(f"name {node.id!r} is not allowed in a {what}")
        if isinstance(node, ast.Constant) and not (isinstance(node.value, (int, float, str)) and not isinstance(node.value, complex)):
            raise FormulaError(f"unsupported constant {node.value!r} in {what}")
        if isinstance(node, ast.Call):
            name = node.func.id
            if name not in _KNOWN_CALLS:
                close = difflib.get_close_matches(name, FUNCTIONS, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise FormulaError(f"unknown function {name!r} in {what}{hint}")
            if name in _NARY:
                extrema += len(node.args)
                if extrema > MAX_ARGS:
                    raise FormulaError(f"{what} has too many Max/Min arguments (at most {MAX_ARGS} in all Max and Min together)")
            bad = [k.arg for k in node.keywords if not (name == "Float" and k.arg in ("precision", "dps"))]
            if bad:
                raise FormulaError(f"keyword argument {bad[0]!r} is not allowed in {name}(...)")


def _dotted(node):
    """``sympy.exp`` for an attribute chain; ``...`` stands for anything that is not a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "...")
    return ".".join(reversed(parts))


def _family(node):
    """The associative operator family of a BinOp node (chains of it are flattened)."""
    if not isinstance(node, ast.BinOp):
        return None
    return {ast.Add: "+", ast.Sub: "+", ast.Mult: "*", ast.Div: "*", ast.BitAnd: "&", ast.BitOr: "|"}.get(type(node.op))


def _is_cond(v) -> bool:
    # a Symbol is a sympy Boolean too, but not a condition
    return isinstance(v, (Relational, BooleanFunction, BooleanAtom, sympy.Contains))


def _is_expr(v) -> bool:
    return isinstance(v, sympy.Expr) and not _is_cond(v)


def _digits(n: int) -> int:
    return max(1, math.ceil(abs(n).bit_length() * 0.30103))


def _size(e) -> int:
    """Decimal digits of the rational numbers in ``e`` together (a bound on what a power of it costs)."""
    return sum(_digits(r.p) + _digits(r.q) for r in e.atoms(sympy.Rational)) or 1


def _check_exponents(e):
    """sympy merges powers (``(x**64)**64`` is ``x**4096``): bound the merged exponents too."""
    for p in e.atoms(sympy.Pow):
        if p.exp.is_Rational and abs(p.exp) > MAX_EXPONENT:
            raise FormulaError(f"exponent {p.exp} is too large (at most {MAX_EXPONENT} in magnitude)")


_LOG10_2 = math.log10(2)
_LOG10_E = math.log10(math.e)
#: Functions with values in [-2, 2] for real and moderate complex arguments.
_BOUNDED = (sympy.sin, sympy.cos, sympy.tanh, sympy.erf, sympy.erfc, sympy.sign, sympy.Heaviside, sympy.atan, sympy.sech)


def _check_magnitude(e, where):
    """Refuse ``e`` if a number in it (not an exact rational) may lie outside 10**(+-MAX_MAGNITUDE)."""
    bad = _too_large(e)
    if bad is not None:
        raise FormulaError(f"the number {_text(bad)} in {where} is too large to evaluate "
                           f"(at most 10**{MAX_MAGNITUDE} in magnitude; exp(-a) is limited as exp(a))")


@functools.lru_cache(maxsize=4096)
def _too_large(e):
    """The innermost numeric sub-term of ``e`` whose magnitude is not bounded within the limit, or None."""
    if e.is_Rational or not e.args:
        return None
    for a in e.args:
        bad = _too_large(a)
        if bad is not None:
            return bad
    if isinstance(e, sympy.Expr) and e.is_number and not _log_hi(e) <= MAX_MAGNITUDE:
        return e
    return None


def _rational_log(p, q):
    """Upper bound on log10|p/q| (from bit lengths; -inf for p = 0)."""
    if p == 0:
        return -math.inf
    return (abs(p).bit_length() - abs(q).bit_length() + 1) * _LOG10_2


# The two bounds below assume every numeric argument of ``e`` is already bounded (``_too_large``
# asks bottom-up); what the structure does not bound is evaluated, which is then cheap.
@functools.lru_cache(maxsize=4096)
def _log_hi(e) -> float:
    """Upper bound on log10|e| for a number ``e`` (inf: no bound)."""
    r = _log_hi_raw(e)
    return math.inf if math.isnan(r) else r


@functools.lru_cache(maxsize=4096)
def _log_inv(e) -> float:
    """Upper bound on log10|1/e| for a number ``e`` (inf: no bound, e.g. e may be 0)."""
    r = _log_inv_raw(e)
    return math.inf if math.isnan(r) else r


def _log_hi_raw(e):
    if e.is_Rational:
        return _rational_log(e.p, e.q)
    if isinstance(e, sympy.Add):
        return max(_log_hi(a) for a in e.args) + math.log10(len(e.args))
    if isinstance(e, sympy.Mul):
        return _sum(_log_hi(a) for a in e.args)
    if isinstance(e, sympy.Pow):
        return _log_power(e.base, e.exp)
    if isinstance(e, (sympy.exp, sympy.sinh, sympy.cosh)):
        return _log_exp(e.args[0])
    if isinstance(e, _BOUNDED):
        return _LOG10_2
    if isinstance(e, sympy.Abs):
        return _log_hi(e.args[0])
    if isinstance(e, (sympy.floor, sympy.ceiling)):
        return max(_log_hi(e.args[0]), 0) + _LOG10_2
    if isinstance(e, (sympy.Max, sympy.Min)):
        return max(_log_hi(a) for a in e.args)
    if isinstance(e, sympy.Piecewise):
        return max(_log_hi(pair.expr) for pair in e.args)
    if isinstance(e, (sympy.log, sympy.asinh)):
        a = e.args[0]  # |ln|a|| <= ln(10) * max(log10|a|, log10|1/a|); asinh(a) <= ln(2|a| + 1)
        return math.log10(math.log(10) * max(_log_hi(a), _log_inv(a) if isinstance(e, sympy.log) else 0, 1) + 1)
    if isinstance(e, sympy.Mod):
        return _log_hi(e.args[1])
    v = _evaluated_log(e)
    return math.inf if math.isnan(v) else v + 1


def _log_inv_raw(e):
    if e.is_Rational:
        return _rational_log(e.q, e.p) if e.p else math.inf
    if isinstance(e, sympy.Mul):
        return _sum(_log_inv(a) for a in e.args)
    if isinstance(e, sympy.Pow):
        return _log_power(e.base, -e.exp)
    if isinstance(e, sympy.exp):
        return _log_exp(e.args[0])
    if isinstance(e, sympy.cosh):
        return 0.0
    v = _evaluated_log(e)
    return math.inf if math.isnan(v) else 1 - v


def _sum(bounds):
    return sum(bounds)  # nan (inf - inf) is read as "no bound" by _log_hi/_log_inv


def _log_exp(a) -> float:
    """Upper bound on |log10 exp(a)| (also bounds sinh and cosh)."""
    m = _log_hi(a)
    if m > 6:
        return math.inf
    return (abs(float(a)) if a.is_Rational else 10**m) * _LOG10_E


def _log_power(b, k) -> float:
    """Upper bound on log10|b**k|."""
    if k.is_Rational:
        return float(k) * _log_hi(b) if k > 0 else float(-k) * _log_inv(b)
    m = _log_hi(k)
    return math.inf if m > 6 else 10**m * max(_log_hi(b), _log_inv(b), 0)


def _evaluated_log(e) -> float:
    """log10|e| at 15 digits; -inf when it evaluates to 0, nan when it does not evaluate (its
    arguments are bounded, so this is cheap)."""
    try:
        v = abs(complex(e.evalf(15)))
    except (TypeError, ValueError, ArithmeticError):
        return math.nan
    if not math.isfinite(v):
        return math.nan
    return math.log10(v) if v > 0 else -math.inf


class _Builder:
    """Builds sympy objects from a vetted tree; ``expr``/``cond`` also check what came out."""

    def __init__(self, variable, source, what):
        self.variable = variable
        self.symbol = x if variable == "x" else sympy.Symbol(variable, real=True)
        self.source = source
        self.what = what
        self.digits = 0

    # entry points with a type check -----------------------------------------------------
    def expr(self, node, where):
        v = self.build(node)
        if not _is_expr(v):
            raise FormulaError(f"{where} must be a real-valued expression, not a condition ({_text(v)})")
        return v

    def cond(self, node, where):
        v = self.build(node)
        if not _is_cond(v):
            raise FormulaError(f"{where} must be a condition (a comparison, Eq, Ne, And, ...), not {_text(v)}")
        return v

    def build(self, node):
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:  # pragma: no cover - _vet refuses every other node type
            raise FormulaError(f"unsupported syntax in {self.what}: {type(node).__name__}")
        try:
            return method(node)
        except FormulaError:
            raise
        except (TypeError, ValueError, AttributeError, ZeroDivisionError) as err:
            raise FormulaError(f"cannot build {self.what} at {_short(ast.get_source_segment(self.source, node) or '?')}: {err}") from None

    # leaves -------------------------------------------------------------------------
    def _count(self, n_digits):
        self.digits += n_digits
        if self.digits > MAX_DIGITS:
            raise FormulaError(f"{self.what} has too many digits (at most {MAX_DIGITS} in all numbers together)")

    def _Constant(self, node):
        v = node.value
        if v is True or v is False:
            return sympy.true if v else sympy.false
        if isinstance(v, str):
            raise FormulaError(f"a string ({v!r}) is only allowed as the argument of Rational, Integer or Float")
        if isinstance(v, int):
            self._count(_digits(v))
            return sympy.Integer(v)
        if isinstance(v, float):
            seg = (ast.get_source_segment(self.source, node) or repr(v)).replace("_", "")
            return self._decimal(seg)
        raise FormulaError(f"unsupported constant {v!r} in {self.what}")  # complex

    def _decimal(self, literal):
        """The exact rational a decimal literal denotes (``1.6732632423543772848`` keeps every digit)."""
        if not _DECIMAL.fullmatch(literal):
            raise FormulaError(f"{literal!r} is not a decimal number")
        mantissa, _, exponent = literal.lower().partition("e")
        exp = int(exponent or 0)
        digits = sum(c.isdigit() for c in mantissa)
        if abs(exp) > MAX_DIGITS:
            raise FormulaError(f"number {literal} is too large (decimal exponent at most {MAX_DIGITS} in magnitude)")
        self._count(digits + abs(exp))
        return sympy.Rational(Fraction(literal))

    def _Name(self, node):
        name = node.id
        if name == self.variable:
            return self.symbol
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _KNOWN_CALLS:
            raise FormulaError(f"function {name!r} is used without an argument")
        if name in _SETS:
            raise FormulaError(f"the set {name} is allowed only as the second argument of Contains(e, {name})")
        return sympy.Symbol(name, real=True)

    def _Tuple(self, node):
        raise FormulaError("a tuple (a, b) is only allowed as a piece (value, condition) of Piecewise(...)")

    # operators ------------------------------------------------------------------------
    def _UnaryOp(self, node):
        op = node.op
        if isinstance(op, (ast.Not, ast.Invert)):
            return sympy.Not(self.cond(node.operand, f"the operand of {'not' if isinstance(op, ast.Not) else '~'}"))
        v = self.expr(node.operand, "the operand of a sign")
        return -v if isinstance(op, ast.USub) else v

    def _BinOp(self, node):
        family = _family(node)
        if family is not None:
            # flatten the left-deep chain (x + x + ... + x) so that its length costs no recursion
            chain = []
            while _family(node) == family:
                chain.append(node)
                node = node.left
            value = self.build(node)
            for link in reversed(chain):
                value = self._binary(link.op, value, link.right)
            return value
        return self._binary(node.op, self.build(node.left), node.right)

    def _binary(self, op, left, right_node):
        if isinstance(op, (ast.BitAnd, ast.BitOr)):
            sym = "&" if isinstance(op, ast.BitAnd) else "|"
            if not _is_cond(left):
                raise FormulaError(f"each side of {sym!r} must be a condition (a comparison, Eq, Ne, And, ...), not {_text(left)}")
            b = self.cond(right_node, f"each side of {sym!r}")
            return sympy.And(left, b) if isinstance(op, ast.BitAnd) else sympy.Or(left, b)
        right = self.build(right_node)
        if isinstance(op, ast.Pow) and _is_cond(left) and _is_cond(right):
            return sympy.Xor(left, right)  # sympy prints Xor as '^', which the parser reads as '**'
        name = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}[type(op)]
        for side in (left, right):
            if not _is_expr(side):
                raise FormulaError(f"each side of {name!r} must be a real-valued expression, not a condition ({_text(side)})")
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            if right == 0:
                raise FormulaError(f"division by zero in {self.what}")
            return left / right
        return self._power(left, right)

    def _power(self, base, exp):
        for side in (base, exp):
            _check_magnitude(side, "a power")
        has_x = self.symbol.free_symbols
        if base.free_symbols & has_x and exp.free_symbols & has_x:
            raise FormulaError(f"a power whose base and exponent both contain {self.variable} is not supported")
        if exp.is_number:
            if exp.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
                raise FormulaError(f"exponent {exp} is not finite")
            if exp.is_Rational:
                if abs(exp) > MAX_EXPONENT:
                    raise FormulaError(f"exponent {exp} is too large (at most {MAX_EXPONENT} in magnitude)")
                if base.is_number and -(-abs(exp.p) // exp.q) * _size(base) > MAX_RESULT_DIGITS:
                    raise FormulaError(f"the power ({_text(base)})**{exp} is too large (at most {MAX_RESULT_DIGITS} digits)")
                if base.is_number and exp.q > 1 and _size(base) > MAX_ROOT_DIGITS:
                    raise FormulaError(f"the root ({_text(base)})**{exp} is of a number too large (at most {MAX_ROOT_DIGITS} digits)")
            elif bool(abs(exp) > MAX_EXPONENT):
                raise FormulaError(f"exponent {exp} is too large (at most {MAX_EXPONENT} in magnitude)")
        if base == 0 and exp.is_number and bool(exp < 0):
            raise FormulaError(f"division by zero in {self.what}")
        return base**exp

    def _BoolOp(self, node):
        kw = "and" if isinstance(node.op, ast.And) else "or"
        vals = [self.cond(v, f"each side of {kw!r}") for v in node.values]
        return sympy.And(*vals) if isinstance(node.op, ast.And) else sympy.Or(*vals)

    def _Compare(self, node):
        operands = [self.expr(node.left, "each side of a comparison")]
        operands += [self.expr(c, "each side of a comparison") for c in node.comparators]
        for v in operands:
            _check_magnitude(v, "a comparison")
        rels = [_COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, operands, operands[1:])]
        return rels[0] if len(rels) == 1 else sympy.And(*rels)

    # calls ------------------------------------------------------------------------------
    def _Call(self, node):
        name = node.func.id
        if name == "Piecewise":
            return self._piecewise(node)
        if name in ("Rational", "Integer", "Float"):
            return self._number(name, node)
        if name == "Contains":
            if len(node.args) != 2 or not (isinstance(node.args[1], ast.Name) and node.args[1].id in _SETS):
                raise FormulaError(f"Contains(e, set) takes an expression and one of the sets {', '.join(_SETS)}")
            v = self.expr(node.args[0], "the first argument of Contains(...)")
            _check_magnitude(v, "Contains(...)")
            return sympy.Contains(v, _SETS[node.args[1].id])
        if name in _LOGIC:
            args = [self.cond(a, f"each argument of {name}(...)") for a in node.args]
            if name == "Not" and len(args) != 1:
                raise FormulaError(f"Not(...) takes one argument, got {len(args)}")
            if name == "ITE" and len(args) != 3:
                raise FormulaError(f"ITE(if, then, else) takes three conditions, got {len(args)}")
            if not args:
                raise FormulaError(f"{name}(...) needs at least one argument")
            return _LOGIC[name](*args)
        if name == "where":
            if len(node.args) != 3:
                raise FormulaError("where(condition, value_if_true, value_otherwise) takes three arguments")
            cond = self.cond(node.args[0], "the first argument of where(...)")
            a, b = self.expr(node.args[1], "the second argument of where(...)"), self.expr(node.args[2], "the third argument of where(...)")
            for v in (a, b):
                _check_magnitude(v, "where(...)")
            return sympy.Piecewise((a, cond), (b, True))
        args = [self.expr(a, f"each argument of {name}(...)") for a in node.args]
        for v in args:  # before sympy's constructor, which may compute the number to decide a sign
            _check_magnitude(v, f"{name}(...)")
        if name in _RELATIONS:
            if len(args) != 2:
                raise FormulaError(f"{name}(a, b) takes two arguments, got {len(args)}")
            return _RELATIONS[name](*args)
        if name in _UNARY:
            if len(args) != 1:
                raise FormulaError(f"function {name!r} takes one argument, got {len(args)}")
            if name == "exp":
                self._check_exp(args[0])
            if name == "sqrt":
                self._power(args[0], sympy.Rational(1, 2))  # the same limits as **(1/2)
            return _UNARY[name](args[0])
        if name in _NARY:
            if len(args) < 2:
                raise FormulaError(f"function {name!r} takes at least two arguments")
            return _NARY[name](*args)
        if name in ("log", "ln"):
            if len(args) not in (1, 2):
                raise FormulaError(f"{name}(z) or {name}(z, base) takes one or two arguments, got {len(args)}")
            if len(args) == 2 and args[1].is_number and (args[1] == 1 or bool(args[1] <= 0)):
                raise FormulaError(f"the base of {name}(z, base) must be positive and not 1, not {args[1]}")
            return sympy.log(*args)
        if name in ("Heaviside", "heaviside"):
            if len(args) not in (1, 2):
                raise FormulaError(f"Heaviside(z) or Heaviside(z, value_at_0) takes one or two arguments, got {len(args)}")
            if len(args) == 2 and not args[1].is_number:
                raise FormulaError(f"the value at 0 in Heaviside(z, value_at_0) must be a number, not {args[1]}")
            return sympy.Heaviside(*args)
        if name == "Mod":
            if len(args) != 2:
                raise FormulaError(f"Mod(a, b) takes two arguments, got {len(args)}")
            if args[1] == 0:
                raise FormulaError(f"division by zero in {self.what} (Mod(a, 0))")
            return sympy.Mod(*args)
        raise AssertionError(name)  # pragma: no cover - _vet refuses unknown names

    def _check_exp(self, arg):
        """``exp(k*log(b))`` is evaluated to ``b**k`` by sympy: bound k the way powers are bounded."""
        for term in sympy.Add.make_args(arg):
            if term.has(sympy.log):
                coeff = term.as_coeff_Mul()[0]
                if coeff.is_Rational and abs(coeff.p) * _size(term) > MAX_RESULT_DIGITS or bool(abs(coeff) > 10 * MAX_RESULT_DIGITS):
                    raise FormulaError(f"exp({_text(arg)}) is too large to evaluate (at most {MAX_RESULT_DIGITS} digits)")

    def _piecewise(self, node):
        if not node.args:
            raise FormulaError("Piecewise(...) needs at least one piece (value, condition)")
        pairs = []
        for i, arg in enumerate(node.args, 1):
            if not isinstance(arg, ast.Tuple) or len(arg.elts) != 2:
                raise FormulaError(f"piece {i} of Piecewise(...) must be a pair (value, condition)")
            pairs.append((self.expr(arg.elts[0], f"the value of piece {i} of Piecewise(...)"),
                          self.cond(arg.elts[1], f"the condition of piece {i} of Piecewise(...)")))
            _check_magnitude(pairs[-1][0], "Piecewise(...)")
        if pairs[-1][1] is not sympy.true:
            raise FormulaError("the last piece of Piecewise(...) must be (value, True): the value everywhere else")
        return sympy.Piecewise(*pairs)

    def _number(self, name, node):
        if len(node.args) not in ((1, 2) if name == "Rational" else (1,)):
            raise FormulaError(f"{name}(...) takes {'one or two arguments' if name == 'Rational' else 'one argument'}, got {len(node.args)}")
        vals = []
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                text = arg.value.strip().replace("_", "")
                if name != "Float" and _FRACTION.fullmatch(text):
                    p, _, q = text.partition("/")
                    self._count(len(text))
                    if q and int(q) == 0:
                        raise FormulaError(f"division by zero in {name}({arg.value!r})")
                    vals.append(sympy.Rational(int(p), int(q or 1)))
                else:
                    vals.append(self._decimal(text))
            else:
                v = self.expr(arg, f"the argument of {name}(...)")
                if not v.is_Rational:
                    raise FormulaError(f"the argument of {name}(...) must be a number written in digits, not {_text(v)}")
                vals.append(v)
        if name == "Integer" and not vals[0].is_Integer:
            raise FormulaError(f"Integer(...) needs an integer, not {vals[0]}")
        if name == "Rational" and len(vals) == 2:
            if vals[1] == 0:
                raise FormulaError(f"division by zero in {self.what} (Rational(p, 0))")
            return vals[0] / vals[1]
        return vals[0]


def _text(v) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."
