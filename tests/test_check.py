"""Numeric verification: residuals, the black-box scaling search, reports and `groupcalc check`."""

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import sympy

from groupcalc import Scalings, a
from groupcalc import _check
from groupcalc._check import CheckReport, check, compare_search, intertwining_residual, search_scalings
from groupcalc._cli_check import add_parser, run
from groupcalc._groups import IntertwinerGroup


def _log_periodic(z):
    """z (2 + sin(2 pi log2|z|)): odd, and sigma(2 z) = 2 sigma(z) — S = {±2^k}, phi(a) = a."""
    z = np.asarray(z, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z == 0, 0.0, z * (2 + np.sin(2 * np.pi * np.log2(np.abs(z)))))


def _sqrt3_even(z):
    """|z| (2 + sin(4 pi log3|z|)): even, period 1/2 in log3 — S = {±sqrt(3)^k}, phi(a) = |a|."""
    z = np.asarray(z, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(z == 0, 0.0, np.abs(z) * (2 + np.sin(4 * np.pi * np.log(np.abs(z)) / np.log(3))))


# The search on functions whose S is known by hand -------------------------------------------
@pytest.mark.parametrize(
    "fn, positive, generator, negative, phis",
    [
        (lambda z: np.maximum(z, 0), "all", None, None, {2.0: 2.0, 0.5: 0.5}),
        (np.tanh, "trivial", None, -1.0, {-1.0: -1.0}),
        (lambda z: np.exp(-z * z / 2), "trivial", None, -1.0, {-1.0: 1.0}),
        (lambda z: z**3, "all", None, -1.0, {-2.0: -8.0, 3.0: 27.0}),
        (lambda z: 1 / (1 + np.exp(-z)), "trivial", None, None, {}),
        (np.exp, "trivial", None, None, {}),
        (_log_periodic, "discrete", 2.0, -1.0, {-1.0: -1.0}),
        (_sqrt3_even, "discrete", math.sqrt(3), -1.0, {-1.0: 1.0}),
        (lambda z: 2 * z, "all", None, -1.0, {-2.0: -2.0}),  # linear: G_1 = R*
        (lambda z: 0 * z + 3, "all", None, -1.0, {-2.0: 1.0}),  # constant: phi = 1
        (lambda z: 2 * z + 1, "trivial", None, None, {}),  # affine: G_1 = {1}
    ],
    ids=["relu", "tanh", "gaussian", "cube", "sigmoid", "exp", "log-periodic", "sqrt3", "linear", "constant", "affine"],
)
def test_search_hand_examples(fn, positive, generator, negative, phis):
    s = search_scalings(fn)
    assert s.positive == positive
    if generator is None:
        assert s.generator is None
    else:
        assert s.generator == pytest.approx(generator, rel=1e-7)
    assert s.negative == (None if negative is None else pytest.approx(negative, rel=1e-7))
    fits = dict(s.phi)
    for at, value in phis.items():
        assert at in fits, f"no phi fit at {at}: {fits}"
        assert fits[at] == pytest.approx(value, rel=1e-8)
    assert not s.notes
    json.dumps(s.to_json())


@pytest.mark.parametrize(
    "fn, name, params",
    [(lambda z: z**3, "polynomial", {"degree": 3}), (np.abs, "abs", {}), (lambda z: np.exp(-z * z / 2), "gaussian", {}),
     (lambda z: np.maximum(z, 0) ** 2, "squared_relu", {}), (np.tanh, "tanh", {})],
)
def test_estimated_group_matches_the_engine(fn, name, params):
    from groupcalc._groups import group

    est = search_scalings(fn).estimated_group()
    assert est.equals(group(name, **params)), est


def test_search_phi_values_are_fitted():
    s = search_scalings(lambda z: z**3)
    fits = dict(s.phi)
    assert fits[2.0] == pytest.approx(8.0) and fits[-2.0] == pytest.approx(-8.0)


def test_search_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'sigma'"):
        search_scalings(3)
    with pytest.raises(ValueError, match="'a_range'"):
        search_scalings(np.tanh, a_range=(2, 10))


def test_search_accepts_torch_callables():
    torch = pytest.importorskip("torch")
    s = search_scalings(torch.nn.functional.relu)
    assert s.positive == "all" and s.negative is None
    s = search_scalings(torch.nn.LeakyReLU(-1.0))  # a module: |x|
    assert s.positive == "all" and s.negative == -1.0
    assert dict(s.phi)[-2.0] == pytest.approx(2.0)
    s = search_scalings(torch.nn.functional.gelu)
    assert s.positive == "trivial" and s.negative is None


def test_numpy_search_does_not_import_torch():
    code = (
        "import sys, numpy as np; import groupcalc._check as c, groupcalc.testing, groupcalc._cli_check, groupcalc._groups;"
        "c.search_scalings(np.tanh); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Residuals -----------------------------------------------------------------------------------------
def test_residual_is_per_coordinate():
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    x = np.random.default_rng(0).normal(size=(2, 50))
    A = np.array([[0.0, -0.01], [100.0, 0.0]])  # the small coordinate is the wrong one
    assert intertwining_residual(relu, A, np.abs(A), x) > 0.5
    B = np.array([[0.0, 0.01], [100.0, 0.0]])
    assert intertwining_residual(relu, B, B, x) == 0.0


# check() and its report ------------------------------------------------------------------------
def test_check_report_on_hand_built_group():
    G = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=sympy.Abs(a)), "abs")
    rep = check("abs", n=3, trials=5, group=G, sigma=np.abs)
    assert isinstance(rep, CheckReport) and rep.passed and rep.flags == ()
    assert rep.max_residual < 1e-12 and rep.specificity > 0.01
    data = json.loads(json.dumps(rep.to_json()))
    assert data["passed"] is True and data["search"]["positive_scalings"] == "all"
    assert data["group"]["kind"] == "monomial" and data["n"] == 3
    with pytest.raises(AttributeError):
        rep.n = 4
    assert "agrees" in rep.describe()


@pytest.mark.parametrize(
    "wrong, word",
    [
        (Scalings("all", negative=-1, phi=a), "unsound"),  # claims -1 for relu
        (Scalings("all", phi=a**2), "unsound"),  # wrong phi
        (Scalings("trivial"), "missed"),  # misses the scalings
    ],
)
def test_check_flags_planted_answers(wrong, word):
    rep = check("relu", n=3, trials=10, group=IntertwinerGroup.from_scalings(wrong, "planted"), sigma=lambda z: np.maximum(z, 0))
    assert not rep.passed
    assert any(f.startswith(word) for f in rep.flags), rep.flags


def test_compare_search_generators():
    s = search_scalings(_log_periodic)
    right = IntertwinerGroup.from_scalings(Scalings("discrete", generator=2, negative=-1))
    coarser = IntertwinerGroup.from_scalings(Scalings("discrete", generator=4, negative=-1))
    assert compare_search(s, right) == ()
    assert compare_search(s, coarser)[0].startswith("missed")


def test_check_validates_arguments():
    with pytest.raises(ValueError, match="'n'"):
        check("relu", n=0)
    with pytest.raises(ValueError, match="'trials'"):
        check("relu", trials=0)


# The CLI -------------------------------------------------------------------------------------------
def _parse(argv):
    parser = argparse.ArgumentParser(prog="groupcalc")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["check", *argv])


def test_cli_text(capsys):
    assert run(_parse(["relu", "--n", "3", "--trials", "5"])) == 0
    out = capsys.readouterr().out
    assert "agrees" in out and "(0, oo)" in out


def test_cli_json_with_params(capsys):
    assert run(_parse(["leaky_relu", "--param", "negative_slope=-1", "--json", "--trials", "5"])) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["parameters"] == {"negative_slope": "-1"}
    assert data["group"]["negative_representative"] == -1.0 and data["group"]["phi"] == "Abs(a)"
    assert data["passed"] is True and data["max_residual"] < 1e-6


def test_cli_formula(capsys):
    assert run(_parse(["x*c + 1", "--param", "c=2", "--json", "--trials", "3"])) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["group"]["kind"] == "affine" and data["passed"] is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["relux"], "did you mean 'relu'"),
        (["x*c"], "needs values for parameter"),
        (["relu", "--param", "alpha=1"], "no parameter 'alpha'"),
        (["hardtanh", "--param", "min_val=2"], "must satisfy"),
        (["tanh(x"], "cannot parse"),
    ],
)
def test_cli_bad_input_exits_2(capsys, argv, message):
    assert run(_parse(argv)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_bad_option_values():
    with pytest.raises(SystemExit) as exc:
        _parse(["relu", "--n", "0"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        _parse(["relu", "--param", "negative_slope"])


def test_cli_disagreement_exits_1(capsys, monkeypatch):
    import groupcalc._groups as groups

    planted = IntertwinerGroup.from_scalings(Scalings("all", negative=-1), "planted")
    monkeypatch.setattr(groups, "group", lambda *args, **kw: planted)
    assert run(_parse(["relu", "--trials", "3"])) == 1
    assert "DISAGREES" in capsys.readouterr().out


def test_check_constants_are_documented():
    assert _check.DEFAULT_TOL == 1e-6


# groupcalc.testing strategies ------------------------------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import activations  # noqa: E402
import groupcalc.testing as gt  # noqa: E402

CUBE = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=a**3), "cube")
LOGP = IntertwinerGroup.from_scalings(Scalings("discrete", generator=2, negative=-1), "log-periodic")


@settings(max_examples=5, deadline=None)
@given(text=gt.catalogue_formulas(), act=gt.catalogue_activations())
def test_formula_and_activation_strategies(text, act):
    expr = activations.parse_formula(text)
    assert activations.x in expr.free_symbols or expr.is_number
    assert act.name in activations.names()


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_element_and_input_strategies(data):
    G = data.draw(st.sampled_from([CUBE, LOGP]))
    A = data.draw(gt.group_elements(G, 3))
    assert A.shape == (3, 3) and G.contains(A)
    assert G.scalar_in_s([data.draw(gt.scalings(G))])[0]
    x = data.draw(gt.inputs(3, 5, dtype=np.float32))
    assert x.dtype == np.float32 and x.shape == (3, 5) and np.all(np.abs(x) <= 4)
    if G is LOGP:
        gt.assert_intertwines(_log_periodic, A, G.phi(A), x=x.astype(float))


def test_formula_text_round_trips_the_catalogue():
    for act in activations.catalogue():
        expr = act.expr.subs({p.symbol: p.default for p in act.parameters})
        text = gt.formula_text(expr)
        if act.name == "identity":
            continue  # a bare x
        back = activations.parse_formula(text)
        xs = np.linspace(-7, 7, 57)
        np.testing.assert_allclose(activations.lambdify_numpy(back)(xs), activations.lambdify_numpy(expr)(xs), rtol=1e-12, atol=1e-12)


def test_wired_into_groupcalc_cli(capsys):
    """`groupcalc check` through the package's own entry point (groupcalc.cli:main)."""
    from groupcalc.cli import main

    assert main(["check", "tanh", "--json", "--trials", "3", "--n", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True and data["group"]["negative_representative"] == -1.0
    assert main(["check", "tanhh"]) == 2
    assert "did you mean 'tanh'" in capsys.readouterr().err


def test_formula_text_prints_equalities_and_every_catalogue_entry_is_a_leaf():
    # the parser reads Eq and Ne, so the printer writes them: a removable point's extension
    # Piecewise((sin(x)/x, Ne(x, 0)), (1, True)) and a point value Piecewise((2x, Eq(x, 1)), (x, True))
    # read back as the same expressions
    X = activations.x
    for expr in (sympy.Piecewise((sympy.sin(X) / X, sympy.Ne(X, 0)), (1, True)),
                 sympy.Piecewise((2 * X, sympy.Eq(X, 1)), (X, True))):
        text = gt.formula_text(expr)
        assert text.startswith("where(Ne(x, 0)") or text.startswith("where(Eq(x, 1)"), text
        assert activations.parse_formula(text) == expr
    # selu included: its exact constants are within the parser's limits
    from groupcalc.testing import _leaves

    assert sorted(n for n, _ in _leaves()) == sorted(activations.names())
