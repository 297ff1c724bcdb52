"""The formula parser: the grammar (expectations written by hand), one-line errors, and
security (nothing executes, nothing hangs, every limit is on the whole formula)."""

from __future__ import annotations

import builtins

import pytest
import sympy
from sympy import Abs, And, Eq, Heaviside, Max, Min, Ne, Not, Or, Piecewise, Rational, Xor, exp, floor, log, pi, sign, sqrt

import activations
from activations import FormulaError, parse_condition, parse_formula, x
from activations import _parse

alpha, beta, s, lambd, deg = (sympy.Symbol(n, real=True) for n in ("alpha", "beta", "negative_slope", "lambd", "degree"))
a = sympy.Symbol("a", real=True)


# The grammar -------------------------------------------------------------------------

def assert_refused_in_one_line(text, fragment):
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg

@pytest.mark.parametrize("text, expected", [
    ("Piecewise((x, x >= 0), (negative_slope*x, True))", Piecewise((x, x >= 0), (s * x, True))),
    ("Piecewise((x, (lambd < x) | (lambd < -x)), (0, True))", Piecewise((x, Or(lambd < x, lambd < -x)), (0, True))),
    ("Piecewise((1, Eq(x, 0)), (sin(x)/x, True))", Piecewise((1, Eq(x, 0)), (sympy.sin(x) / x, True))),
    ("Piecewise((sin(x)/x, Ne(x, 0)), (1, True))", Piecewise((sympy.sin(x) / x, Ne(x, 0)), (1, True))),
    ("Piecewise((sin(x)/x, x != 0), (1, True))", Piecewise((sympy.sin(x) / x, Ne(x, 0)), (1, True))),
    ("Piecewise((0, x == 0), (x, True))", Piecewise((0, Eq(x, 0)), (x, True))),
    ("Piecewise((x, (x > 0) & (alpha < 1)), (0, True))", Piecewise((x, And(x > 0, alpha < 1)), (0, True))),
    ("Piecewise((x, ~(x > 0)), (0, True))", Piecewise((x, x <= 0), (0, True))),
    ("Piecewise((x, 0 < x < 1), (0, True))", Piecewise((x, And(sympy.Lt(0, x), x < 1)), (0, True))),
    ("Piecewise((x, And(x > 0, Not(Eq(alpha, 2)))), (0, True))", Piecewise((x, And(x > 0, Ne(alpha, 2))), (0, True))),
    ("where(x > 0, x, alpha*x)", Piecewise((x, x > 0), (alpha * x, True))),
    ("Heaviside(x)", Heaviside(x)),
    ("Heaviside(x, 1)", Heaviside(x, 1)),
    ("Heaviside(x, 1/2) + sign(x)", Heaviside(x, Rational(1, 2)) + sign(x)),
    ("x + Heaviside(x, 0)", x + Heaviside(x, 0)),
    ("Max(0, x) - Min(0, x) + abs(x) + Abs(x)", Max(0, x) - Min(0, x) + 2 * Abs(x)),
    ("max(x, 0, alpha)", Max(x, 0, alpha)),
    ("exp(x) + log(1 + x**2) + sqrt(2)*pi + E", exp(x) + log(1 + x**2) + sqrt(2) * pi + sympy.E),
    ("log(8, 2)*x", 3 * x),
    ("x**degree", x**deg),
    ("Abs(x)**0.37 + x**(1/3) + 2**(1/100000)", Abs(x) ** Rational(37, 100) + x ** Rational(1, 3) + 2 ** Rational(1, 100000)),
    ("x^2 + 2^x", x**2 + 2**x),
    ("Rational(1, 3)*x + Integer(2) + Float('0.25', precision=53)", x / 3 + Rational(9, 4)),
    ("Rational('1/7')*x + Rational('2.5')", x / 7 + Rational(5, 2)),
    ("1.6732632423543772848170429916717*x", Rational("1.6732632423543772848170429916717") * x),
    ("1e-3*x + 2.5E2", x / 1000 + 250),
    ("5253504936777402467096674926473*x/5000000000000000000000000000000",
     Rational(5253504936777402467096674926473, 5000000000000000000000000000000) * x),
    ("x*floor(degree) + Mod(degree, 2)", x * floor(deg) + sympy.Mod(deg, 2)),
    ("sigmoid(x) + softplus(x) + relu(x)", 1 / (1 + exp(-x)) + log(1 + exp(x)) + Max(0, x)),
])
def test_grammar(text, expected):
    assert parse_formula(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("True", sympy.true),
    ("False", sympy.false),
    ("Ne(negative_slope, 0)", Ne(s, 0)),
    ("Eq(negative_slope, 1)", Eq(s, 1)),
    ("(0 < lambd) & (lambd < 1) & Ne(lambd, 0)", And(sympy.Lt(0, lambd), lambd < 1, Ne(lambd, 0))),
    ("(Eq(alpha, 1) & Eq(beta, -1)) | (alpha > beta)", Or(And(Eq(alpha, 1), Eq(beta, -1)), alpha > beta)),
    ("Ne(alpha, floor(alpha)) | (alpha < 1)", Or(Ne(alpha, floor(alpha)), alpha < 1)),
    ("alpha != 0 and not beta >= 2", And(Ne(alpha, 0), beta < 2)),
    ("(alpha > 0) ^ (beta > 0)", Xor(alpha > 0, beta > 0)),  # sympy prints Xor as '^'
    ("Xor(alpha > 0, beta > 0, Eq(alpha, beta))", Xor(alpha > 0, beta > 0, Eq(alpha, beta))),
    ("(beta > 0) | ((alpha > 0) ^ (beta < 1))", Or(beta > 0, Xor(alpha > 0, beta < 1))),
    ("Lt(alpha, 1) & Ge(beta, 2) & Le(alpha, beta) & Gt(beta, -3)", And(alpha < 1, beta >= 2, alpha <= beta, beta > -3)),
    ("~Contains(-1/alpha, Naturals) & Ne(alpha, 0)", And(Not(sympy.Contains(-1 / alpha, sympy.S.Naturals)), Ne(alpha, 0))),
    ("Contains(alpha, Integers) | Contains(beta, Naturals0)", Or(sympy.Contains(alpha, sympy.S.Integers), sympy.Contains(beta, sympy.S.Naturals0))),
    ("Contains(3, Naturals)", sympy.true),
    ("1 < 2", sympy.true),
    ("-oo < x", sympy.true),  # x is real, so finite
    ("alpha < oo", sympy.true),
])
def test_conditions(text, expected):
    assert parse_condition(text) == expected


def test_variable_a_is_the_symbol_phi_is_written_in():
    from groupcalc import a as phi_symbol

    assert parse_formula("Abs(a)**(3/2)*sign(a)", variable="a") == Abs(phi_symbol) ** Rational(3, 2) * sign(phi_symbol)
    assert parse_formula("a**degree", variable="a") == a**deg


def test_constants_without_x():
    assert parse_formula("exp(pi)") == exp(pi)
    assert parse_formula("-sqrt(2)") == -sqrt(2)
    assert parse_formula("-1/c") == -1 / sympy.Symbol("c", real=True)


@pytest.mark.parametrize("digits", [31, 200, 900])
def test_rationals_of_any_size_within_the_formula_budget(digits):
    p, q = int("7" * digits), int("3" + "0" * (digits - 1))
    assert parse_formula(f"{p}*x/{q}") == Rational(p, q) * x
    assert parse_formula(f"Rational({p}, {q})") == Rational(p, q)


def test_the_digit_budget_is_on_the_whole_formula():
    one = "1" * 900
    parse_formula(f"{one}*x + {one}")
    with pytest.raises(FormulaError, match="too many digits"):
        parse_formula(f"{one}*x + {one} + {one}")


def test_float_literals_keep_every_written_digit():
    # a float literal is read as the decimal written, not as the nearest binary double
    assert parse_formula("0.1") == Rational(1, 10)
    assert parse_formula("1.0507009873554804934193349852946") == Rational("1.0507009873554804934193349852946")


# One-line errors that name what is wrong ------------------------------------------------
@pytest.mark.parametrize("text, fragment", [
    ("x +", "invalid syntax"),
    ("tahn(x)", "did you mean tan, tanh"),
    ("Piecewise((x, x > 0), (0, x <= 0))", "last piece of Piecewise(...) must be (value, True)"),
    ("Piecewise((x, x > 0, 1), (0, True))", "piece 1 of Piecewise(...) must be a pair"),
    ("Piecewise(x, (0, True))", "piece 1 of Piecewise(...) must be a pair"),
    ("Piecewise((x > 0, x), (0, True))", "the value of piece 1"),
    ("Piecewise((x, x + 1), (0, True))", "the condition of piece 1"),
    ("(x, 1)", "only allowed as a piece"),
    ("x > 0", "must be a real-valued expression, not a condition"),
    ("x + (x > 0)", "each side of '+'"),
    ("(x > 0) & x", "each side of '&'"),
    ("~x", "operand of ~"),
    ("Heaviside(x, alpha)", "value at 0"),
    ("Heaviside(x, 1, 2)", "one or two arguments"),
    ("Eq(x)", "takes two arguments"),
    ("log(x, 1)", "base of log"),
    ("Rational(x, 2)", "written in digits"),
    ("Integer('1/2')", "needs an integer"),
    ("Float('nan')", "not a decimal number"),
    ("x**x", "base and exponent both contain x"),
    ("x/0", "division by zero"),
    ("1/(x - x)", "division by zero"),
    ("Rational(1, 0)", "division by zero"),
    ("sqrt(-1)*x", "imaginary unit"),
    ("x + oo", "must be finite"),
    ("tan(pi/2) + x", "must be finite"),
    ("I*x", "name 'I' is not allowed"),
    ("x + 1j", "unsupported constant"),
    ("'x'", "string"),
    ("x*Naturals", "only as the second argument of Contains"),
    ("Piecewise((x, Contains(x, Interval(0, 1))), (0, True))", "unknown function 'Interval'"),
    ("Piecewise((x, Contains(x, x)), (0, True))", "one of the sets"),
    ("exp", "without an argument"),
    ("x % 2", "'%'"),
    ("x // 2", "'//'"),
    ("x if x > 0 else 0", "where(c, a, b)"),
    ("", "empty"),
])
def test_errors_are_one_clear_line(text, fragment):
    assert_refused_in_one_line(text, fragment)


def test_condition_errors():
    with pytest.raises(FormulaError, match="must be a condition"):
        parse_condition("x + 1")
    with pytest.raises(FormulaError, match="must be a condition"):
        parse_condition("alpha")  # a bare symbol is not a condition (sympy would accept it as a boolean)


# Security --------------------------------------------------------------------------------
HOSTILE = [
    ("__import__('os').system('touch {marker}')", "only plain function calls"),
    ("().__class__.__bases__[0].__subclasses__()", "only plain function calls"),
    ("x.__class__", "attribute access ('x.__class__'"),
    ("sympy.exp(x)", "not sympy.exp(...)"),
    ("exp(x).subs(x, 1)", "only plain function calls"),
    ("__builtins__", "name '__builtins__' is not allowed"),
    ("_x + 1", "name '_x' is not allowed"),
    ("(lambda: 1)()", "only plain function calls"),
    ("lambda y: y", "lambda is not allowed"),
    ("[x for x in range(10)]", "comprehension"),
    ("sum(x for x in (1, 2))", "comprehension"),
    ("{x: 1}", "dict"),
    ("[x][0]", "not allowed"),
    ("(y := 3)", "':='"),
    ("f'{x}'", "f-string"),
    ("print(x)", "unknown function 'print'"),
    ("eval('1')", "unknown function 'eval'"),
    ("exec('import os')", "unknown function 'exec'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("exp(x, evaluate=False)", "keyword argument 'evaluate'"),
    ("Float('1.5', __class__=1)", "keyword argument"),
    ("*x", "invalid syntax"),
    ("x; import os", "invalid syntax"),
    ("import os", "invalid syntax"),
    ("Max(" + ", ".join(f"sin({k}*x)" for k in range(33)) + ")", "too many Max/Min arguments"),
    ("sqrt(" + "9" * 300 + ")", "too large"),
]


@pytest.fixture
def nothing_executes(monkeypatch):
    """sympify/parse_expr given text, and Python's eval/exec, raise if the parser calls them."""
    import sys

    import sympy.parsing.sympy_parser as sp_parser

    def forbidden(*args, **kw):
        raise AssertionError("the parser must not evaluate user text")

    original = sympy.sympify

    def sympify_no_text(a, *args, **kw):
        if isinstance(a, str):
            raise AssertionError("user text reached sympify")
        return original(a, *args, **kw)

    monkeypatch.setattr(sympy, "sympify", sympify_no_text)
    monkeypatch.setattr(sys.modules["sympy.core.sympify"], "sympify", sympify_no_text)
    monkeypatch.setattr(sp_parser, "parse_expr", forbidden)
    for name in ("eval", "exec"):  # (not compile: ast.parse is compile with PyCF_ONLY_AST)
        monkeypatch.setattr(builtins, name, forbidden)


@pytest.mark.parametrize("text, fragment", HOSTILE, ids=lambda v: v if len(v) < 40 else v[:37] + "...")
def test_hostile_input_is_refused_without_executing(text, fragment, tmp_path, nothing_executes):
    marker = tmp_path / "pwned"
    text = text.replace("{marker}", str(marker))
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_the_whole_grammar_works_without_sympify(nothing_executes):
    """The builder makes sympy objects itself: a formula using most of the grammar parses
    with sympify, parse_expr and eval disabled."""
    text = ("5253504936777402467096674926473*Piecewise((x, x >= 0), (Heaviside(x, 1)*exp(x/alpha) - 1, "
            "Ne(alpha, 0) & (x < 0)), (sign(x)*Max(0, x)**2 + Rational(1, 3), True))/5000000000000000000000000000000")
    assert parse_formula(text).has(sympy.Piecewise)


@pytest.mark.parametrize("text, fragment", [
    ("x**100000", "exponent 100000 is too large"),
    ("2**2**2**2**2**2", "too large"),
    ("((10**64)**64)**64", "too large"),
    ("(x**64)**64", "exponent 4096 is too large"),
    ("x**(10**100)", "too large"),
    ("exp(1000000*log(2))", "too large"),
    ("exp(x + 10**30*log(10))", "too large"),
    ("E**(10**6*log(2))", "too large"),
    ("1e999999*x", "too large"),
    ("Float('1e99999999')", "too large"),
    ("Rational('1e99999999')", "too large"),
    ("x**pi**pi**pi", "too large"),
])
def test_huge_powers_are_refused_before_they_are_computed(text, fragment):
    # without the guards several of these would not return (2**2**2**2**2**2 has 10**19728 digits)
    assert_refused_in_one_line(text, fragment)


@pytest.mark.parametrize("text, fragment", [
    ("-" * 4990 + "x", "nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "nested too deeply"),
    ("exp(" * 80 + "x" + ")" * 80, "nested too deeply"),
    ("x" + "+x" * 3000, "too long"),
    ("+".join(["x"] * 2001), "too large"),
    ("1" * 4999, "too many digits"),
    ("0x" + "f" * 4000, "too many digits"),
    ("Piecewise(" + "(x, x > 1), " * 400 + "(0, True))", "too large"),
], ids=lambda v: v if len(v) < 30 else f"{v[:20]}...({len(v)} chars)")
def test_oversized_input_is_refused_in_one_line(text, fragment):
    # (the limits apply before anything is built, so these return at once)
    with pytest.raises(FormulaError) as info:
        parse_formula(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_documented_limits_are_the_module_constants():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "engine.md").read_text()
    section = doc[doc.index("## Formula syntax"):]
    for name in ("MAX_LENGTH", "MAX_NODES", "MAX_CONDITION_LENGTH", "MAX_CONDITION_NODES", "MAX_DEPTH", "MAX_DIGITS", "MAX_EXPONENT", "MAX_RESULT_DIGITS", "MAX_ROOT_DIGITS", "MAX_ARGS"):
        value = getattr(_parse, name)
        assert name in section and (f"{value:,}" in section or str(value) in section), name
    for fn in ("Piecewise", "Eq", "Ne", "Heaviside", "sign", "Max", "Min", "Abs", "Rational", "where", "ITE", "Xor"):
        assert fn in activations.FUNCTIONS and fn in section, fn


def test_conditions_may_be_longer_than_formulas():
    long = " | ".join(f"(Eq(alpha, {k}) & Ne(beta, {k}))" for k in range(300))
    assert len(long) > _parse.MAX_LENGTH
    assert len(parse_condition(long).args) == 300
    with pytest.raises(FormulaError, match="too long"):
        parse_condition(long + " | " + long + " | " + long)


def test_long_chains_are_not_deep():
    # x + x + ... is a left-deep tree in Python's syntax; it is built iteratively, so only
    # the node limit applies (and a condition with many '&' is fine)
    assert parse_formula("+".join(["x"] * 600)) == 600 * x
    assert parse_formula("(" * 150 + "x" + ")" * 150) == x  # parentheses alone make no nesting
    conds = " & ".join(f"Ne(alpha, {k})" for k in range(100))
    assert parse_condition(conds) == And(*(Ne(alpha, k) for k in range(100)))
    assert parse_formula("*".join(["x"] * 60) + "/x") == x**59


def test_non_string_input():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(1.5)
    with pytest.raises(FormulaError, match="Argument 'variable'"):
        parse_formula("x", variable="not a name")
