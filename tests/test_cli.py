"""The command line: output, JSON schema, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
import sympy

from groupcalc.cli import main

JSON_KEYS = {"condition", "class", "positive_scalings", "generator", "negative_scalings", "phi", "group", "phi_n",
             "sigma_I_singular_n", "status", "certificate"}


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_group_relu_text(capsys):
    code, out, err = run(["group", "relu"], capsys)
    assert code == 0 and err == ""
    assert "P D" in out and "(0, oo)" in out and "proved" in out


def test_group_json_schema(capsys):
    code, out, _ = run(["group", "leaky_relu", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["activation"] == "leaky_relu" and d["parameters"] == ["negative_slope"]
    for case in d["cases"]:
        assert JSON_KEYS <= set(case)
        sympy.sympify(case["condition"])  # parsable
        sympy.sympify(case["phi"])
    conds = {c["condition"]: c for c in d["cases"]}
    assert conds["Eq(negative_slope, 1)"]["class"] == "linear"


def test_group_param_and_latex(capsys):
    code, out, _ = run(["group", "leaky_relu", "--param", "negative_slope=-1", "--latex"], capsys)
    assert code == 0 and "tabular" in out and r"\left|{a}\right|" in out


def test_list_and_table(capsys):
    code, out, _ = run(["list"], capsys)
    assert code == 0 and "relu" in out and "gelu" in out
    code, out, _ = run(["table", "--format", "json"], capsys)
    rows = json.loads(out)
    import activations

    assert [r["activation"] for r in rows] == list(activations.names())


@pytest.mark.parametrize("argv, fragment", [
    (["group", "x +"], "invalid syntax"),
    (["group", "rleu"], "did you mean 'relu'"),
    (["group", "sqrt(x)"], "not real-valued"),
    (["group", "1/x"], "not defined at x = 0"),
    (["group", "x + I"], "not allowed"),
    (["group", "tanh"], None),
    (["group", "tanh()"], "takes one argument"),
    (["group", "exp"], None),
    (["group", "foo(x)"], "unknown function"),
    (["group", "__import__('os').system('echo hacked')"], "only plain function calls"),
    (["group", "x.real"], "unsupported syntax"),
    (["group", "x" + "+x" * 3000], "too long"),
    (["group", "x**100000"], "too large"),
    (["group", "relu", "--param", "slope=2"], "no parameter"),
    (["group", "leaky_relu", "--param", "negative_slope=abc"], "not a number"),
    (["group", "hardtanh", "--param", "min_val=2", "--param", "max_val=1"], "min_val < max_val"),
    (["group", "polynomial", "--param", "degree=2.5"], "positive integer"),
    (["group", "relu", "--timeout", "-1"], "--timeout"),
    (["group", "relu", "--work", "0"], "--work"),
    (["bogus"], "invalid choice"),
])
def test_bad_input_one_line_exit_2(argv, fragment, capsys):
    code, out, err = run(argv, capsys)
    if fragment is None:  # names that are valid catalogue entries succeed
        assert code == 0
        return
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err


def test_output_leads_with_the_status(capsys):
    code, out, _ = run(["group", "relu"], capsys)
    assert code == 0 and out.splitlines()[0] == "status: proved"
    code, out, _ = run(["group", "leaky_relu", "--json"], capsys)
    d = json.loads(out)
    assert list(d)[0] == "status" and d["status"] == "proved"
    assert all(list(c)[0] == "status" for c in d["cases"])


def test_unknown_answer_is_plain_and_null(capsys):
    code, out, _ = run(["group", "tanh", "--work", "1", "--json"], capsys)
    assert code == 0
    c = json.loads(out)["cases"][0]
    assert c["status"] == "unknown" and c["class"] is None and c["sigma_I_singular_n"] is None and c["phi_n"] is None
    assert c["group"] == "contains the permutation matrices; otherwise unknown"
    code, out, _ = run(["group", "tanh", "--work", "1"], capsys)
    assert out.splitlines()[0] == "status: unknown" and "class       : not established" in out
    assert "S contains" in out and "sigma(I_n)  : not established" in out


def test_list_into_a_closed_pipe_is_quiet():
    """`groupcalc list | head`: the reader is gone before groupcalc writes (the read end is
    closed first, so the write fails every time, not only when head wins a race)."""
    import os

    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([sys.executable, "-m", "groupcalc.cli", "list"], stdout=w, stderr=subprocess.PIPE, text=True,
                             timeout=60)
    finally:
        os.close(w)
    assert out.returncode == 141 and out.stderr == "", out.stderr


def test_formula_never_reaches_eval(tmp_path, capsys):
    marker = tmp_path / "pwned"
    code, _, err = run(["group", f"__import__('pathlib').Path('{marker}').touch()"], capsys)
    assert code == 2 and not marker.exists()


def test_console_script_cold_start():
    out = subprocess.run([sys.executable, "-m", "groupcalc.cli", "group", "relu", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cases"][0]["positive_scalings"] == "all"
