"""The cases of a parametric answer partition the parameter space.

For every parameter value (in the parameters' domains, where sigma is a real function) exactly
one case of ``derive(name)`` applies, and it gives the answer that ``derive(name, params=...)``
gives at that value. Checked at special values (every value named in a case condition, its
neighbours, and values where the answer changes by hand derivation) and at random values, for
every parametric catalogue entry, for formulas whose special values enter only through roots
(SquarePlus) or form a family (x**3 + c), and for fuzzed parametric formulas.

The reference is an independent route through the engine: with every parameter fixed there are
no parameters to explore, so a wrong or missing case shows up as a disagreement or a gap.
"""

from __future__ import annotations

import functools
import random

import pytest
import sympy

import activations
import groupcalc
from groupcalc._result import _holds
from groupcalc.testing import random_formula

SQUAREPLUS = "(x + sqrt(x**2 + b))/2"
#: Values every parameter is tried at, besides the ones read off the conditions.
SPECIAL = [sympy.Rational(v) for v in ("0", "1", "-1", "1/2", "-1/3", "2")]
#: More values for the slow run.
SPECIAL_SLOW = SPECIAL + [sympy.Rational(v) for v in ("-1/2", "-2", "1/3", "-1/4", "3/2", "5")]


@functools.lru_cache(maxsize=None)
def _symbolic(name):
    return groupcalc.derive(name)


def _summary(case, n_max=12):
    """What an answer says, as comparable numbers (phi at sample elements of S)."""
    s = case.scalings
    sing = case.singular_n
    if isinstance(sing, tuple):
        sing = tuple(int(n) for n in sing)  # numbers once the parameter values are substituted
    if s is None:
        return case.cls, case.status, None, sing
    gen = None if s.generator is None else round(float(s.generator), 9)
    neg = None if s.negative is None else round(float(s.negative), 9)
    elems = [sympy.Integer(1)] + ([sympy.Rational(3, 2)] if s.positive == "all" else [])
    if s.generator is not None:
        elems.append(s.generator)
    if s.negative is not None:
        elems += [s.negative * e for e in list(elems)]
    phis = tuple(round(complex(sympy.N(s.phi.subs(groupcalc.a, e), 20)).real, 9) for e in elems)
    return case.cls, case.status, (s.positive, gen, neg, phis), sing


def _assert_lower_bound(lower, full, label):
    """Every scaling the unknown case claims is in the full answer's S (with the same phi)."""
    s, t = lower.scalings, full.scalings
    if s is None or (s.positive == "trivial" and s.negative is None):
        return
    g = groupcalc.IntertwinerGroup.from_scalings(t) if t is not None else None
    assert g is not None and full.cls == "nonlinear", f"{label}: lower bound {s.describe()} but the answer is {full.cls}"
    elems = [1.5, 0.5] if s.positive == "all" else ([float(s.generator)] if s.generator is not None else [])
    if s.negative is not None:
        elems.append(float(s.negative))
    assert all(bool(g.scalar_in_s([e])[0]) for e in elems), f"{label}: lower bound {s.describe()} not inside {t.describe()}"


def _param_names(name):
    try:
        return [p.name for p in activations.get(name).parameters]
    except KeyError:
        return list(_symbolic(name).parameters)


def _condition_values(d):
    """Numbers that appear in the case conditions (special values and bounds), with neighbours."""
    out = set()
    for c in d.cases:
        for rel in c.condition.atoms(sympy.core.relational.Relational):
            diff = rel.lhs - rel.rhs
            syms = sorted(diff.free_symbols, key=lambda s: s.name)
            if len(syms) == 1 and diff.is_polynomial(syms[0]):
                poly = sympy.Poly(diff, syms[0])
                if not all(c.is_Rational for c in poly.coeffs()):
                    continue
                for r in poly.real_roots():
                    if r.is_Rational:
                        out |= {r, r + sympy.Rational(1, 7), r - sympy.Rational(1, 7)}
    return sorted(out)


def _values(name, extra=(), n_random=3, seed=0, special=SPECIAL):
    names = _param_names(name)
    rng = random.Random(seed)
    base = sorted(set(special) | set(_condition_values(_symbolic(name))) | set(extra))
    points = []
    if len(names) == 1:
        points = [{names[0]: v} for v in base]
    else:  # two parameters: pairs of special values (a thinned grid) and their sums/differences
        for i, u in enumerate(base):
            for j, v in enumerate(base):
                if (i + j) % 3 == 0:
                    points.append(dict(zip(names, (u, v))))
    for _ in range(n_random):
        points.append({p: sympy.Rational(rng.randint(-400, 400), rng.choice([7, 10, 100])) for p in names})
    return points


def _check_partition(name, points):
    d = _symbolic(name)
    checked = 0
    for values in points:
        try:
            reference = groupcalc.derive(name, params=values)
        except groupcalc.GroupCalcError:
            continue  # outside the domain, or sigma is not a real function there
        subs = {sympy.Symbol(k, real=True): v for k, v in values.items()}
        holding = [i for i, c in enumerate(d.cases) if _holds(c.condition, subs)]
        assert len(holding) == 1, f"{name} at {values}: cases {holding} apply (conditions: {[str(c.condition) for c in d.cases]})"
        case = d.cases[holding[0]].at(subs)
        want = _summary(reference.cases[0])
        if case.status == "unknown" and reference.cases[0].status != "unknown":
            # an unfinished symbolic case claims only a lower bound: it must hold at these values
            _assert_lower_bound(case, reference.cases[0], f"{name} at {values}")
        else:
            got = _summary(case)
            assert got == want, f"{name} at {values}: case {holding[0]} says {got}, --param says {want}"
        checked += 1
    assert checked >= 5, f"{name}: only {checked} parameter values could be checked"


PARAMETRIC = [a.name for a in activations.catalogue() if a.parameters]


def _integers(name):
    """Integer values for parameters whose domain is the positive integers (polynomial's degree)."""
    try:
        act = activations.get(name)
    except KeyError:
        return []
    return [sympy.Integer(k) for k in range(1, 8)] if any(p.domain == "positive_integer" for p in act.parameters) else []


@pytest.mark.parametrize("name", PARAMETRIC)
def test_catalogue_cases_partition_the_parameters(name):
    _check_partition(name, _values(name, extra=_integers(name)))


@pytest.mark.slow
@pytest.mark.parametrize("name", PARAMETRIC)
def test_catalogue_cases_partition_the_parameters_densely(name):
    _check_partition(name, _values(name, extra=_integers(name), n_random=20, seed=1, special=SPECIAL_SLOW))


def test_squareplus_at_zero_is_relu():
    """b enters only through sqrt(x**2 + b): at b = 0, sigma = (x + |x|)/2 = ReLU, S = (0, oo),
    phi(a) = a; for b > 0 it is analytic with Taylor terms x^0, x^1, so S = {1}."""
    d = _symbolic(SQUAREPLUS)
    relu = d.case(b=0)
    assert (relu.cls, relu.scalings.positive, relu.scalings.negative) == ("nonlinear", "all", None)
    assert sympy.simplify(relu.scalings.phi - groupcalc.a) == 0
    assert d.case(b=1).scalings.positive == "trivial"
    _check_partition(SQUAREPLUS, _values(SQUAREPLUS, extra=[sympy.Rational(1, 100), sympy.Integer(4)]))


@pytest.mark.parametrize("n", range(1, 7))
def test_cubic_plus_constant_family(n):
    """x**3 + c: sigma(1) = 1 + c, sigma(0) = c, and sigma(I_n) has the eigenvalues
    1 + c + (n - 1) c = 1 + n c (once) and 1 (n - 1 times): singular exactly for n = -1/c,
    i.e. at c = -1/n. One case covers the whole family, its singular n depending on c."""
    d = _symbolic("x**3 + c")
    case = d.case(c=sympy.Rational(-1, n))
    assert case.singular_n == (n,)
    family = [c for c in d.cases if any(not isinstance(k, int) for k in (c.singular_n if isinstance(c.singular_n, tuple) else ()))]
    assert len(family) == 1 and _holds(family[0].condition, {sympy.Symbol("c", real=True): sympy.Rational(-1, n)})
    assert d.case(c=sympy.Rational(-2, 3)).singular_n == ()  # -1/c = 3/2 is not an integer


def test_cubic_plus_constant_partition():
    _check_partition("x**3 + c", _values("x**3 + c", extra=[sympy.Rational(-1, k) for k in range(1, 9)]))


def _fuzzed(count, seed):
    """Parametric formulas: a random catalogue formula with a parameter c put in one of a few
    places (added, as a coefficient, scaling the input of x**2, ...)."""
    rng = random.Random(seed)
    templates = ("({f}) + c", "({f}) + c*x**3", "c*({f}) + x**2", "({f})*(x**2 + c)", "({f}) + c*x")
    out = []
    while len(out) < count:
        f = random_formula(rng, depth=1)
        out.append(rng.choice(templates).format(f=f))
    return out


@pytest.mark.parametrize("formula", _fuzzed(6, 20261201))
def test_fuzzed_parametric_formulas_partition(formula):
    try:
        _symbolic(formula)
    except groupcalc.GroupCalcError:
        pytest.skip(f"the engine refuses {formula!r}")
    _check_partition(formula, _values(formula, n_random=2))
