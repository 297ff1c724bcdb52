"""Piecewise-analytic normal form of a formula in x, and the oracle that decides questions
about expressions that may depend on parameters.

A formula built from Max, Min, Abs, sign, Heaviside, Piecewise and analytic functions is
rewritten as a single :class:`sympy.Piecewise`, whose conditions are comparisons of x with
break points. :func:`pieces` turns it into :class:`Pieces`: ordered break points
t_1 < ... < t_m, the analytic expression on each open interval between them, and the value
at each break point.

Parameters (every free symbol other than x) stay symbolic. Whenever a question about them
must be answered — is this expression zero, which break point comes first — the
:class:`Oracle` answers it at *reference values* of the parameters and records the answer
as a condition. A derivation is then proved under the conjunction of the recorded
conditions; the engine explores the other answers as separate cases.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import sympy
from sympy import Piecewise

from activations import x

from ._budget import charge
from ._result import GroupCalcError

#: Relative size below which a high-precision evaluation counts as zero.
ZERO_TOL = sympy.Float("1e-25", 40)
#: A value at least this large (evaluated to 40 digits) witnesses a non-zero function.
WITNESS_TOL = sympy.Float("1e-15", 40)
#: Digits used for numeric witnesses.
DIGITS = 40


class Undecided(GroupCalcError):
    """A question the oracle could not settle symbolically or numerically."""


class Oracle:
    """Answers questions about expressions with parameters at reference values, and
    records each answer as a condition on the parameters.

    Parameters
    ----------
    reference : dict
        Parameter symbol -> exact reference value (used to decide questions).
    """

    def __init__(self, reference: dict | None = None, deadline=None):
        self.reference = dict(reference or {})
        self.conditions: list = []
        self.numeric_steps: list = []
        self.deadline = deadline

    # -- helpers -------------------------------------------------------------------------
    def _record(self, cond):
        if cond is sympy.true or cond is True:
            return
        if cond is sympy.false or cond is False:
            raise Undecided(f"inconsistent assumption {cond}")
        if cond not in self.conditions:
            self.conditions.append(cond)

    def at_reference(self, e):
        return e.subs(self.reference) if self.reference else e

    def value(self, e, digits=DIGITS):
        """High-precision numeric value of a constant (at the reference values)."""
        try:
            v = sympy.N(self.at_reference(e), digits)
        except (ZeroDivisionError, OverflowError, ValueError):  # mpmath on over/underflowing input
            raise Undecided(f"cannot evaluate {e}") from None
        if v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            raise Undecided(f"cannot evaluate {e}")
        re, im = v.as_real_imag()
        if abs(im) > ZERO_TOL * (1 + abs(re)):
            raise GroupCalcError(f"the formula is not real-valued (value {v})")
        return re

    def params_in(self, e):
        return {s for s in e.free_symbols if s != x}

    # -- questions -----------------------------------------------------------------------
    def is_zero(self, e) -> bool:
        """Is the constant ``e`` (free of x) zero? Records ``Eq(e, 0)`` or ``Ne(e, 0)``."""
        charge()
        e = sympy.sympify(e)
        if e == 0:
            return True
        params = self.params_in(e)
        if not params:
            if e.is_Number:
                return e == 0
            v = self.value(e)
            if abs(v) > WITNESS_TOL:
                return False
            charge(10)
            z = e.equals(0)
            if z is True or z is False:
                return bool(z)
            if _zero_in_exp_log_form(e):
                return True
            self.numeric_steps.append(f"{e} = 0 decided by a {DIGITS}-digit evaluation only")
            return abs(v) < ZERO_TOL
        v = self.value(e)
        if abs(v) > WITNESS_TOL:
            self._record(sympy.Ne(sympy.factor_terms(e), 0))
            return False
        charge(10)
        s = sympy.simplify(e)
        if s == 0:
            return True
        self._record(sympy.Eq(s, 0))
        return True

    def sign(self, e) -> int:
        """Sign of the constant ``e`` at the reference values; records the condition."""
        if self.is_zero(e):
            return 0
        v = self.value(e)
        params = self.params_in(e)
        if params:
            self._record(sympy.simplify(e) > 0 if v > 0 else sympy.simplify(e) < 0)
        return 1 if v > 0 else -1

    def identically_zero(self, f, lo=None, hi=None, *, tries: int = 6) -> bool:
        """Is ``f`` (a function of x) identically zero on the interval (lo, hi)?

        Symbolic simplification first; otherwise a point where f is clearly non-zero is a
        witness (with parameters, 'f(x0) != 0' is recorded as the sufficient condition).
        When neither settles it, many numeric evaluations at 40 digits decide and the step
        is marked numeric.
        """
        charge()
        f = sympy.sympify(f)
        if f == 0:
            return True
        if x not in f.free_symbols:
            return self.is_zero(f)
        try:
            if sympy.cancel(f) == 0:
                return True
        except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
            pass
        pts = sample_points(lo, hi, self, tries)
        for x0 in pts:
            e0 = f.subs(x, x0)
            try:
                v = self.value(e0)
            except Undecided:
                continue
            if abs(v) > WITNESS_TOL:
                if self.params_in(e0):
                    self._record(sympy.Ne(sympy.factor_terms(e0), 0))
                return False
        charge(10)
        try:
            if sympy.simplify(f) == 0:
                return True
        except Exception:  # noqa: BLE001
            pass
        # sympy's f.equals(0) is not used here: for a function of x it adds little to simplify
        # and can run for minutes (solve, is_constant), which would let the machine's speed
        # decide the answer; the exp/log rewrite below is bounded and deterministic.
        if _zero_in_exp_log_form(f):
            return True
        self.numeric_steps.append(f"{f} = 0 on ({lo}, {hi}) checked at {len(pts)} points to 25 digits")
        return True


def _zero_in_exp_log_form(e) -> bool:
    """Does ``e`` simplify to 0 once hyperbolic and inverse functions are written with exp
    and log (tanh(x) - 2 sigmoid(2x) + 1, asinh(x) - log(x + sqrt(x**2 + 1)))?"""
    if not e.has(sympy.sinh, sympy.cosh, sympy.tanh, sympy.coth, sympy.sech, sympy.csch, sympy.asinh, sympy.acosh, sympy.atanh, sympy.exp):
        return False
    charge(10)
    try:
        return sympy.simplify(e.rewrite(sympy.exp).rewrite(sympy.log)) == 0
    except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
        return False


def sample_points(lo, hi, oracle: Oracle, k: int):
    """``k`` exact rational points inside (lo, hi) (None = unbounded), deterministic."""
    rng = random.Random(12345)
    lo_v = None if lo is None else oracle.value(lo, 20)
    hi_v = None if hi is None else oracle.value(hi, 20)
    pts = []
    for i in range(k):
        u = sympy.Rational(rng.randint(1, 999), 1000)
        if lo_v is None and hi_v is None:
            p = sympy.Rational(rng.choice([-1, 1]) * rng.randint(1, 2900), 1000)
        elif lo_v is None:
            p = hi - (u * 3 + sympy.Rational(1, 7))
        elif hi_v is None:
            p = lo + (u * 3 + sympy.Rational(1, 7))
        else:
            p = lo + (hi - lo) * u
        pts.append(sympy.sympify(p))
    return pts


@dataclass(frozen=True)
class Pieces:
    """sigma as break points t_1 < ... < t_m, expressions on the m + 1 open intervals and
    values at the break points (all possibly symbolic in the parameters).

    ``removable`` lists (t, value) for the points inside an interval where the expression of
    the piece cannot be evaluated (0/0, as sin(x)/x at 0) but extends analytically with
    sigma(t) as its value; :func:`evaluate` returns that value there."""

    breaks: tuple
    exprs: tuple
    values: tuple
    removable: tuple = ()

    def intervals(self):
        """(lo, hi, expr) triples; lo/hi None for -oo/oo."""
        bounds = (None,) + self.breaks + (None,)
        return [(bounds[i], bounds[i + 1], self.exprs[i]) for i in range(len(self.exprs))]

    def expr_at(self, sign: int):
        """The piece at -oo (sign -1) or +oo (sign +1)."""
        return self.exprs[0] if sign < 0 else self.exprs[-1]


def rewrite_piecewise(expr):
    """Max/Min/Abs/sign/Heaviside -> one Piecewise (or an expression free of them)."""
    e = expr.rewrite(Piecewise) if expr.has(sympy.Max, sympy.Min, sympy.Abs, sympy.sign, sympy.Heaviside) else expr
    return sympy.piecewise_fold(e)


def _relational_roots(rel, oracle: Oracle):
    """The x-values where a comparison in x changes truth."""
    d = rel.lhs - rel.rhs
    if x not in d.free_symbols:
        return []
    poly = sympy.Poly(d, x) if d.is_polynomial(x) else None
    if poly is not None and poly.degree() == 1:
        return [sympy.simplify(-poly.all_coeffs()[1] / poly.all_coeffs()[0])]
    if oracle.params_in(d):
        raise GroupCalcError(f"condition {rel} must be linear in x when it involves parameters")
    roots = sympy.solveset(d, x, sympy.S.Reals)
    if not isinstance(roots, sympy.FiniteSet):
        raise GroupCalcError(f"cannot find where condition {rel} changes")
    return [r for r in roots if r.is_real and r.is_finite]


def pieces(expr, oracle: Oracle) -> Pieces:
    """Normal form of ``expr`` (see module docstring); ordering decisions go to ``oracle``."""
    charge()
    pw = rewrite_piecewise(expr)
    if not isinstance(pw, Piecewise):
        if pw.has(Piecewise):
            raise GroupCalcError(f"cannot bring {expr} to a piecewise normal form")
        return Pieces((), (pw,), ())
    rels = set()
    for _, cond in pw.args:
        if cond in (True, sympy.true):
            continue
        rels |= {r for r in cond.atoms(sympy.core.relational.Relational)}
    pts = []
    for r in rels:
        for t in _relational_roots(r, oracle):
            pts.append(t)
    # order break points at the reference values, merging coincident ones
    uniq = []
    for t in pts:
        if not any(oracle.is_zero(t - u) for u in uniq):
            uniq.append(t)
    uniq.sort(key=lambda t: oracle.value(t))
    for t1, t2 in zip(uniq, uniq[1:]):
        oracle.sign(t2 - t1)
    breaks = tuple(uniq)

    def branch(point):
        for e, cond in pw.args:
            try:
                c = cond.subs(x, point)
                c = c.subs(oracle.reference) if oracle.reference else c
                c = sympy.simplify(c) if c not in (True, False, sympy.true, sympy.false) else c
            except TypeError:  # sympy refuses comparisons it cannot decide
                raise GroupCalcError(f"cannot decide the condition {cond} at x = {point}") from None
            if c in (True, sympy.true):
                return e
            if c not in (False, sympy.false):
                raise GroupCalcError(f"cannot decide the condition {cond} at x = {point}")
        raise GroupCalcError(f"the formula is not defined at x = {point}")

    reps = []
    if not breaks:
        reps = [sympy.Integer(0)]
    else:
        reps.append(breaks[0] - 1)
        reps += [(a + b) / 2 for a, b in zip(breaks, breaks[1:])]
        reps.append(breaks[-1] + 1)
    exprs = tuple(branch(p) for p in reps)
    values = tuple(branch(t).subs(x, t) for t in breaks)
    return Pieces(breaks, exprs, values)


def merge_spurious(p: Pieces, oracle: Oracle) -> Pieces:
    """Drop break points where sigma is analytic (same expression both sides, matching value)."""
    from ._limits import analytic_at

    breaks, exprs, values = list(p.breaks), list(p.exprs), list(p.values)
    removable = list(p.removable)
    i = 0
    while i < len(breaks):
        left, right, t = exprs[i], exprs[i + 1], breaks[i]
        lo = breaks[i - 1] if i > 0 else None
        try:  # compare on the left interval, where the left piece is defined
            same = oracle.identically_zero(left - right, lo, t)
        except GroupCalcError:  # the right piece is not real there: a different function
            same = False
        # the value must be that of the analytic extension across t (a removable point such
        # as sin(x)/x at 0 counts; x*sin(1/x) or x*log(x**2) at 0 does not)
        ext = analytic_at(left, t, oracle) if same else None
        if ext is not None and oracle.is_zero(values[i] - ext):
            if left.subs(x, t).has(sympy.nan, sympy.zoo):
                removable.append((t, values[i]))
            del breaks[i], values[i], exprs[i + 1]
        else:
            i += 1
    return Pieces(tuple(breaks), tuple(exprs), tuple(values), tuple(removable))


def evaluate(p: Pieces, point, oracle: Oracle):
    """sigma(point) for an exact number ``point`` (parameters symbolic)."""
    for t, v in zip(p.breaks + tuple(t for t, _ in p.removable), p.values + tuple(v for _, v in p.removable)):
        if oracle.is_zero(t - point):
            return v
    for lo, hi, e in p.intervals():
        if (lo is None or oracle.sign(point - lo) > 0) and (hi is None or oracle.sign(hi - point) > 0):
            return e.subs(x, point)
    raise GroupCalcError(f"internal: no piece contains {point}")
