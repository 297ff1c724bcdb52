"""Unit tests of IntertwinerGroup: expectations derived by hand or by brute force here."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import groupcalc
from groupcalc import Scalings, a
from groupcalc._groups import IntertwinerGroup, group

RELU = IntertwinerGroup.from_scalings(Scalings("all"), "relu-like")
TANH = IntertwinerGroup.from_scalings(Scalings("trivial", negative=-1), "odd")
GAUSS = IntertwinerGroup.from_scalings(Scalings("trivial", negative=-1, phi=sympy.Integer(1)), "even")
CUBE = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=a**3), "cube")
SIGMOID = IntertwinerGroup.from_scalings(Scalings("trivial"), "sigmoid-like")
DISCRETE = IntertwinerGroup.from_scalings(Scalings("discrete", generator=2, phi=a), "log-periodic")
SQRT2 = IntertwinerGroup.from_scalings(Scalings("discrete", generator=2, negative=-sympy.sqrt(2), phi=sympy.Abs(a) ** sympy.Rational(3, 2)))
GL = IntertwinerGroup("general_linear", label="linear")
AFFINE = IntertwinerGroup("affine", label="affine")
CONST = IntertwinerGroup("constant", label="constant")
ESTIMATED = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=a), "estimated", status="verified-numerically")
LOWER_BOUND = IntertwinerGroup("monomial", Scalings("trivial"), "unfinished", "unknown")
ALL = [RELU, TANH, GAUSS, CUBE, SIGMOID, DISCRETE, SQRT2, GL, AFFINE, CONST, ESTIMATED, LOWER_BOUND]
MONOMIAL = [G for G in ALL if G.kind == "monomial"]


def _namespace():
    ns = dict(vars(sympy))
    ns.update(a=a, Scalings=Scalings, IntertwinerGroup=IntertwinerGroup)
    return ns


# Values ------------------------------------------------------------------------------
@pytest.mark.parametrize("G", ALL, ids=repr)
def test_repr_round_trips(G):
    back = eval(repr(G), _namespace())  # noqa: S307 - our own repr
    assert back == G and hash(back) == hash(G)
    assert repr(back) == repr(G)


def test_status_is_carried_and_checked():
    assert RELU.status == "proved" and ESTIMATED.status == "verified-numerically" and LOWER_BOUND.status == "unknown"
    assert ESTIMATED != IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=a), "estimated")
    assert RELU.intersect(LOWER_BOUND).status == "unknown" and RELU.intersect(TANH).status == "proved"
    with pytest.raises(ValueError, match="status"):
        IntertwinerGroup("monomial", Scalings("all"), "x", "guessed")


def test_engine_status_reaches_the_group():
    from groupcalc import derive

    assert groupcalc.group("relu").status == "proved"
    unfinished = derive("tanh", work=1).cases[0]  # the class is not established yet
    g = IntertwinerGroup.from_case(unfinished, label="tanh")
    assert (g.status, g.kind, g.scalings.positive, g.scalings.negative) == ("unknown", "monomial", "trivial", None)


def test_equality_is_structural_and_equals_is_mathematical():
    same = IntertwinerGroup.from_scalings(Scalings("all"), "relu-like")
    assert same == RELU and hash(same) == hash(RELU)
    relabelled = IntertwinerGroup.from_scalings(Scalings("all"), "other")
    assert relabelled != RELU and relabelled.equals(RELU)
    # a**2 written two ways: different structure is caught by ==, same group by equals().
    g1 = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=a**2))
    g2 = IntertwinerGroup.from_scalings(Scalings("all", negative=-1, phi=sympy.Abs(a) ** 2))
    assert g1.equals(g2)
    assert not CUBE.equals(g1)
    assert not RELU.equals(GL)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RELU.kind = "affine"


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(kind="unitary"), "kind"),
        (dict(kind="monomial"), "scalings"),
        (dict(kind="affine", scalings=Scalings("all")), "scalings"),
        (dict(kind="monomial", scalings=Scalings("all", phi=a ** sympy.Symbol("d", real=True))), "free symbols"),
        (dict(kind="monomial", scalings=Scalings("discrete", generator=sympy.Rational(1, 2))), "generator"),
        (dict(kind="monomial", scalings=Scalings("all"), label=3), "label"),
    ],
)
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        IntertwinerGroup(**kwargs)


def test_matrix_arguments_are_validated():
    with pytest.raises(ValueError, match="'A'"):
        RELU.contains(np.ones((2, 3)))
    with pytest.raises(ValueError, match="'n'"):
        RELU.sample(0)
    with pytest.raises(ValueError, match="'rng'"):
        RELU.sample(2, rng="seed")
    with pytest.raises(ValueError, match="monomial"):
        RELU.phi(np.ones((2, 2)))


# Membership -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "G, A, expected",
    [
        (RELU, [[0, 2], [3, 0]], True),
        (RELU, [[0, -2], [3, 0]], False),
        (RELU, [[1, 1], [0, 1]], False),
        (RELU, [[1, 0], [1e-12, 1]], True),  # within the default tolerance
        (RELU, [[1, 0], [1e-3, 1]], False),
        (TANH, [[0, -1], [1, 0]], True),
        (TANH, [[0, -1], [2, 0]], False),
        (SIGMOID, [[0, 1], [1, 0]], True),
        (SIGMOID, [[0, -1], [1, 0]], False),
        (DISCRETE, [[4, 0], [0, 0.5]], True),
        (DISCRETE, [[3, 0], [0, 1]], False),
        (DISCRETE, [[-2, 0], [0, 1]], False),
        (SQRT2, [[-math.sqrt(2), 0], [0, 2]], True),  # (-sqrt 2)^1 and (-sqrt 2)^2
        (SQRT2, [[-2 * math.sqrt(2), 0], [0, 0.5]], True),  # (-sqrt 2)^3 and (-sqrt 2)^-2
        (SQRT2, [[-2, 0], [0, 1]], False),  # -2 = -sqrt2 * sqrt2 and sqrt2 is not in 2^Z
        (SQRT2, [[math.sqrt(2), 0], [0, 1]], False),
        (GL, [[1, 2], [3, 4]], True),
        (GL, [[1, 2], [2, 4]], False),
        (AFFINE, [[2, -1], [0.5, 0.5]], True),
        (AFFINE, [[1, 1], [0, 1]], False),
        (CONST, [[0, 1], [1, 1]], True),
    ],
)
def test_contains_hand_examples(G, A, expected):
    assert G.contains(np.array(A, dtype=float)) is expected


@pytest.mark.parametrize("G", ALL, ids=repr)
def test_samples_are_members_and_closed(G):
    rng = np.random.default_rng(1)
    for n in (1, 2, 5):
        A, B = G.sample(n, rng), G.sample(n, rng)
        assert A.shape == (n, n) and A.dtype == np.float64
        assert G.contains(A) and G.contains(B)
        assert G.contains(G.compose(A, B), tol=1e-7)
        Ai = G.inverse(A)
        assert G.contains(Ai, tol=1e-7)
        np.testing.assert_allclose(A @ Ai, np.eye(n), atol=1e-9)
        np.testing.assert_allclose(G.phi(A @ B), G.phi(A) @ G.phi(B), rtol=1e-9, atol=1e-9)


def test_sampled_permutations_are_uniform():
    rng = np.random.default_rng(7)
    counts = {}
    for _ in range(3000):
        A = SIGMOID.sample(3, rng)
        key = tuple(np.argmax(A, axis=0))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6
    # 500 expected per permutation; the binomial sd is about 20.
    assert all(400 < c < 600 for c in counts.values()), counts


def test_scaling_distribution_is_as_documented():
    rng = np.random.default_rng(3)
    logs = np.log(RELU.sample_scalings(20000, rng))
    assert abs(logs.mean()) < 0.05 and abs(logs.std() - 1.0) < 0.05
    vals = CUBE.sample_scalings(20000, rng)
    assert 0.47 < np.mean(vals < 0) < 0.53
    d = DISCRETE.sample_scalings(5000, rng)
    assert set(np.round(np.log2(d)).astype(int)) == {-2, -1, 0, 1, 2}
    np.testing.assert_allclose(d, 2.0 ** np.round(np.log2(d)))
    s = SQRT2.sample_scalings(5000, rng)
    assert SQRT2.scalar_in_s(s).all() and (s < 0).any()
    assert set(np.unique(TANH.sample_scalings(100, rng))) == {-1.0, 1.0}


# phi, inverse ------------------------------------------------------------------------------
def test_phi_hand_examples():
    A = np.array([[0.0, -2.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(CUBE.phi(A), [[0, -8, 0], [0.125, 0, 0], [0, 0, 27]])
    B = np.array([[0.0, -1.0], [1.0, 0.0]])
    np.testing.assert_array_equal(GAUSS.phi(B), [[0, 1], [1, 0]])  # phi = abs
    np.testing.assert_array_equal(TANH.phi(B), B)
    np.testing.assert_allclose(SQRT2.phi(np.diag([-math.sqrt(2), 4.0])), np.diag([2 ** 0.75, 8.0]))
    M = np.array([[2.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(GL.phi(M), M)
    np.testing.assert_array_equal(CONST.phi(M), np.eye(2))


def test_phi_keeps_float32():
    A = RELU.sample(3, 0).astype(np.float32)
    assert RELU.phi(A).dtype == np.float32 and GAUSS.phi(TANH.sample(3, 0).astype(np.float32)).dtype == np.float32


def test_inverse_hand_example():
    A = np.array([[0.0, 4.0], [-0.5, 0.0]])
    np.testing.assert_array_equal(CUBE.inverse(A), [[0.0, -2.0], [0.25, 0.0]])


def test_affine_group_is_the_group_of_an_affine_activation():
    """sigma(x) = 2x + 1: sigma(A x) = A sigma(x) exactly when A 1 = 1 (derivation in docs/groups.md)."""
    sigma = lambda z: 2 * z + 1  # noqa: E731
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 10))
    A = AFFINE.sample(3, rng)
    np.testing.assert_allclose(sigma(A @ x), AFFINE.phi(A) @ sigma(x), atol=1e-12)
    B = 2 * np.eye(3)
    assert not AFFINE.contains(B)
    # no linear C with sigma(B x) = C sigma(x): least squares leaves a residual.
    S, T = sigma(x), sigma(B @ x)
    C = np.linalg.lstsq(S.T, T.T, rcond=None)[0].T
    assert np.abs(C @ S - T).max() > 0.1


# nearest ---------------------------------------------------------------------------------------
def _brute_nearest(G, M):
    """Exhaustive: every permutation, every column's best scaling from an explicit candidate list."""
    n = M.shape[0]
    s = G.one_dimensional()
    if s.positive == "trivial":
        cand = [1.0]
    elif s.positive == "discrete":
        # the documented floor where the infimum is not attained: min_scale = 1e-6 * max|M|
        floor = 1e-6 * max(np.abs(M).max(), 1e-300)
        cand = [float(s.generator) ** k for k in range(-60, 61) if float(s.generator) ** k >= floor * (1 - 1e-12)]
    else:
        cand = None
    best, best_cost = None, math.inf
    for perm in itertools.permutations(range(n)):
        A = np.zeros_like(M)
        for j, i in enumerate(perm):
            m = M[i, j]
            if cand is None:  # S+ = (0, oo): 1-d convex problem, solved by a dense search
                # from the documented floor (min_scale = 1e-6 relative to max|M|) where the
                # infimum is not attained
                floor = 1e-6 * max(np.abs(M).max(), 1e-300)
                grid = np.concatenate([[floor], np.geomspace(floor, 100, 20001)] + ([-np.geomspace(floor, 100, 20001)] if s.negative is not None else []))
            else:
                grid = np.array(cand + ([float(s.negative) * c for c in cand] if s.negative is not None else []))
            A[i, j] = grid[np.argmin((grid - m) ** 2)]
        cost = np.sum((A - M) ** 2)
        if cost < best_cost - 1e-12:
            best, best_cost = A, cost
    return best, best_cost


@pytest.mark.parametrize("G", [RELU, TANH, CUBE, SIGMOID, DISCRETE], ids=repr)
@settings(max_examples=15, deadline=None)
@given(M=arrays(np.float64, (3, 3), elements=st.floats(-5, 5)))
def test_nearest_matches_brute_force(G, M):
    A = G.nearest(M)
    assert G.contains(A, tol=1e-9) or (G.positive_scalings == "all" and np.any(np.abs(A) < 1e-3))
    _, best_cost = _brute_nearest(G, M)
    assert np.sum((A - M) ** 2) <= best_cost + 1e-6 * (1 + best_cost)


def test_nearest_hand_examples():
    M = np.array([[0.1, 2.0], [3.0, -0.2]])
    np.testing.assert_array_equal(RELU.nearest(M), [[0, 2], [3, 0]])
    np.testing.assert_array_equal(SIGMOID.nearest(M), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(DISCRETE.nearest(M), [[0, 2], [2, 0]])  # 3 is nearer 2 than 4
    np.testing.assert_allclose(AFFINE.nearest(np.array([[1.0, 1.0], [0.0, 0.0]])), [[0.5, 0.5], [0.5, 0.5]])


@pytest.mark.parametrize("G", MONOMIAL + [AFFINE], ids=repr)
def test_nearest_is_idempotent_on_members(G):
    A = G.sample(4, np.random.default_rng(5))
    np.testing.assert_allclose(G.nearest(A), A, rtol=1e-12)


def test_project_scalings():
    np.testing.assert_allclose(DISCRETE.project_scalings([3.1, 2.9, 0.3, 100]), [4, 2, 0.25, 128])
    np.testing.assert_allclose(CUBE.project_scalings([-2.5, 0.7]), [-2.5, 0.7])
    np.testing.assert_allclose(TANH.project_scalings([-0.2, 0.2, 7]), [-1, 1, 1])
    assert RELU.project_scalings([-3.0])[0] == pytest.approx(1e-6)


# Topology ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "G, n, dim, comps",
    [
        (RELU, 3, 3, 6),  # 3! permutations, D in (0, oo)^3 connected
        (TANH, 3, 0, 48),  # 3! * 2^3 sign patterns
        (CUBE, 3, 3, 48),
        (SIGMOID, 4, 0, 24),
        (DISCRETE, 2, 0, math.inf),
        (GL, 3, 9, 2),
        (AFFINE, 3, 6, 2),
        (AFFINE, 1, 0, 1),
        (CONST, 2, 4, 2),
    ],
)
def test_dimension_and_components(G, n, dim, comps):
    assert G.dimension(n) == dim and G.components(n) == comps


def test_describe_is_readable():
    assert "(0, oo)" in RELU.describe() and "n! components" in RELU.describe()
    assert "{1, -1}" in TANH.describe() and "2^n" in TANH.describe()
    assert "infinitely many" in DISCRETE.describe()
    assert "rows sum to 1" in AFFINE.describe()
    assert "not unique" in CONST.describe()


def test_intersect_hand_examples():
    assert CUBE.intersect(RELU).one_dimensional() == Scalings("all", phi=a**3)
    assert CUBE.intersect(TANH).one_dimensional().describe() == "{1, -1}"
    assert RELU.intersect(TANH).one_dimensional().describe() == "{1}"
    g4 = IntertwinerGroup.from_scalings(Scalings("discrete", generator=4, negative=-2))
    g8 = IntertwinerGroup.from_scalings(Scalings("discrete", generator=8, negative=-1))
    both = g4.intersect(g8).one_dimensional()
    # 4^Z ∩ 8^Z = 64^Z; -2*4^k = -8^m needs 2k+1 = 3m: -8 (k = m = 1).
    assert both.positive == "discrete" and both.generator == 64 and both.negative == -8
    g3 = IntertwinerGroup.from_scalings(Scalings("discrete", generator=3))
    assert DISCRETE.intersect(g3).one_dimensional().positive == "trivial"


# From the engine ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, kind, positive, negative",
    [  # hand-derived (docs/groups.md and the paper's Table 1)
        ("relu", {}, "monomial", "all", None),
        ("gaussian", {}, "monomial", "trivial", -1.0),
        ("polynomial", {"degree": 3}, "monomial", "all", -1.0),
        ("identity", {}, "general_linear", None, None),
        ("2*x + 1", {}, "affine", None, None),
    ],
)
def test_group_from_engine(name, params, kind, positive, negative):
    G = group(name, **params)
    assert isinstance(G, IntertwinerGroup) and G.kind == kind
    assert G.positive_scalings == positive
    assert G.negative == negative
    assert G is group(name, **params)  # cached value


def test_group_substitutes_parameters():
    G = group("polynomial", degree=3)
    np.testing.assert_allclose(G.phi_scalar(np.array([2.0, -1.0])), [8.0, -1.0])


def test_from_case_needs_a_case():
    with pytest.raises(ValueError, match="case"):
        IntertwinerGroup.from_case("relu")


def test_exported_from_package():
    assert getattr(groupcalc, "IntertwinerGroup", IntertwinerGroup) is IntertwinerGroup


@pytest.mark.parametrize("status, mark", [("unknown", "[unknown"), ("verified-numerically", "[verified-numerically]")])
def test_describe_leads_with_a_status_that_is_not_proved(status, mark):
    from groupcalc import Scalings
    from groupcalc._groups import IntertwinerGroup

    g = IntertwinerGroup.from_scalings(Scalings("trivial", None, -1), status=status)
    assert g.describe().startswith(mark)
    assert not IntertwinerGroup.from_scalings(Scalings("trivial", None, -1)).describe().startswith("[")
