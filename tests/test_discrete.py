"""Discrete (log-periodic) groups, continuity by limits, and step functions.

``tests/data/expected_discrete.json`` holds hand derivations (written out in each entry's
``derivation``; none produced by groupcalc). Every entry is checked twice:

* against itself, numerically and without the engine: each claimed element a of S satisfies
  sigma(a x) = phi(a) sigma(x) at random points, in float64 and in 40-digit mpmath (large
  generators such as e^(2 pi) lose digits in float64); numbers the entry excludes (sqrt(g),
  -1 when the representative is -sqrt(g), 1.3, ...) admit no b at all;
* against :func:`groupcalc.derive`: class, kind of S+, the exact generator (a symbolic
  equality, not a float comparison), the negative representative, phi at members, the
  singular n, the status and the continuity verdict.

The shape of the arguments (docs/theory.md §10): in t = log|x| each side is
C e^(lam t) P(t) with P periodic, a = e^s > 0 works on a side iff P(t + s) = ±P(t), and the
two sides and the negative elements are exact shift identities.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import mpmath
import numpy as np
import pytest
import sympy

import activations
import groupcalc

DATA = Path(__file__).resolve().parent / "data" / "expected_discrete.json"
ENTRIES = json.loads(DATA.read_text())
IDS = [e["activation"] for e in ENTRIES]
_A = sympy.Symbol("a", real=True)
_X = sympy.Symbol("x", real=True)


def _sym(text):
    """Parse an expression from OUR data file (trusted text, not user input)."""
    return sympy.sympify(text, locals={"a": _A})


def _expr(entry):
    return activations.parse_formula(entry["activation"])


def _members(entry):
    kind = entry["positive_scalings"]
    if kind == "all":
        pos = [sympy.Rational(1, 4), sympy.Rational(7, 10), sympy.Integer(1), sympy.Rational(19, 10), sympy.Rational(33, 10)]
    elif kind == "discrete":
        g = _sym(entry["generator"])
        pos = [g**k for k in (-1, 0, 1, 2)]
    else:
        pos = [sympy.Integer(1)]
    if entry["negative_scalings"]:
        rep = _sym(entry["negative_representative"])
        pos = pos + [rep * p for p in pos]
    return pos


def _nonmembers(entry):
    kind = entry["positive_scalings"]
    out = []
    if kind == "discrete":
        g = _sym(entry["generator"])
        out += [sympy.sqrt(g), sympy.Rational(11, 10) * g, sympy.Rational(13, 10)]
    elif kind == "trivial":
        out += [sympy.Rational(1, 2), sympy.Rational(13, 10), sympy.Integer(3)]
    if not entry["negative_scalings"]:
        out += [sympy.Integer(-1), sympy.Rational(-13, 10)] + ([-sympy.sqrt(_sym(entry["generator"]))] if kind == "discrete" else [])
    elif _sym(entry["negative_representative"]) != -1:
        out.append(sympy.Integer(-1))
    return out


def _mp_function(expr):
    """sigma as an mpmath function (our own formula, trusted)."""
    return sympy.lambdify(_X, expr.subs({s: _X for s in expr.free_symbols if s.name == "x"}), "mpmath")


_RNG = np.random.default_rng(20261201)
#: Random points on both sides, spread over several decades (log-periodic functions repeat in log|x|).
_PTS = np.concatenate([s * np.exp(_RNG.uniform(-4.0, 3.0, 40)) for s in (1.0, -1.0)] + [np.array([0.0])])


# ----------------------------------------------------------------------------- the data file alone
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_members_satisfy_the_equation_float64(entry):
    fn = activations.lambdify_numpy(_expr(entry))
    sig = lambda z: np.asarray(fn(np.asarray(z, dtype=float)), dtype=float)  # noqa: E731
    phi = _sym(entry["phi"])
    for a in _members(entry):
        af, b = float(a), float(phi.subs(_A, a))
        lhs, rhs = sig(af * _PTS), b * sig(_PTS)
        scale = 1.0 + np.abs(lhs) + np.abs(rhs)
        assert np.max(np.abs(lhs - rhs) / scale) < 1e-9, (entry["activation"], a)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_members_satisfy_the_equation_mpmath(entry):
    f = _mp_function(_expr(entry))
    phi = _sym(entry["phi"])
    with mpmath.workdps(40):
        for a in _members(entry):
            am, b = mpmath.mpf(str(sympy.N(a, 45))), mpmath.mpf(str(sympy.N(phi.subs(_A, a), 45)))
            for p in _PTS[::7]:
                pm = mpmath.mpf(float(p))
                lhs, rhs = f(am * pm), b * f(pm)
                assert abs(lhs - rhs) <= mpmath.mpf(10) ** -30 * (1 + abs(lhs) + abs(rhs)), (entry["activation"], a, p)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_nonmembers_admit_no_b(entry):
    fn = activations.lambdify_numpy(_expr(entry))
    xs = _PTS
    v = np.asarray(fn(xs), dtype=float)
    for a in _nonmembers(entry):
        u = np.asarray(fn(float(a) * xs), dtype=float)
        b = float(u @ v) / float(v @ v)
        res = np.max(np.abs(u - b * v)) / max(np.max(np.abs(u)), np.max(np.abs(v)))
        assert res > 1e-4, (entry["activation"], a, b, res)


# ----------------------------------------------------------------------------- the engine
@functools.lru_cache(maxsize=None)
def _case(activation):
    d = groupcalc.derive(activation)
    assert len(d.cases) == 1
    return d.cases[0]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_engine_matches_hand_derivation(entry):
    c = _case(entry["activation"])
    label = entry["activation"]
    assert c.status == entry["status"], (label, c.status, c.certificate)
    assert c.cls == entry["class"]
    s = c.scalings
    assert s.positive == entry["positive_scalings"], (label, s.describe())
    if entry["generator"] is not None:
        assert sympy.simplify(s.generator - _sym(entry["generator"])) == 0, (label, s.generator)
    assert s.negative_scalings == entry["negative_scalings"], (label, s.describe())
    if entry["negative_representative"] is not None:
        assert sympy.simplify(s.negative - _sym(entry["negative_representative"])) == 0, (label, s.negative)
    want_phi = _sym(entry["phi"])
    got_phi = s.phi.subs({q: _A for q in s.phi.free_symbols if q.name == "a"})
    for a in _members(entry):
        got, want = complex(sympy.N(got_phi.subs(_A, a), 30)), complex(sympy.N(want_phi.subs(_A, a), 30))
        assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (label, a, got, want)
    sing = entry["sigma_I_singular_n"]
    assert (c.singular_n == sing) if isinstance(sing, str) else (list(c.singular_n) == sing), (label, c.singular_n)
    cont = {name: holds for name, holds, _ in c.hypotheses}["continuous"]
    assert cont is entry["continuous"], (label, c.hypotheses)


@pytest.mark.parametrize("formula", ["where(abs(x) > 0, x*(2 + sin(log(abs(x)))), 0)",
                                     "where(abs(x) > 0, x*sin(log(abs(x))), 0)"])
def test_continuous_but_not_differentiable_at_zero(formula):
    # |sigma(x)| <= 3|x| -> 0, but sigma(x)/x = 2 + sin(log|x|) (or sin(log|x|)) has no limit
    c = _case(formula)
    reason = {name: r for name, _, r in c.hypotheses}["continuous"]
    assert "not differentiable" in reason
    assert not any("jumps" in step for step in c.certificate)


def test_sinc_is_analytic_at_its_removable_point():
    # sin(x)/x with value 1 at 0 is the entire function 1 - x^2/6 + ...: no break point remains
    c = _case("where(abs(x) > 0, sin(x)/x, 1)")
    assert c.certificate[0].startswith("Normal form: sigma(x) = sin(x)/x, one analytic expression on R")
    assert {name: r for name, _, r in c.hypotheses}["differentiable off a finite set"] == "analytic on R"
    # with the wrong value at 0 it is a removable discontinuity, not analytic
    c0 = _case("where(abs(x) > 0, sin(x)/x, 0)")
    assert {name: h for name, h, _ in c0.hypotheses}["continuous"] is False
    assert c0.status == "proved"  # the discontinuity argument still gives P D
    # (x^2 + x)/x with value 1 at 0 is x + 1 on all of R: affine, G = {A : A 1 = 1}
    c1 = _case("where(abs(x) > 0, (x**2 + x)/x, 1)")
    assert c1.cls == "affine" and c1.status == "proved"


@pytest.mark.parametrize("formula", ["where(abs(x) > 0, x*sin(1/x), 0)", "where(abs(x) > 0, x*log(x**2), 0)"])
def test_continuous_non_analytic_points_are_not_merged(formula):
    # both tend to 0 at 0 (continuous), but neither is analytic there: the break point stays
    c = _case(formula)
    assert {name: h for name, h, _ in c.hypotheses}["continuous"] is True
    assert "break point" in c.certificate[0]


def test_step_functions_cite_the_discontinuity_argument():
    for formula in ("Heaviside(x)", "sign(x)", "x + Heaviside(x)"):
        c = _case(formula)
        assert c.status == "proved" and not c.group.startswith("contains"), formula
        assert any("discontinuity argument" in step for step in c.certificate), formula
        assert not any(step.startswith("Theorem E.14 applies") for step in c.certificate), formula


def test_generator_of_any_size_is_exact():
    # 2 + sin(t / sqrt 2): period 2 sqrt(2) pi in t = log|x|, so g = e^(2 sqrt(2) pi) ~ 7.2e3,
    # far outside any fixed numeric scan range; odd: ±.
    c = _case("where(abs(x) > 0, x*(2 + sin(log(abs(x))/sqrt(2))), 0)")
    assert c.status == "proved"
    assert sympy.simplify(c.scalings.generator - sympy.exp(2 * sympy.sqrt(2) * sympy.pi)) == 0
    # cos(40 t): antiperiod pi/40, g = e^(pi/40) close to 1, phi(g) = -g
    c = _case("where(abs(x) > 0, x*cos(40*log(abs(x))), 0)")
    assert sympy.simplify(c.scalings.generator - sympy.exp(sympy.pi / 40)) == 0
    g = c.scalings.generator
    assert sympy.simplify(c.scalings.phi.subs(c.scalings.phi.free_symbols.pop(), g) + g) == 0


def test_numeric_scan_needs_the_exact_identity():
    # exp(sin t) is not a rational function of e^(i t): the exact form does not apply and the
    # scan finds a ~ 535.49; only the exact check identifies it as e^(2 pi) (sin(t + s) - sin t
    # constant forces s in 2 pi Z); minimality is numeric, so the status says so.
    c = _case("where(abs(x) > 0, x*exp(sin(log(abs(x)))), 0)")
    assert c.status == "verified-numerically"
    assert sympy.simplify(c.scalings.generator - sympy.exp(2 * sympy.pi)) == 0
    # period sqrt(2) pi: the scan finds a ~ e^(sqrt(2) pi) ~ 85.0 but no exact number it tries
    # (e^(q pi), 2^q, e^q, rationals, square roots) passes the identity: unknown, and only the
    # sound part is kept (S contains {1, -1}: sigma is odd).
    c = _case("where(abs(x) > 0, x*exp(sin(sqrt(2)*log(abs(x)))), 0)")
    assert c.status == "unknown"
    assert c.scalings.positive == "trivial"


# ----------------------------------------------------------------------------- the lemma alone
@pytest.mark.parametrize("periodic, shift, eps", [
    # hand: sin 3t + sin 6t has period 2 pi / 3 and no antiperiod (the sin 6t part would flip
    # only under shifts pi/6 + k pi/3, the sin 3t part only under pi/3 + 2k pi/3: never both)
    ("sin(3*t) + sin(6*t)", "2*pi/3", 1),
    # cos^2 t = (1 + cos 2t)/2: period pi, positive, so no antiperiod
    ("cos(t)**2", "pi", 1),
    # sin t cos t = sin(2t)/2: antiperiod pi/2
    ("sin(t)*cos(t)", "pi/2", -1),
    # 1/(2 + sin t): a rational function of e^(it) with a non-constant denominator; period 2 pi
    ("1/(2 + sin(t))", "2*pi", 1),
    # cos(2 pi t / log 2): antiperiod log(2)/2
    ("cos(2*pi*t/log(2))", "log(2)/2", -1),
])
def test_side_form_finds_the_smallest_shift(periodic, shift, eps):
    from groupcalc._logperiodic import side_form
    from groupcalc._pieces import Oracle

    t = sympy.Symbol("t", real=True)
    P = sympy.sympify(periodic, locals={"t": t})
    # the piece x * P(log x) on x > 0
    f = side_form(_X * P.subs(t, sympy.log(_X)), 1, Oracle())
    assert f is not None and f.periodic
    assert sympy.simplify(f.shift - _sym(shift)) == 0 and f.eps == eps
    # independently, numerically: the shift works with its sign, and no smaller shift works
    # with either sign (a scan of (0, shift) at 4000 points, residual relative to max |P|)
    Pn = sympy.lambdify(t, P, "numpy")
    ts = np.linspace(0.0, 7.0, 301)
    s1 = float(f.shift)
    assert np.max(np.abs(Pn(ts + s1) - eps * Pn(ts))) < 1e-12
    scale = np.max(np.abs(Pn(ts)))
    for s in np.linspace(0.0, s1, 4002)[1:-1]:
        best = min(np.max(np.abs(Pn(ts + s) - Pn(ts))), np.max(np.abs(Pn(ts + s) + Pn(ts))))
        assert best > 1e-6 * scale, s


@pytest.mark.parametrize("lam, c, k", [(1, 3, 2), (2, 0, 3), (3, 5, 1), (1, 0, 5)])
def test_family_abs_power_times_shifted_sine(lam, c, k):
    """sigma = |x|^lam (c + sin(k log|x|)), value 0 at 0, derived by hand for the family:
    x > 0: e^(lam t) (c + sin(k t)). For c != 0 (here c > 1, no zeros): c + sin(k(t + s)) =
    q (c + sin(k t)) forces q = 1 (mean) and k s in 2 pi Z: g = e^(2 pi / k), phi(g) = g^lam.
    For c = 0: sin(k t + k s) = q sin(k t) gives k s in pi Z, q = (-1)^j: g = e^(pi / k),
    phi(g) = -g^lam. sigma is even: -1 in S with phi(-1) = 1."""
    formula = f"where(abs(x) > 0, abs(x)**{lam}*({c} + sin({k}*log(abs(x)))), 0)"
    case = _case(formula)
    assert case.status == "proved"
    s = case.scalings
    g_want = sympy.exp((2 if c else 1) * sympy.pi / k)
    assert s.positive == "discrete" and sympy.simplify(s.generator - g_want) == 0
    assert s.negative == -1
    phi = s.phi.subs({q: _A for q in s.phi.free_symbols if q.name == "a"})
    sign = 1 if c else -1
    for a_val in (g_want, -g_want, g_want**2, -1 / g_want):
        want = (sign if abs(sympy.log(abs(a_val)) / sympy.log(g_want)) % 2 == 1 else 1) * abs(a_val) ** lam
        assert abs(complex(sympy.N(phi.subs(_A, a_val) - want, 30))) < 1e-12 * float(abs(a_val) ** lam)
    # and numerically, independently of the engine: sigma(g x) = phi(g) sigma(x)
    fn = activations.lambdify_numpy(activations.parse_formula(formula))
    gf = float(g_want)
    np.testing.assert_allclose(fn(gf * _PTS), sign * gf**lam * fn(_PTS), rtol=1e-9, atol=1e-300)


# ----------------------------------------------------------------------------- bare formulas
#: Bare formulas as users type them, with the hand-derived entry of their where(...) form: at
#: 0 each tends to the value the where form gives (|x cos log|x|| <= |x|, |x^2 sin log|x|| <= x^2,
#: |x| |3 + sin log|x|| <= 4|x|, |x cos(2 pi log2|x|)| <= |x|, sin(x)/x -> 1), so the continuous
#: extension is that function and the answer must be the entry's.
_BARE = {
    "x*cos(log(abs(x)))": ("where(abs(x) > 0, x*cos(log(abs(x))), 0)", 0),
    "x**2*sin(log(abs(x)))": ("where(abs(x) > 0, x**2*sin(log(abs(x))), 0)", 0),
    "abs(x)*(3 + sin(log(abs(x))))": ("where(abs(x) > 0, abs(x)*(3 + sin(log(abs(x)))), 0)", 0),
    "x*cos(2*pi*log(abs(x), 2))": ("where(abs(x) > 0, x*cos(2*pi*log(abs(x))/log(2)), 0)", 0),
    "sin(x)/x": ("where(abs(x) > 0, sin(x)/x, 1)", 1),
}


@pytest.mark.parametrize("bare", list(_BARE))
def test_bare_formula_is_extended_by_continuity(bare):
    where_form, value = _BARE[bare]
    entry = dict(next(e for e in ENTRIES if e["activation"] == where_form), activation=bare)
    test_engine_matches_hand_derivation(entry)
    d = groupcalc.derive(bare)
    assert d.status == "proved"
    assert d.notes == (f"extended by continuity at x = 0: sigma(0) = {value}",)
    assert d.cases[0].group == _case(where_form).group
    assert d.cases[0].scalings.describe() == _case(where_form).scalings.describe()
    from groupcalc._format import text

    assert f"note: extended by continuity at x = 0: sigma(0) = {value}" in text(d)
    assert d.to_json()["notes"] == list(d.notes)


def test_removable_pole_of_a_rational_formula_is_extended():
    # (x^2 - 1)/(x - 1) = x + 1 off x = 1, limit 2 there: the extension is x + 1, affine,
    # G = {A : A 1 = 1} (the where form's (x^2 + x)/x case above, shifted)
    d = groupcalc.derive("(x**2 - 1)/(x - 1)")
    assert d.notes == ("extended by continuity at x = 1: sigma(1) = 2",)
    assert d.cases[0].cls == "affine" and d.cases[0].status == "proved"


@pytest.mark.parametrize("formula", ["1/x", "sin(1/x)", "tan(log(abs(x)))", "x/abs(x)"])
def test_no_finite_limit_is_refused_naming_the_point(formula):
    # 1/x -> ±oo; sin(1/x) and tan(log|x|) (poles accumulating at 0) oscillate without a limit;
    # x/|x| has one-sided limits -1 and 1 that differ
    with pytest.raises(groupcalc.GroupCalcError) as err:
        groupcalc.derive(formula)
    msg = str(err.value)
    assert "\n" not in msg and "not defined at x = 0" in msg, msg
