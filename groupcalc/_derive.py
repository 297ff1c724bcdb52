"""`derive`: from an activation (name or formula) to a :class:`Derivation` with cases.

Parameters stay symbolic. The oracle answers questions about them at reference values
(the defaults) and records the answers as conditions; the derivation is proved under them.
Each recorded condition is then explored: a special value (``p = v`` where a recorded
``p != v`` fails) is substituted and derived again, and the other side of a recorded
inequality is derived from a reference point there. Cases with the same answer are merged.
"""

from __future__ import annotations

import time

import sympy

import activations
from activations import Activation, Parameter, x

from . import _budget
from ._explore import CHECK_TOL, EXPLORE_RESERVE, MAX_SPECIAL_OPS, _check_real, _Explorer, _plain_symbols, extend_by_continuity  # noqa: F401
from ._result import Derivation, GroupCalcError

#: Default wall-clock guard of :func:`derive`, in seconds. The answer is limited by work
#: (:data:`DEFAULT_WORK`); this guard only stops single sympy calls that run for long.
DEFAULT_TIMEOUT = 120.0
#: Default work budget of :func:`derive`, in steps (see :mod:`groupcalc._budget`).
DEFAULT_WORK = _budget.DEFAULT_STEPS

_ASSUMPTIONS = {
    "real": dict(real=True),
    "positive": dict(positive=True),
    "nonnegative": dict(nonnegative=True),
    "nonzero": dict(real=True, nonzero=True),
    "positive_integer": dict(integer=True, positive=True),
}


def resolve(activation) -> tuple[str, Activation]:
    """A catalogue name, a formula string, a sympy expression or an :class:`Activation`."""
    if isinstance(activation, Activation):
        return activation.name, activation
    if isinstance(activation, sympy.Expr):
        expr = activation
        label = str(expr)
    elif isinstance(activation, str):
        try:
            act = activations.get(activation)
            return act.name, act
        except KeyError as err:
            looks_like_name = activation.strip()[:1].isalpha() and activation.strip().replace("_", "").isalnum() and activation.strip() != "x"
            try:
                expr = activations.parse_formula(activation)
            except activations.FormulaError as ferr:
                if looks_like_name:
                    raise GroupCalcError(str(err.args[0])) from None
                raise GroupCalcError(str(ferr)) from None
            if looks_like_name and x not in expr.free_symbols:
                raise GroupCalcError(str(err.args[0])) from None
            label = activation.strip()
    else:
        raise GroupCalcError(f"Argument 'activation' must be a name, a formula or a sympy expression, not {type(activation).__name__}.")
    if not expr.free_symbols - {x} and x not in expr.free_symbols and not expr.is_number:
        raise GroupCalcError(f"formula {label!r} is not an expression in x")
    others = sorted((s for s in expr.free_symbols if s != x), key=lambda s: s.name)
    refs = [sympy.Rational(13, 10), sympy.Rational(7, 10), sympy.Rational(17, 10), sympy.Rational(3, 10)]
    params = tuple(Parameter(s.name, refs[i % len(refs)] + i // len(refs), "real") for i, s in enumerate(others))
    expr = expr.subs({s: sympy.Symbol(s.name, real=True) for s in others})
    return label, Activation(label, expr, params, reference="user formula")


def derive(activation, params: dict | None = None, *, timeout: float | None = DEFAULT_TIMEOUT,
           work: int | None = DEFAULT_WORK) -> Derivation:
    """Derive the intertwiner group of an activation.

    Parameters
    ----------
    activation : str, sympy.Expr or Activation
        A catalogue name (``"relu"``), a formula in ``x`` (``"x*tanh(x)"``) or an expression.
    params : dict, optional
        Values for some or all parameters; the others stay symbolic and the answer is a
        list of cases with conditions on them.
    timeout : float or None
        Wall-clock guard in seconds (any thread). When it stops the derivation, the answer
        is ``"unknown"`` with what was established and the certificate says that the
        machine's speed decided it; such answers should not be cached.
    work : int or None
        Work budget in steps (oracle questions and simplifications, counted). The same
        formula and budget give the same answer on an idle and on a busy machine; when the
        budget is spent the remaining cases are ``"unknown"``.

    Returns
    -------
    Derivation

    Examples
    --------
    >>> d = derive("tanh")
    >>> d.status, d.generic.scalings.describe()
    ('proved', '{1, -1}')
    >>> sorted(str(c.condition) for c in derive("leaky_relu").cases)
    ['Eq(negative_slope, -1)', 'Eq(negative_slope, 1)', 'Ne(negative_slope, -1) & Ne(negative_slope, 1)']

    A family of special values is one case (sigma(I_n) is singular for n = -1/c):

    >>> [(str(c.condition), c.singular_n) for c in derive("x**3 + c").cases]
    [('Ne(c, 0) & ~Contains(-1/c, Naturals)', ()), ('Contains(-1/c, Naturals)', (-1/c,)), ('Eq(c, 0)', ())]

    Too little work gives ``"unknown"`` with only what was established:

    >>> c = derive("relu", work=3).cases[0]
    >>> c.status, c.singular_n, c.group
    ('unknown', None, 'contains the permutation matrices; otherwise unknown')
    """
    label, act = resolve(activation)
    try:
        given = act.bind(**(params or {})) if params else {}
    except ValueError as err:
        raise GroupCalcError(str(err)) from None
    if params:
        given = {k: v for k, v in given.items() if k in params}
    expr = act.formula(**given)
    if expr.has(sympy.I) or expr.has(sympy.zoo, sympy.nan):
        raise GroupCalcError(f"formula {label!r} is not real-valued")
    free = [p for p in act.parameters if p.name not in given]
    syms = {p.name: sympy.Symbol(p.name, **_ASSUMPTIONS[p.domain]) for p in free}
    expr = expr.subs({sympy.Symbol(n, real=True): s for n, s in syms.items()})
    domain = [p.condition().subs(p.symbol, syms[p.name]) for p in free]
    for c in act.constraints:
        c2 = c.subs({sympy.Symbol(k, real=True): v for k, v in given.items()}).subs({sympy.Symbol(n, real=True): s for n, s in syms.items()})
        if c2 is sympy.false:
            raise GroupCalcError(f"parameters violate {c}")
        if c2 is not sympy.true:
            domain.append(c2)
    reference = {syms[p.name]: p.default for p in free}
    if work is not None and (isinstance(work, bool) or not isinstance(work, int) or work < 1):
        raise GroupCalcError(f"Argument 'work' must be a positive integer or None, not {work!r}.")
    if timeout is not None and not timeout > 0:
        raise GroupCalcError(f"Argument 'timeout' must be a positive number of seconds or None, not {timeout!r}.")
    explorer = _Explorer(free, syms, domain)
    spent = None
    notes = ()
    start = time.monotonic()
    try:
        # The wall clock covers the pre-processing too (sympy.N at a check point can run for
        # long), but its steps are not counted: the work figure stays that of the exploration.
        with _budget.limited(None, timeout):
            expr, notes = extend_by_continuity(expr, label)
            _check_real(expr, reference, label)
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if left is not None and left <= 0:
            raise _budget.OutOfBudget("time")
        with _budget.limited(work, left) as spent:
            root = explorer.explore(expr, [], reference)
    except _budget.OutOfBudget as err:
        root = explorer.partial_root(expr, reference, err.reason)
    except RecursionError:
        root = explorer.partial_root(expr, reference, "recursion")
    plain = {s: sympy.Symbol(n, real=True) for n, s in syms.items()}
    cases = [_plain_symbols(c, plain) for c in explorer.cases(root)]
    return Derivation(label, act.expr, tuple(p.name for p in act.parameters if p.name not in given), tuple(cases),
                      work=spent.used if spent is not None else 0, notes=notes)
