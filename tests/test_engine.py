"""Engine behaviour beyond the hand-derived table (tests/data/expected_groups.json):
architecture, timeouts, soundness of every claim, statuses and special values."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import sympy

import activations
import groupcalc
from groupcalc import _budget, a


def test_core_import_leaves_torch_out():
    code = "import sys, groupcalc, activations, groupcalc.cli, groupcalc.testing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("name", activations.names())
def test_catalogue_claims_hold_numerically(name):
    """Every claimed element satisfies sigma(a x) = phi(a) sigma(x): an independent float check."""
    act = activations.get(name)
    d = groupcalc.derive(name, act.defaults or None)
    case = d.cases[0]
    assert case.status == "proved", case.certificate
    s = case.scalings
    phi = sympy.lambdify(a, s.phi, "numpy")
    elems = [1.0] + ([0.5, 3.0] if s.positive == "all" else [])
    if s.negative is not None:
        elems += [float(s.negative) * e for e in elems]
    xs = np.linspace(-7, 7, 1001)
    for el in elems:
        lhs, rhs = act(el * xs), float(phi(el)) * act(xs)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-12)
    # and elements outside S fail: a = 2 if S+ is trivial, a = -1 if S has no negatives —
    # no b gives sigma(a x) = b sigma(x) (least-squares b leaves a residual)
    def residual(el):
        u, v = act(el * xs), act(xs)
        b = (u @ v) / (v @ v)
        return np.linalg.norm(u - b * v) / (np.linalg.norm(u) + np.linalg.norm(v))

    if s.positive == "trivial":
        assert residual(2.0) > 1e-4
    if s.negative is None:
        assert residual(-1.0) > 1e-4


# -- budget: counted work decides, the wall clock only guards ----------------------------
def test_wall_clock_guard_stops_a_busy_thread():
    """Off the main thread no SIGALRM exists; the guard must still stop pure-Python work
    that never calls charge() (a stand-in for one long sympy call)."""
    caught = []

    def busy():
        try:
            with _budget.limited(seconds=0.2):
                for _ in range(10**9):  # far longer than the guard; never finishes when it works
                    pass
        except _budget.OutOfBudget as err:
            caught.append(err.reason)

    t = threading.Thread(target=busy)
    t.start()
    t.join()
    assert caught == ["time"]


def test_unknown_is_sound_and_says_so():
    # 3 steps are far fewer than any derivation needs: the budget runs out before anything is proved
    d = groupcalc.derive("relu", work=3)
    c = d.cases[0]
    assert c.status == "unknown" and d.status == "unknown"
    assert any("Work budget spent" in step for step in c.certificate)
    # only what was established: the class (step 2 ran), S a lower bound ({1}), the rest null
    assert c.singular_n is None and c.phi_n is None
    assert c.scalings.positive == "trivial" and c.scalings.negative is None
    assert c.group.startswith("contains")
    assert d.to_json()["cases"][0]["sigma_I_singular_n"] is None
    assert list(d.to_json())[0] == "status" and list(c.to_json())[0] == "status"


def test_unknown_keeps_the_scalings_it_proved():
    # enough work for the positive part of x**3 but not for the rest: (0, oo) is established
    full = groupcalc.derive("x**3")
    partial = [groupcalc.derive("x**3", work=w) for w in range(1, full.work)]
    assert all(d.cases[0].status == "unknown" for d in partial)
    lower = [d.cases[0].scalings for d in partial]
    assert any(s.positive == "all" for s in lower)  # some budget ends after the positive part
    for s in lower:  # and every lower bound is contained in the true S = R* (phi = a^3)
        assert s.positive in ("trivial", "all") and s.negative in (None, -1)


def test_work_budget_is_deterministic():
    for w in (5, 40, 200):
        d1, d2 = groupcalc.derive("softshrink", work=w), groupcalc.derive("softshrink", work=w)
        assert d1 == d2 and d1.work == d2.work


def _answer(d):
    return [c.to_json() for c in d.cases], d.work


@pytest.mark.parametrize("formula", ["tanh(x) - 2*sigmoid(2*x) + 1", "softshrink", "x*tanh(x)"])
def test_same_answer_under_stub_load(formula):
    """Two CPU-bound threads compete for the interpreter while the derivation runs in a
    third thread (not the main one): the answer is the idle one, work count included."""
    idle = groupcalc.derive(formula)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(i * i for i in range(1000))

    hogs = [threading.Thread(target=spin) for _ in range(2)]
    out = []
    worker = threading.Thread(target=lambda: out.append(groupcalc.derive(formula)))
    for t in hogs:
        t.start()
    try:
        worker.start()
        worker.join()
    finally:
        stop.set()
        for t in hogs:
            t.join()
    assert _answer(out[0]) == _answer(idle)


def test_identity_in_disguise_is_constant_and_proved():
    # tanh(x) = 2 sigmoid(2x) - 1: the formula is identically 0
    c = groupcalc.derive("tanh(x) - 2*sigmoid(2*x) + 1").cases[0]
    assert (c.cls, c.status, c.singular_n) == ("constant", "proved", "all")


class _FakeClock:
    """time.monotonic for the budget module: each reading advances by ``tick`` seconds."""

    def __init__(self, tick):
        self.now, self.tick = 0.0, tick

    def monotonic(self):
        self.now += self.tick
        return self.now


def test_slow_clock_changes_nothing_inside_the_guard(monkeypatch):
    # a machine so busy that every step takes 1 ms: still far inside the 120 s guard
    idle = groupcalc.derive("softshrink")
    monkeypatch.setattr(_budget, "time", _FakeClock(1e-3))
    assert _answer(groupcalc.derive("softshrink")) == _answer(idle)


def test_wall_clock_stop_is_unknown_and_not_cached(monkeypatch):
    monkeypatch.setattr(_budget, "time", _FakeClock(1000.0))  # every step takes 1000 s
    d = groupcalc.derive("tanh")
    c = d.cases[0]
    assert c.status == "unknown" and c.cls is None and c.singular_n is None
    assert any("Wall-clock limit" in step for step in c.certificate)
    assert c.group == "contains the permutation matrices; otherwise unknown"
    g = groupcalc.group("x*tanh(x) + x**2")
    assert g.status == "unknown" and g.kind == "monomial" and g.scalings.positive == "trivial"
    monkeypatch.undo()
    g2 = groupcalc.group("x*tanh(x) + x**2")  # derived again, not the cached unknown
    assert g2.status == "proved" and g2.scalings.negative == -1


def test_numeric_step_is_not_called_proved():
    # log(x + sqrt(x^2+1)) + log(sqrt(x^2+1) - x) = log 1 = 0, which sympy's simplify does not
    # see: the identity sigma(-x) = sigma(x) is settled numerically, so the case is not "proved"
    c = groupcalc.derive("x**2 + log(x + sqrt(x**2+1)) + log(sqrt(x**2+1) - x)").cases[0]
    assert c.status == "verified-numerically"
    flagged = [s for s in c.certificate if "[Not symbolic:" in s]
    assert flagged and any(s.startswith("Settled numerically, not proved (step") for s in c.certificate)
    assert c.scalings.describe() == "R \\ {0}"


@pytest.mark.parametrize("formula, positive, negative, phi_at", [
    ("x**3", "all", True, {2: 8, -1: -1}),
    ("x*abs(x)", "all", True, {2: 4, -1: -1}),
    ("abs(x)**3", "all", True, {2: 8, -1: 1}),
    ("Heaviside(x)", "all", False, {3: 1}),
    ("x*sin(x)", "trivial", True, {-1: 1}),
    ("max(0,x) - 2*max(0,-x)", "all", False, {2: 2}),
    ("sigmoid(x) - 1/2", "trivial", True, {-1: -1}),
])
def test_formulas_beyond_catalogue(formula, positive, negative, phi_at):
    """Hand derivations: x^3 is odd and 3-homogeneous; x|x| odd, 2-homogeneous; |x|^3 even;
    Heaviside is 0-homogeneous (H(a x) = H(x), a > 0) and H(-x) = 1 - H(x) is no multiple;
    x sin x is even with Taylor terms x^2, x^4; the two-slope ReLU is 1-homogeneous with
    slopes 1 and 2 (no parity); sigmoid - 1/2 = tanh(x/2)/2 is odd."""
    c = groupcalc.derive(formula).cases[0]
    assert c.scalings.positive == positive
    assert c.scalings.negative_scalings == negative
    for at, value in phi_at.items():
        assert sympy.simplify(c.scalings.phi.subs(a, at) - value) == 0


def test_heaviside_theorem_e14_gap_reported():
    c = groupcalc.derive("Heaviside(x)").cases[0]
    assert any(name.startswith("sigma' not identically zero") and holds is False for name, holds, _ in c.hypotheses)


def test_special_values_found_by_engine():
    d = groupcalc.derive("swish")
    assert d.case(beta=0).cls == "linear"  # x/2
    assert d.case(beta=1).cls == "nonlinear"
    d = groupcalc.derive("leaky_relu")
    assert d.case(negative_slope=-1).scalings.negative_scalings  # |x|: missed by the paper
    assert not d.case(negative_slope=0.3).scalings.negative_scalings


def test_affine_and_constant():
    c = groupcalc.derive("2*x + 3").cases[0]
    assert c.cls == "affine" and "A 1 = 1" in c.group
    c = groupcalc.derive("3").cases[0]
    assert c.cls == "constant" and c.singular_n == "all n >= 2"
    c = groupcalc.derive("0*x").cases[0]
    assert c.cls == "constant" and c.singular_n == "all"


def test_sigma_identity_singular_list():
    # x^2 - 1: sigma(1) = 0 (n = 1 singular), sigma(0) = -1: 0 + (n-1)(-1) = 0 only at n = 1
    assert groupcalc.derive("x**2 - 1").cases[0].singular_n == (1,)
    # x^2 - 1/3 + ... : sigma(1) = 2/3, sigma(0) = -1/3 -> n = 1 - sigma(1)/sigma(0) = 3
    assert groupcalc.derive("x**2 - 1/3").cases[0].singular_n == (3,)


def test_results_are_immutable_values():
    d1, d2 = groupcalc.derive("tanh"), groupcalc.derive("tanh")
    assert d1 == d2 and hash(d1.cases[0].scalings) == hash(d2.cases[0].scalings)
    with pytest.raises(Exception):
        d1.cases[0].cls = "linear"
