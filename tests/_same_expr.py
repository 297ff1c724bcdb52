"""Bounded equality of sympy expressions and conditions (the round-trip tests' comparison).

``same_expr(a, b)`` decides whether two real expressions are the same function without ever
letting sympy run unbounded. The comparison it replaces, ``simplify(a - b) == 0``, hung a CI
run of the round-trip property test: simplify cannot cancel a coefficient distributed over a
Piecewise (``2*(P + 1)`` against ``2*P + 2``), so the test failed on a correct round trip,
and hypothesis then shrank the example with hundreds more simplify calls (a run of 300
examples: 88-134 s instead of 15 s; it also raised TypeError on ``x > E`` pieces). Now:

1. structurally: ``a == b``, or the same head with the same arguments, recursively, so that
   piecewise conditions are compared as conditions (:func:`same_cond`);
2. numerically: ``a`` and ``b`` are evaluated directly by the small mpmath evaluator below
   (no sympy ``subs`` or ``evalf``, whose exact evaluation can itself hang) at fixed points:
   exact dyadic values of x, among them the special points 0, +-1/2, +-1, +-2, 3, and of the
   parameters, each at two working precisions. A residual that is the same number (to 10
   digits) at both precisions and not below ``10**-(AGREE_DIGITS + 3 D)`` relative (D: the
   digits of the longest number in the formulas) proves the expressions differ; a residual
   below it at at least ``MIN_POINTS`` points and a difference nowhere is taken as equality
   (random numeric testing, as sympy's ``Expr.equals`` does). Further points lie on the
   boundaries of the pieces (where a relation is an equality, :func:`_boundary_points`). A
   point is skipped when a value there is too large to compute (``exp`` of more than
   ``10**6``), not real, or within rounding of a jump (floor, sign, Heaviside, a comparison);
3. only when too few points decide: ``simplify`` under a wall-clock budget of
   ``SIMPLIFY_SECONDS`` (:func:`groupcalc._budget.limited`), shared by all the fallbacks of
   one call (so one call is bounded, however many arguments it compares);
4. otherwise :class:`Undecided`, an ``AssertionError`` naming both formulas: a comparison that
   cannot be decided fails the test. It never counts as "different" either, so that
   ``assert not same_expr(...)`` cannot pass on it.

The numeric step cannot see a difference confined to a set of measure zero that is neither
a special point nor on a boundary linear in one symbol (``Eq(x**4, 2)`` turned into
``Eq(x**4, 3)``).

>>> from activations import x
>>> same_expr(2 * (sympy.exp(x) + 1), 2 * sympy.exp(x) + 2), same_expr(x, x + sympy.Rational(1, 10**40))
(True, False)
"""

from __future__ import annotations

import contextlib
import random
import time

import mpmath
import sympy
from sympy.core.relational import Relational
from sympy.logic.boolalg import BooleanAtom, BooleanFunction

from groupcalc import _budget

__all__ = ["Undecided", "is_condition", "modest_number", "same_cond", "same_expr"]

#: Relative residual (in digits) below which two values agree at a point, for expressions
#: whose numbers have one digit. Each digit of the longest numerator or denominator adds
#: three: changing a coefficient p/q into p'/q' (D digits each) changes it by at least
#: 10**(-3 D) relative.
AGREE_DIGITS = 30
#: The two working precisions, in digits beyond the agreement digits: a point decides only
#: when both give the same verdict.
EXTRA_DIGITS = (20, 60)
#: Longest number (digits) that raises the precision; longer ones count as this long.
MAX_NUMBER_DIGITS = 400
#: Points that must agree (and none differ) for the numeric step to decide equality.
MIN_POINTS = 8
#: Random points evaluated after the special ones.
RANDOM_POINTS = 16
#: Wall-clock budget of the symbolic fallback (seconds).
SIMPLIFY_SECONDS = 5.0
#: Relations (and Heaviside or sign arguments) whose zeros become points, and the parameter
#: settings (the first of the special points) used for each.
MAX_BOUNDARIES = 12
BOUNDARY_SETTINGS = 3
#: Largest argument of exp (and of sinh, cosh, a power) evaluated; beyond it the point is skipped.
MAX_EXP_ARG = 10**6

_SPECIAL_X = (0, sympy.Rational(1, 2), -sympy.Rational(1, 2), 1, -1, 2, -2, 3)
_SPECIAL_PARAMETERS = (1, -1, sympy.Rational(1, 2), 2, 0, -sympy.Rational(3, 2))


class Undecided(AssertionError):
    """Neither the numeric nor the budgeted symbolic comparison could decide."""


def same_expr(a, b) -> bool:
    """``a`` and ``b`` are the same expression: structurally (argument by argument), else as
    functions (numerically at many points, or by ``simplify`` within a time budget).

    Raises :class:`Undecided` when neither decides.
    """
    with _simplify_allowance():
        return _expr_eq(sympy.sympify(a), sympy.sympify(b))


def same_cond(a, b) -> bool:
    """Conditions with the same structure whose relations agree (``lhs - rhs`` compared with
    :func:`same_expr`'s value comparison; ``>`` read as ``<`` with the sides swapped).

    Raises :class:`Undecided` when a relation that could match cannot be decided.
    """
    with _simplify_allowance():
        return _cond_eq(a, b)


#: (seconds, start) of simplify allowed to the outermost same_expr/same_cond call.
_allowance = [0.0, 0.0]


@contextlib.contextmanager
def _simplify_allowance():
    """All symbolic fallbacks of one public call share SIMPLIFY_SECONDS (nested calls share
    the outer allowance)."""
    if _allowance[0] > 0:
        yield
        return
    _allowance[:] = [SIMPLIFY_SECONDS, time.monotonic()]
    try:
        yield
    finally:
        _allowance[:] = [0.0, 0.0]


def is_condition(v) -> bool:
    """``v`` is a sympy condition (a relation, a boolean combination, True/False, Contains)."""
    return isinstance(v, (Relational, BooleanFunction, BooleanAtom, sympy.Contains))


def _expr_eq(a, b) -> bool:
    if a == b:
        return True
    if is_condition(a) or is_condition(b):
        return _cond_eq(a, b)
    if _args_match(a, b):
        return True
    return _values_eq(a, b)


def _args_match(a, b) -> bool:
    if a.func != b.func or not a.args or len(a.args) != len(b.args):
        return False
    try:
        return all(_arg_eq(p, q) for p, q in zip(a.args, b.args))
    except Undecided:  # an argument cannot be decided alone: the whole is compared as a function
        return False


def _arg_eq(p, q) -> bool:
    if isinstance(p, sympy.core.containers.Tuple) or type(p).__name__ == "ExprCondPair":
        return type(p) is type(q) and len(p.args) == len(q.args) and all(_arg_eq(u, v) for u, v in zip(p.args, q.args))
    return _expr_eq(p, q)


def _rel_key(r):
    """A relation as (kind, lhs - rhs) with > and >= turned into < and <=."""
    if isinstance(r, (sympy.StrictGreaterThan, sympy.GreaterThan)):
        return ("<" if isinstance(r, sympy.StrictGreaterThan) else "<=", r.rhs - r.lhs)
    if isinstance(r, (sympy.StrictLessThan, sympy.LessThan)):
        return ("<" if isinstance(r, sympy.StrictLessThan) else "<=", r.lhs - r.rhs)
    return (type(r).__name__, r.lhs - r.rhs)


def _cond_eq(a, b) -> bool:
    if a == b:
        return True
    if isinstance(a, Relational) and isinstance(b, Relational):
        if not all(isinstance(side, sympy.Expr) for side in a.args + b.args):  # Eq(x > 0, True)
            return False
        (ka, da), (kb, db) = _rel_key(a), _rel_key(b)
        if ka != kb:
            return False
        signs = (1, -1) if ka in ("Equality", "Unequality") else (1,)  # Eq(u, v) is Eq(v, u)
        return _first_true([lambda sign=sign: _values_eq(da, sign * db) for sign in signs])
    if isinstance(a, sympy.Contains) and isinstance(b, sympy.Contains):
        return a.args[1] == b.args[1] and _expr_eq(a.args[0], b.args[0])
    if type(a) is not type(b) or len(a.args) != len(b.args) or not isinstance(a, BooleanFunction):
        return False
    rest = list(b.args)
    for arg in a.args:  # match the arguments in any order
        index = _first_index(lambda other: _cond_eq(arg, other), rest)
        if index is None:
            return False
        rest.pop(index)
    return True


def _first_true(checks) -> bool:
    """True when one check is; False when all are False; else the first Undecided."""
    undecided = None
    for check in checks:
        try:
            if check():
                return True
        except Undecided as err:
            undecided = undecided or err
    if undecided is not None:
        raise undecided
    return False


def _first_index(match, items):
    """Index of the first item that matches, None when none does; Undecided when none matches
    but one could not be decided."""
    undecided = None
    for i, item in enumerate(items):
        try:
            if match(item):
                return i
        except Undecided as err:
            undecided = undecided or err
    if undecided is not None:
        raise undecided
    return None


def modest_number(e, digits: int = 100) -> bool:
    """``e`` has no free symbols, and it and every subexpression is real, finite and, unless
    an exact rational, below ``10**digits`` in magnitude (evaluated at 150 digits by the
    evaluator below): sympy then needs at most about ``digits`` digits to decide its sign or
    integer part."""
    if e.free_symbols:
        return False
    with mpmath.workdps(150):  # enough for sin of a 40-digit number (sympy's is fast too)
        try:
            _At({}, 150, limit=mpmath.mpf(10) ** digits)(e)
        except _Skip:
            return False
    return True


# Values --------------------------------------------------------------------------------------
def _values_eq(a, b) -> bool:
    """``a`` and ``b`` as functions of their free symbols: numerically, else symbolically."""
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False
    agree, skipped = _numeric(a, b)
    if agree is False:
        return False
    if agree >= MIN_POINTS:
        return True
    why = f"the numbers decided at only {agree} points (skipped: {skipped})"
    left = _allowance[0] - (time.monotonic() - _allowance[1])
    if left <= 0:
        raise Undecided(f"cannot decide whether {a} == {b}: {why}; the {SIMPLIFY_SECONDS} s for simplify are spent")
    try:
        with _budget.limited(seconds=left):
            d = a - b
            d = sympy.piecewise_fold(d) if d.has(sympy.Piecewise) else d
            if sympy.simplify(d) == 0:
                return True
        why += "; simplify did not reach 0"
    except _budget.OutOfBudget:
        why += f"; simplify did not finish within {SIMPLIFY_SECONDS} s"
    except (TypeError, ValueError, NotImplementedError, RecursionError) as err:  # sympy gives up on some Piecewise
        why += f"; simplify failed ({type(err).__name__}: {err})"
    raise Undecided(f"cannot decide whether {a} == {b}: {why}")


def _points(symbols):
    """The evaluation points: exact dyadic rationals (exact in binary floating point)."""
    rng = random.Random(20261202)
    params = [s for s in symbols if s.name != "x"]
    out = []
    for i in range(len(_SPECIAL_X) + RANDOM_POINTS):
        point = {}
        for j, s in enumerate(params):
            special = i < len(_SPECIAL_PARAMETERS) and (i + j) % 2 == 0
            value = _SPECIAL_PARAMETERS[(i + j) % len(_SPECIAL_PARAMETERS)]
            point[s] = value if special else sympy.Rational(rng.randint(-256, 256), 64)
        for s in symbols:
            if s.name == "x":
                point[s] = _SPECIAL_X[i] if i < len(_SPECIAL_X) else sympy.Rational(rng.randint(-512, 512), 64)
        out.append(point)
    return out


def _digits(*exprs) -> int:
    """Digits of the longest numerator or denominator in ``exprs`` (at most MAX_NUMBER_DIGITS)."""
    n = max((max(len(str(abs(r.p))), len(str(r.q))) for e in exprs for r in e.atoms(sympy.Rational)), default=1)
    return min(n, MAX_NUMBER_DIGITS)


class _Root:
    """The value of a symbol where ``c1 * s + c0 == 0`` (c0, c1 free of s), computed at the
    evaluation's precision from the other symbols' values."""

    def __init__(self, c0, c1):
        self.c0, self.c1 = c0, c1


def _boundary_points(exprs, base):
    """Points on the boundaries of the pieces: where a relation, or the argument of a
    Heaviside or sign, is 0 and linear in one symbol (``x > pi``, ``Eq(alpha, 3/7)``). The
    special and random points almost never lie there, and a changed boundary (``<`` read as
    ``<=``, ``Eq(x, pi)`` as ``Eq(x, 3)``) changes the value only there."""
    zeros = set()
    for e in exprs:
        zeros |= {r.lhs - r.rhs for r in e.atoms(Relational)
                  if isinstance(r.lhs, sympy.Expr) and isinstance(r.rhs, sympy.Expr)}
        zeros |= {f.args[0] for f in e.atoms(sympy.Heaviside, sympy.sign)}
    out = []
    for d in sorted(zeros, key=sympy.default_sort_key)[:MAX_BOUNDARIES]:
        if sympy.count_ops(d) > 40:  # (keeps Poly cheap)
            continue
        for s in sorted(d.free_symbols, key=lambda s: s.name):
            if not d.is_polynomial(s):
                continue
            try:
                poly = sympy.Poly(d, s)
            except sympy.polys.polyerrors.BasePolynomialError:
                continue
            if poly.degree() == 1:
                c1, c0 = poly.all_coeffs()
                out += [{**point, s: _Root(c0, c1)} for point in base[:BOUNDARY_SETTINGS]]
    return out


def _numeric(a, b):
    """(points where a and b agree, or False when a point proves them different; skip reasons)."""
    agree, skipped = 0, {}
    digits = AGREE_DIGITS + 3 * _digits(a, b)
    threshold = mpmath.mpf(10) ** -digits
    points = _points(sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name))
    for point in points + _boundary_points((a, b), points):
        residuals, scale = [], 1
        try:
            for dps in (digits + EXTRA_DIGITS[0], digits + EXTRA_DIGITS[1]):
                with mpmath.workdps(dps):
                    at = _At(point, dps)
                    va, vb = at(a), at(b)
                    if isinstance(va, bool) or isinstance(vb, bool):
                        raise _Skip("a condition where a value was expected")
                    residuals.append(abs(va - vb))
                    scale = max(mpmath.mpf(1), abs(va), abs(vb))
        except _Skip as err:
            skipped[str(err)] = skipped.get(str(err), 0) + 1
            continue
        low, high = residuals
        if high <= scale * threshold:
            agree += 1
        elif abs(low - high) <= high * mpmath.mpf(10) ** -10:
            return False, skipped  # the same clear residual at both precisions
        else:
            skipped["an unstable residual"] = skipped.get("an unstable residual", 0) + 1
    return agree, skipped


class _Skip(Exception):
    """This point cannot decide (the message says why)."""


class _At:
    """Values of expressions at one point at the current mpmath precision (``dps`` digits).

    Numbers are real mpf; conditions are Python bools. Anything this evaluator cannot do
    reliably raises :class:`_Skip`.
    """

    def __init__(self, point, dps, limit=None):
        self.limit = limit  # largest magnitude of any value (None: up to the rules' own bounds)
        self.tiny = mpmath.mpf(10) ** -(dps // 2)
        self.bits = mpmath.mp.prec + 10
        self.memo = {}
        self.point = {s: mpmath.mpf(v.p) / v.q for s, v in ((s, sympy.Rational(v)) for s, v in point.items()
                                                             if not isinstance(v, _Root))}
        for s, root in point.items():
            if isinstance(root, _Root):
                c1 = self(root.c1)
                if c1 == 0:
                    raise _Skip("a boundary that does not exist there")
                self.point[s] = -self(root.c0) / c1
                self.memo.clear()  # values computed before s had one

    def __call__(self, e):
        try:
            return self.memo[e]
        except KeyError:
            pass
        v = self._value(e)
        if isinstance(v, mpmath.mpc) or (not isinstance(v, bool) and not mpmath.isfinite(v)):
            raise _Skip("a value that is not a finite real")
        if self.limit is not None and not e.is_Rational and not isinstance(v, bool) and abs(v) > self.limit:
            raise _Skip("a value too large")
        self.memo[e] = v
        return v

    def _value(self, e):
        if e.is_Symbol:
            return self.point[e]
        if e.is_Rational:
            return mpmath.mpf(e.p) / e.q
        if e.is_Float:
            return mpmath.mpf(e._mpf_)
        if e.is_NumberSymbol:
            return mpmath.mpf(e._as_mpf_val(self.bits))
        if isinstance(e, BooleanAtom):
            return bool(e)
        rule = _RULES.get(e.func)
        if rule is None:
            raise _Skip(f"no numeric rule for {e.func.__name__}")
        return rule(self, e)

    def nonzero_sign(self, d, scale=1):
        """The sign of ``d`` (0 only when exactly 0); a value within rounding of 0 is skipped."""
        if d == 0:
            return 0
        if abs(d) <= self.tiny * max(mpmath.mpf(1), scale):
            raise _Skip("a jump within rounding")
        return 1 if d > 0 else -1

    def compare(self, e):
        lhs, rhs = self(e.lhs), self(e.rhs)
        return self.nonzero_sign(lhs - rhs, max(abs(lhs), abs(rhs)))


def _bounded(limit):
    def check(v):
        if abs(v) > limit:
            raise _Skip("a value too large to compute")
        return v
    return check


def _exp_arg(v):
    if v > MAX_EXP_ARG:
        raise _Skip("a value too large to compute")
    return v


def _periodic_arg(v):
    if abs(v) > mpmath.mpf(10) ** (mpmath.mp.dps // 3):  # its remainder mod pi is not known
        raise _Skip("a value too large to compute")
    return v


def _positive(v):
    if v <= 0:
        raise _Skip("a value that is not a finite real")
    return v


def _pow(at, e):
    base, exp = at(e.base), e.exp
    if exp.is_Integer:
        if base == 0 and exp < 0:
            raise _Skip("a value that is not a finite real")
        return base ** int(exp)
    t = at(exp)
    if base == 0:
        if t > 0:
            return base
        raise _Skip("a value that is not a finite real")
    _exp_arg(abs(t * mpmath.log(abs(base))))
    return mpmath.power(_positive(base), t)  # a negative base to a non-integer power is not real


def _floor(at, v, up=False):
    n = mpmath.ceil(v) if up else mpmath.floor(v)
    if v != n and min(v - mpmath.floor(v), mpmath.ceil(v) - v) <= at.tiny * max(mpmath.mpf(1), abs(v)):
        raise _Skip("a jump within rounding")
    return n


def _heaviside(at, e):
    s = at.nonzero_sign(at(e.args[0]))
    if s == 0:
        return at(e.args[1]) if len(e.args) > 1 else mpmath.mpf(1) / 2
    return mpmath.mpf(1 if s > 0 else 0)


def _piecewise(at, e):
    for expr, cond in e.args:
        if at(cond):
            return at(expr)
    raise _Skip("a point outside every piece")


def _unary(f, check=None):
    def rule(at, e):
        v = at(e.args[0])
        return f(check(v) if check else v)
    return rule


_LESS = {sympy.StrictLessThan: lambda s: s < 0, sympy.LessThan: lambda s: s <= 0,
         sympy.StrictGreaterThan: lambda s: s > 0, sympy.GreaterThan: lambda s: s >= 0,
         sympy.Eq: lambda s: s == 0, sympy.Ne: lambda s: s != 0}

_RULES = {
    sympy.Add: lambda at, e: mpmath.fsum(at(t) for t in e.args),
    sympy.Mul: lambda at, e: mpmath.fprod(at(t) for t in e.args),
    sympy.Pow: _pow,
    sympy.exp: _unary(mpmath.exp, _exp_arg),
    sympy.log: _unary(mpmath.log, _positive),
    sympy.sin: _unary(mpmath.sin, _periodic_arg),
    sympy.cos: _unary(mpmath.cos, _periodic_arg),
    sympy.tan: _unary(mpmath.tan, _periodic_arg),
    sympy.sinh: _unary(mpmath.sinh, _bounded(MAX_EXP_ARG)),
    sympy.cosh: _unary(mpmath.cosh, _bounded(MAX_EXP_ARG)),
    sympy.tanh: _unary(mpmath.tanh),
    sympy.atan: _unary(mpmath.atan),
    sympy.asinh: _unary(mpmath.asinh),
    sympy.erf: _unary(mpmath.erf),
    sympy.erfc: _unary(mpmath.erfc),
    sympy.Abs: _unary(abs),
    sympy.re: _unary(lambda v: v),
    sympy.im: _unary(lambda v: mpmath.mpf(0)),
    sympy.sign: lambda at, e: mpmath.mpf(at.nonzero_sign(at(e.args[0]))),
    sympy.Heaviside: _heaviside,
    sympy.floor: lambda at, e: _floor(at, at(e.args[0])),
    sympy.ceiling: lambda at, e: _floor(at, at(e.args[0]), up=True),
    sympy.frac: lambda at, e: at(e.args[0]) - _floor(at, at(e.args[0])),
    sympy.Max: lambda at, e: max(at(t) for t in e.args),
    sympy.Min: lambda at, e: min(at(t) for t in e.args),
    sympy.Piecewise: _piecewise,
    sympy.And: lambda at, e: all(at(t) for t in e.args),
    sympy.Or: lambda at, e: any(at(t) for t in e.args),
    sympy.Not: lambda at, e: not at(e.args[0]),
    **{rel: (lambda test: lambda at, e: test(at.compare(e)))(test) for rel, test in _LESS.items()},
}
