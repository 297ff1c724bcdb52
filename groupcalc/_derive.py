"""`derive`: from an activation (name or formula) to a :class:`Derivation` with cases.

Parameters stay symbolic. The oracle answers questions about them at reference values
(the defaults) and records the answers as conditions; the derivation is proved under them.
Each recorded condition is then explored: a special value (``p = v`` where a recorded
``p != v`` fails) is substituted and derived again, and the other side of a recorded
inequality is derived from a reference point there. Cases with the same answer are merged.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np
import sympy

import activations
from activations import Activation, Parameter, x

from ._engine import Analysis, analyse
from ._pieces import Oracle, Undecided
from ._result import Case, Derivation, GroupCalcError, Scalings, a

#: Default time budget of :func:`derive`, in seconds.
DEFAULT_TIMEOUT = 5.0
#: Tolerance of the numeric check of claimed elements (relative).
CHECK_TOL = 1e-8

_ASSUMPTIONS = {
    "real": dict(real=True),
    "positive": dict(positive=True),
    "nonnegative": dict(nonnegative=True),
    "nonzero": dict(real=True, nonzero=True),
    "positive_integer": dict(integer=True, positive=True),
}


class _Timeout(BaseException):  # not an Exception: broad handlers inside sympy must not swallow it
    pass


@contextlib.contextmanager
def _time_limit(seconds):
    """Raise :class:`_Timeout` after ``seconds`` (SIGALRM in the main thread; otherwise the
    deadline is checked between steps only)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


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


def derive(activation, params: dict | None = None, *, timeout: float | None = DEFAULT_TIMEOUT) -> Derivation:
    """Derive the intertwiner group of an activation.

    Parameters
    ----------
    activation : str, sympy.Expr or Activation
        A catalogue name (``"relu"``), a formula in ``x`` (``"x*tanh(x)"``) or an expression.
    params : dict, optional
        Values for some or all parameters; the others stay symbolic and the answer is a
        list of cases with conditions on them.
    timeout : float or None
        Seconds before the answer becomes ``"unknown"`` with what was established.

    Returns
    -------
    Derivation

    Examples
    --------
    >>> d = derive("tanh")
    >>> d.generic.scalings.describe()
    '{1, -1}'
    >>> [str(c.condition) for c in derive("leaky_relu").cases]  # doctest: +NORMALIZE_WHITESPACE
    ['Ne(negative_slope, -1) & Ne(negative_slope, 1)', 'Eq(negative_slope, -1)', 'Eq(negative_slope, 1)']
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
    _check_real(expr, reference, label)
    explorer = _Explorer(free, syms, domain, time.monotonic() + (timeout if timeout else 1e9))
    try:
        with _time_limit(timeout):
            root = explorer.explore(expr, [], reference)
    except _Timeout:
        root = explorer.partial_root(expr, reference)
    except RecursionError:
        root = explorer.partial_root(expr, reference)
    plain = {s: sympy.Symbol(n, real=True) for n, s in syms.items()}
    cases = [_plain_symbols(c, plain) for c in explorer.cases(root)]
    return Derivation(label, act.expr, tuple(p.name for p in act.parameters if p.name not in given), tuple(cases))


def _check_real(expr, reference, label):
    """Reject formulas that are not real-valued or not defined on all of R."""
    e = expr.subs(reference)
    pts = [sympy.Integer(0), sympy.Integer(1), sympy.Integer(-1), sympy.Rational(1, 3), sympy.Rational(-7, 3),
           sympy.Rational(5, 2), sympy.Rational(-1, 2), sympy.Integer(4), sympy.Integer(-4)]
    for p in pts:
        try:
            v = sympy.N(e.subs(x, p), 20)
        except Exception:  # noqa: BLE001 - sympy raises many types on exotic input
            raise GroupCalcError(f"formula {label!r} cannot be evaluated at x = {p}") from None
        if v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo) or not v.is_number:
            raise GroupCalcError(f"formula {label!r} is not defined at x = {p}")
        if abs(sympy.im(v)) > 1e-15:
            raise GroupCalcError(f"formula {label!r} is not real-valued (at x = {p} it is {sympy.N(v, 6)})")
    # poles of rational parts on the real line
    num, den = sympy.fraction(sympy.together(e.rewrite(sympy.Piecewise) if e.has(sympy.Abs, sympy.Max, sympy.Min, sympy.sign, sympy.Heaviside) else e))
    if den.is_polynomial(x) and x in den.free_symbols:
        for r in sympy.Poly(den, x).real_roots():
            if sympy.simplify(num.subs(x, r)) != 0:
                raise GroupCalcError(f"formula {label!r} is not defined at x = {r}")


class _Node:
    def __init__(self, conds, analysis, expr, reference, unknown=False):
        self.conds = list(conds)  # the fixed conditions that led here (special values)
        self.analysis = analysis
        self.expr = expr
        self.reference = dict(reference)
        self.unknown = unknown
        self.recorded: list = []  # conditions the derivation assumed (normalised atoms)
        self.case: Case | None = None


def _atoms(cond):
    if cond is sympy.true or cond is True:
        return []
    return list(cond.args) if isinstance(cond, sympy.And) else [cond]


class _Explorer:
    """Derive at the reference values, then at each special value the derivation assumed away."""

    def __init__(self, free, syms, domain, deadline):
        self.free = free
        self.syms = syms
        self.domain = domain
        self.deadline = deadline
        self.current: _Node | None = None
        self.nodes: list = []

    def _in_domain(self, subs):
        for prm in self.free:
            v = subs.get(self.syms[prm.name])
            if v is not None and v.is_number and not prm.admits(v):
                return False
        return all(c.subs(subs) is not sympy.false for c in self.domain)

    def run(self, node: _Node) -> _Node:
        oracle = Oracle(node.reference)
        self.current = node
        try:
            node.analysis = analyse(node.expr, oracle)
        except Undecided as err:
            node.analysis = Analysis(certificate=[f"The derivation could not decide a step: {err}"])
            node.unknown = True
        atoms = []
        for c in oracle.conditions:
            atoms += _atoms(_normalise(c, self.syms))
        node.recorded = [t for t in dict.fromkeys(atoms) if t is not sympy.true]
        node.case = self._case(node)
        self.nodes.append(node)
        return node

    def explore(self, expr, fixed, reference) -> _Node:
        root = self.run(_Node(fixed, Analysis(), expr, reference))
        if not self.free:
            return root
        todo = [root]
        # the reference may sit on a special value (an equality was recorded): look at a generic point too
        for atom in root.recorded:
            if isinstance(atom, sympy.Eq):
                p = sorted(atom.free_symbols, key=lambda s: s.name)[0]
                for shift in (sympy.Rational(1, 3), sympy.Rational(-1, 3), sympy.Rational(5, 4)):
                    ref = {**reference, p: reference[p] + shift}
                    if self._in_domain(ref):
                        todo.append(self.run(_Node(fixed, Analysis(), expr, ref)))
                        break
                break
        # the other side of every recorded one-parameter inequality
        for atom in list(root.recorded):
            if isinstance(atom, (sympy.StrictLessThan, sympy.StrictGreaterThan)) and len(atom.free_symbols) == 1:
                p = next(iter(atom.free_symbols))
                try:
                    bounds = [b for b in sympy.solve(atom.lhs - atom.rhs, p) if b.is_number and b.is_real]
                except Exception:  # noqa: BLE001
                    bounds = []
                for b in bounds:
                    for ref_val in (b + sympy.Rational(1, 2), b - sympy.Rational(1, 2)):
                        ref = {**reference, p: ref_val}
                        if atom.subs(ref) is sympy.false and self._in_domain(ref) and time.monotonic() < self.deadline:
                            if not any(all(t.subs(ref) is sympy.true for t in n.recorded) for n in todo):
                                todo.append(self.run(_Node(fixed, Analysis(), expr, ref)))
        # special values: p = v for every recorded p != v
        for parent in list(todo):
            keep = []
            for atom in parent.recorded:
                if time.monotonic() > self.deadline:
                    keep.append(atom)
                    continue
                if not isinstance(atom, sympy.Ne):
                    keep.append(atom)
                    continue
                p, v = atom.lhs, atom.rhs
                if not (isinstance(p, sympy.Symbol) and v.is_number) or not self._in_domain({p: v}):
                    keep.append(atom)
                    continue
                ref = {k: val for k, val in parent.reference.items() if k != p}
                child = self.run(_Node(parent.conds + [sympy.Eq(p, v)], Analysis(), parent.expr.subs(p, v), ref))
                if _signature(child.case) == _signature(parent.case) and not child.unknown:
                    self.nodes.remove(child)  # same answer at p = v: the condition p != v is not needed
                else:
                    keep.append(atom)
            parent.recorded = keep
            parent.case = self._case(parent)
        return root

    def partial_root(self, expr, reference):
        node = self.current or _Node([], Analysis(), expr, reference)
        node.unknown = True
        node.analysis.certificate.append("Time limit reached: the answer is unknown beyond the steps above.")
        if node not in self.nodes:
            node.case = self._case(node)
            self.nodes.append(node)
        return node

    # -- turning the derivations into cases --------------------------------------------
    def cases(self, root: _Node) -> list:
        built = []
        for node in self.nodes:
            cond = _clean(self.domain + node.conds + node.recorded)
            if cond is sympy.false:
                continue
            built.append((cond, node.case))
        merged: list = []
        for cond, case in built:
            sig = _signature(case)
            for i, (c2, case2) in enumerate(merged):
                if _signature(case2) == sig:
                    merged[i] = (_or(c2, cond), case2)
                    break
            else:
                merged.append((cond, case))
        return [Case(cond, c.cls, c.scalings, c.group, c.phi_n, c.singular_n, c.status, c.certificate, c.hypotheses, c.expr)
                for cond, c in merged]

    def _case(self, node: _Node) -> Case:
        an = node.analysis
        expr = node.expr
        status = "proved"
        if node.unknown or an.cls is None:
            status = "unknown"
        elif an.numeric:
            status = "verified-numerically"
        elif an.cls == "nonlinear" and not an.e14_applies:
            status = "unknown"
        cert = list(an.certificate) + [f"Settled numerically: {s}" for s in an.numeric]
        scal = an.scalings
        if an.cls == "constant":
            scal = None
        if status != "unknown" and scal is not None:
            ok, msg = _numeric_check(expr, scal, node.reference)
            cert.append(msg)
            if not ok:
                scal = Scalings("trivial", None, None, a)
                status = "unknown"
                cert.append("The numeric check failed, so every claimed scaling other than 1 is withdrawn.")
        elif an.cls is None:
            scal = Scalings("trivial", None, None, a)
            cert.append("Established in every case: G_sigma_n contains the permutation matrices (Lemma E.10).")
        group, phi_n = _describe(an.cls, scal, an.e14_applies)
        sing = an.singular_n if an.singular_n is not None else ()
        return Case(sympy.true, an.cls or "nonlinear", scal, group, phi_n, sing, status, tuple(cert), tuple(an.hypotheses),
                    sympy.sympify(expr))


def _clean(atoms):
    """And of the atoms with equalities substituted into the rest; false if inconsistent."""
    atoms = [t for t in dict.fromkeys(atoms) if t is not sympy.true]
    eqs = {t.lhs: t.rhs for t in atoms if isinstance(t, sympy.Eq) and isinstance(t.lhs, sympy.Symbol)}
    rest = []
    for t in atoms:
        if isinstance(t, sympy.Eq) and t.lhs in eqs:
            continue
        r = t.subs(eqs) if eqs else t
        if r is sympy.false:
            return sympy.false
        if r is not sympy.true:
            rest.append(t)
    return sympy.And(*[sympy.Eq(k, v) for k, v in eqs.items()], *rest)


def _plain_symbols(case: Case, plain: dict) -> Case:
    """Report parameters as the plain real symbols users type (assumptions were internal)."""
    if not plain:
        return case
    sc = case.scalings
    if sc is not None:
        sc = Scalings(sc.positive, None if sc.generator is None else sc.generator.xreplace(plain),
                      None if sc.negative is None else sc.negative.xreplace(plain), sc.phi.xreplace(plain))
    return Case(case.condition.xreplace(plain), case.cls, sc, case.group, case.phi_n, case.singular_n, case.status,
                case.certificate, case.hypotheses, None if case.expr is None else case.expr.xreplace(plain))


def _describe(cls, scal: Scalings | None, e14: bool):
    if cls == "constant":
        return ("GL_n(R): sigma(A x) = sigma(x) for every A; B must fix sigma's constant vector, so phi is not unique", None)
    if cls == "linear":
        return ("GL_n(R)", "phi(A) = A")
    if cls == "affine":
        return ("{A in GL_n(R) : A 1 = 1} (rows sum to 1)", "phi(A) = A")
    if cls is None:
        return ("contains the permutation matrices; otherwise unknown", None)
    prefix = "" if e14 else "contains "
    group = f"{prefix}P D: P a permutation, D diagonal with entries in {scal.describe()}"
    if scal.phi == a:
        phi_n = "phi(A) = A"
    elif scal.phi == 1:
        phi_n = "phi(P D) = P"
    else:
        phi_n = f"phi(P D) = P diag(phi(d_1), ..., phi(d_n)), phi(a) = {sympy.sstr(scal.phi)}"
    return group, phi_n


def _signature(case: Case):
    s = case.scalings
    return (case.cls, None if s is None else (s.positive, str(s.generator), str(s.negative), str(sympy.simplify(s.phi))),
            str(case.singular_n), case.status, case.group)


def _normalise(cond, syms):
    """``Ne(c*(p - v), 0)`` -> ``Ne(p, v)`` etc., when the condition has one parameter."""
    if isinstance(cond, (sympy.Ne, sympy.Eq)):
        e = sympy.factor_terms(cond.lhs - cond.rhs)
        if e.is_Mul:  # drop factors that cannot vanish (constants, b**p with b != 0, exp(...))
            e = sympy.Mul(*[f for f in e.args if not (f.is_nonzero or (f.is_Pow and f.base.is_nonzero and f.base.is_number))])
        params = [s for s in e.free_symbols if s != x]
        if len(params) == 1 and e.is_polynomial(params[0]):
            p = params[0]
            try:
                sols = sympy.solve(e, p)
            except Exception:  # noqa: BLE001
                return cond
            sols = [s for s in sols if s.is_real is not False]
            if not sols:
                return sympy.true
            if isinstance(cond, sympy.Ne):
                return sympy.And(*[sympy.Ne(p, s) for s in sols])
            return sympy.Or(*[sympy.Eq(p, s) for s in sols]) if len(sols) > 1 else sympy.Eq(p, sols[0])
    if isinstance(cond, (sympy.StrictGreaterThan, sympy.StrictLessThan)):
        e = cond.lhs - cond.rhs
        params = [s for s in e.free_symbols if s != x]
        if len(params) == 1:
            try:
                r = sympy.solve_univariate_inequality(cond, params[0])
                return r
            except Exception:  # noqa: BLE001
                return cond
    return cond


def _or(c1, c2):
    """``c1 | c2``, dropping ``Ne(p, v)`` from one side when the other side is ``Eq(p, v)``."""
    if c1 == c2:
        return c1
    for eq, other in ((c2, c1), (c1, c2)):
        eqs = [e for e in (eq.args if isinstance(eq, sympy.And) else (eq,)) if isinstance(e, sympy.Eq)]
        rest = [e for e in (eq.args if isinstance(eq, sympy.And) else (eq,)) if not isinstance(e, sympy.Eq)]
        if len(eqs) == 1 and isinstance(other, sympy.And):
            ne = sympy.Ne(eqs[0].lhs, eqs[0].rhs)
            if ne in other.args and all(r in other.args for r in rest):
                return sympy.And(*[t for t in other.args if t != ne])
        if len(eqs) == 1 and other.subs(eqs[0].lhs, eqs[0].rhs) is sympy.true and all(r in getattr(other, "args", ()) for r in rest):
            return other
    return sympy.Or(c1, c2)


def _numeric_check(expr, scal: Scalings, reference) -> tuple[bool, str]:
    """Check sigma(a x) = phi(a) sigma(x) in float64 for sample elements a of S."""
    from activations import lambdify_numpy

    e = expr.subs(reference) if reference else expr
    f = lambdify_numpy(e)
    phi_expr = scal.phi.subs(reference) if reference else scal.phi
    elems = [1.0]
    if scal.positive == "all":
        elems += [2.0, 0.37, 5.5]
    elif scal.positive == "discrete":
        g = float(scal.generator.subs(reference) if reference else scal.generator)
        elems += [g, 1 / g, g * g]
    if scal.negative is not None:
        m = float(scal.negative.subs(reference) if reference else scal.negative)
        elems += [m * t for t in list(elems)]
    rng = np.random.default_rng(0)
    xs = np.concatenate([np.linspace(-6, 6, 241), rng.normal(0, 3, 200)])
    worst = 0.0
    for el in elems:
        lhs = f(el * xs)
        rhs = float(sympy.re(sympy.N(phi_expr.subs(a, sympy.nsimplify(el)), 20))) * f(xs)
        scale = 1.0 + np.abs(lhs) + np.abs(rhs)
        ok = np.isfinite(lhs) & np.isfinite(rhs)
        worst = max(worst, float(np.max(np.abs(lhs - rhs)[ok] / scale[ok], initial=0.0)))
    msg = (f"Numeric check: |sigma(a x) - phi(a) sigma(x)| / (1 + |sigma(a x)| + |phi(a) sigma(x)|) <= {worst:.1e} "
           f"for a in {[round(v, 4) for v in elems]} at {len(xs)} points"
           + (f" (parameters {', '.join(f'{k}={v}' for k, v in reference.items())})" if reference else "") + ".")
    return worst <= CHECK_TOL, msg
