"""Property tests over the whole catalogue (issue 3, item 3), in float32 and float64.

ONE parametrisation (``CASES``, every catalogue entry at its defaults plus parameter values
and formulas that reach the other classes) drives one fixture, ``case``; every property
below runs for every case, so a new catalogue activation gets every check for free. The
groups come from the engine (:func:`groupcalc._groups.group`); what each property asserts
is independent of it: the intertwining identity evaluated numerically, the group laws,
Lemma 3.1 (phi(A) = sigma(A) sigma(I)^-1, computed from sigma alone), specificity (a least
squares fit shows that *no* matrix intertwines a random orthogonal matrix or an element of
a larger group) and Proposition 3.4 on random numpy MLPs.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import activations
import groupcalc.testing as gt
from groupcalc import Scalings, a
from groupcalc._check import check, check_group, compare_search, resolve_activation, search_scalings
from groupcalc._groups import IntertwinerGroup, group

#: Every catalogue entry at its defaults, then values and formulas reaching other classes.
CASES = [(name, {}) for name in activations.names()] + [
    ("leaky_relu", {"negative_slope": -1}),  # |x|: S = R*, phi = |a|
    ("leaky_relu", {"negative_slope": 1}),  # linear
    ("polynomial", {"degree": 3}),  # S = R*, phi = a^3
    ("elu", {"alpha": 0}),  # ReLU
    ("softshrink", {"lambd": 0}),  # the identity
    ("2*x + 1", {}),  # affine
    ("0*x + 3", {}),  # constant
]
DTYPES = [np.float32, np.float64]
PROPS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass(frozen=True)
class ActivationCase:
    label: str
    params: dict
    sigma: object
    group: IntertwinerGroup

    def sigma_as(self, dtype):
        def f(z):
            z = np.asarray(z, dtype=dtype)
            with np.errstate(all="ignore"):
                return np.asarray(self.sigma(z)).astype(dtype, copy=False)

        return f


def _id(c):
    name, params = c
    return name + "".join(f"-{k}={v}" for k, v in params.items())


@pytest.fixture(scope="module", params=CASES, ids=[_id(c) for c in CASES])
def case(request):
    name, params = request.param
    label, sigma, values = resolve_activation(name, params)
    return ActivationCase(label, values, sigma, group(name, **params))


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


# sigma(A x) = phi(A) sigma(x) ------------------------------------------------------------
@PROPS
@given(data=st.data())
def test_intertwining_identity(case, dtype, data):
    n = data.draw(st.integers(1, 4), label="n")
    A = data.draw(gt.group_elements(case.group, n), label="A")
    x = data.draw(gt.inputs(n, 12, dtype=dtype), label="x")
    gt.assert_intertwines(case.sigma_as(dtype), A.astype(dtype), case.group.phi(A.astype(dtype)), x=x)


@PROPS
@given(data=st.data())
def test_group_laws(case, dtype, data):
    n = data.draw(st.integers(1, 4), label="n")
    A = data.draw(gt.group_elements(case.group, n), label="A").astype(dtype)
    B = data.draw(gt.group_elements(case.group, n), label="B").astype(dtype)
    gt.assert_group_laws(case.group, A, B)


def test_lemma_3_1(case, dtype):
    """phi(A) = sigma(A) sigma(I)^-1 for every n where sigma(I_n) is invertible."""
    rng = np.random.default_rng(11)
    applied = []
    for n in (1, 2, 3, 4):
        for _ in range(3):
            A = case.group.sample(n, rng).astype(dtype)
            applied.append(gt.assert_lemma_3_1(case.sigma_as(dtype), case.group, A))
    # Lemma E.7: sigma(I_1) = sigma(1) is invertible unless sigma(1) = 0.
    if float(case.sigma(np.array([1.0]))[0]) != 0:
        assert any(applied)


# Specificity ----------------------------------------------------------------------------------
def test_random_orthogonal_fails_unless_gl(case, dtype):
    rng = np.random.default_rng(5)
    sigma = case.sigma_as(dtype)
    for n in (2, 3):
        Q = gt.random_orthogonal(n, rng)
        if case.group.kind in ("general_linear", "constant"):
            # GL_n is the whole group: a rotation must intertwine with phi(Q).
            gt.assert_intertwines(sigma, Q.astype(dtype), case.group.phi(Q.astype(dtype)), rng=rng)
            assert case.group.contains(Q)
        else:
            assert not case.group.contains(Q)
            gt.assert_not_intertwines(sigma, Q.astype(dtype), rng=rng)


def test_elements_of_a_larger_group_fail(case, dtype):
    rng = np.random.default_rng(6)
    sigma = case.sigma_as(dtype)
    if case.group.kind in ("general_linear", "constant"):
        pytest.skip("the group is all of GL_n: there is no larger group")
    for n in (2, 3):
        B = gt.outside_element(case.group, n, rng)
        assert not case.group.contains(B)
        gt.assert_not_intertwines(sigma, B.astype(dtype), rng=rng)


# Proposition 3.4 ------------------------------------------------------------------------------
@pytest.mark.parametrize("widths", [(3, 4, 2), (2, 5, 3, 4, 1)], ids=["1-hidden", "3-hidden"])
def test_proposition_3_4_mlp(case, dtype, widths):
    for seed in range(3):
        gt.assert_network_symmetry(case.sigma_as(dtype), case.group, widths, rng=seed, dtype=dtype)


# Planted wrong answers make the checks fail ------------------------------------------------
def _planted(G: IntertwinerGroup) -> IntertwinerGroup:
    """A wrong group for the same activation: a larger S, or the right S with a wrong phi."""
    if G.kind != "monomial":
        # linear sigma: phi(a) = a, so a^3 is wrong; constant/affine: phi(D) = D is wrong.
        phi = a**3 if G.kind == "general_linear" else a
        return IntertwinerGroup.from_scalings(Scalings("all", negative=-1 if G.kind == "general_linear" else None, phi=phi), "planted")
    s = G.scalings
    if s.positive != "all":
        return IntertwinerGroup.from_scalings(Scalings("all", None, s.negative if s.negative == -1 else None, s.phi), "planted")
    if s.negative is None:
        return IntertwinerGroup.from_scalings(Scalings("all", None, -1, s.phi), "planted")
    return IntertwinerGroup.from_scalings(Scalings("all", None, -1, s.phi * a), "planted")


def test_planted_wrong_answer_is_caught(case):
    wrong = _planted(case.group)
    assert not wrong.equals(case.group)
    residuals = check_group(case.sigma, wrong, n=3, trials=20, rng=0)
    assert max(residuals) > 1e-3
    with pytest.raises(AssertionError):
        for seed in range(20):
            A = wrong.sample(3, seed)
            gt.assert_intertwines(case.sigma, A, wrong.phi(A))
    if case.group.kind == "monomial":
        flags = compare_search(search_scalings(case.sigma), wrong)
        assert flags, "the numeric search should disagree with the planted group"


def test_check_agrees_with_engine(case):
    """`groupcalc check` agrees with the engine on every case (issue 3, done-when)."""
    report = check(case.label, case.params, n=3, trials=8, group=case.group, sigma=case.sigma)
    assert report.passed, report.describe()
    assert report.max_residual < 1e-6
    if case.group.kind == "monomial":
        assert report.specificity > 1e-3
