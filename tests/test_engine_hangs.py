"""Inputs that used to hang: huge numbers in the parser, and pre-processing outside the budget.

Each test is guarded so that a regression fails instead of hanging the run: parser calls run
under the engine's own wall-clock budget, and the derivation runs in a subprocess with a
timeout. No test asserts how long anything took.
"""

import json
import subprocess
import sys
import textwrap

import mpmath
import pytest
import sympy

from activations import FormulaError, parse_formula, x
from activations._parse import MAX_MAGNITUDE, parse_condition
from groupcalc import _budget
from groupcalc.cli import main

#: Wall-clock guard of one parse (the parser finishes these in well under a second).
PARSE_SECONDS = 60
#: Wall-clock guard of the subprocess that derives (it imports sympy and groupcalc first).
SUBPROCESS_SECONDS = 120

HUGE = "exp(10000000000000000000000000000000000000000/3)"  # e**(10**40/3): about 10**(1.4*10**39)
HANGING = [
    f"floor({HUGE})",
    f"Max(x, sin({HUGE}))",
    f"sign(sin({HUGE}))",
    f"Piecewise((x, sin({HUGE}) > 0), (0, True))",
    f"x + sin({HUGE})*x",
    f"Abs(sin({HUGE}))*x",
    f"Heaviside(sin({HUGE}))",
    f"x**sin({HUGE})",
    f"x*exp(-10000000000000000000000000000000000000000/3)",
]


def _guarded(parse, text, **kw):
    try:
        with _budget.limited(seconds=PARSE_SECONDS):
            return parse(text, **kw)
    except _budget.OutOfBudget:
        raise AssertionError(f"{parse.__name__} did not finish within {PARSE_SECONDS} s on {text!r}") from None


@pytest.mark.parametrize("text", HANGING)
def test_huge_numbers_are_refused_naming_the_number(text):
    with pytest.raises(FormulaError, match=r"exp\(-?10{40}/3\) in .* is too large to evaluate \(at most 10\*\*1000"):
        _guarded(parse_formula, text)


def test_huge_number_in_a_condition_is_refused():
    with pytest.raises(FormulaError, match="too large to evaluate"):
        _guarded(parse_condition, f"(x > 0) & (sin({HUGE}) < 1/2)")


def test_nested_exponential_is_bounded_from_its_structure():
    # exp(7) = 1096.6..., so exp(exp(7)) = 10**476.2... (exp(7)/ln 10): within
    # the limit; exp(8) = 2981.0..., so exp(exp(8)) = 10**1294.6...: refused where it stands.
    assert _guarded(parse_formula, "sin(exp(exp(7)))*x") == sympy.sin(sympy.exp(sympy.exp(7))) * x
    with pytest.raises(FormulaError, match=r"the number exp\(exp\(8\)\) in sin\(\.\.\.\)"):
        _guarded(parse_formula, "sin(exp(exp(8)))*x")


def test_the_limit_of_exp_is_where_docs_say():
    # log10(e**2302) = 2302/ln(10) = 999.75 and log10(e**2303) = 1000.19 (hand computation)
    assert MAX_MAGNITUDE == 1000
    assert _guarded(parse_formula, "x*exp(2302)") == x * sympy.exp(2302)
    for text in ("x*exp(2303)", "x*exp(-2303)"):
        with pytest.raises(FormulaError, match=r"exp\(-?2303\)"):
            _guarded(parse_formula, text)


def test_bounded_numbers_are_still_evaluated_exactly():
    with mpmath.workdps(80):
        expected = int(mpmath.floor(mpmath.exp(100)))  # 44 digits, computed independently by mpmath
    assert _guarded(parse_formula, "floor(exp(100))*x") == sympy.Integer(expected) * x
    # a small denominator is bounded by evaluating it (its parts are bounded); sympy then orders
    # 1/(pi - 3) = 7.06... against 7 itself
    assert _guarded(parse_formula, "Max(7, 1/(pi - 3))") == 1 / (sympy.pi - 3)
    # exact rationals are not limited by MAX_MAGNITUDE (the digit limits bound them)
    assert _guarded(parse_formula, "floor((10**60)**20/7)*x") == (10**1200 // 7) * x


def test_cli_refuses_the_formula_in_one_line(capsys):
    with _budget.limited(seconds=PARSE_SECONDS):
        code = main(["group", f"floor({HUGE})"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "is too large to evaluate" in err


_DERIVE_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sympy
    import activations
    from activations import x
    from groupcalc import derive
    # built in sympy (the parser refuses it): sympy.N at a check point of the extension by
    # continuity needs 10**39 digits of e; only the wall clock of derive can stop it.
    huge = sympy.sin(sympy.exp(sympy.Rational(10**40, 3)))
    act = dataclasses.replace(activations.get("tanh"), expr=x + huge * x)
    d = derive(act, timeout=5)
    steps = [str(s) for c in d.cases for s in c.certificate]
    print(json.dumps({"status": d.status, "cases": [c.status for c in d.cases], "steps": steps, "work": d.work}))
""")


def test_timeout_covers_the_preprocessing():
    try:
        run = subprocess.run([sys.executable, "-c", _DERIVE_SCRIPT], capture_output=True, text=True,
                             timeout=SUBPROCESS_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"derive(..., timeout=5) did not return within {SUBPROCESS_SECONDS} s") from None
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["status"] == "unknown" and got["cases"] == ["unknown"]
    assert any("Wall-clock limit reached" in s for s in got["steps"]), got["steps"]
    assert got["work"] == 0  # stopped before the exploration counted any step
