"""torch_bridge.similarity: agreement with reference implementations written here from the
definitions, invariance under sampled group elements, non-invariance under rotations,
bounds, symmetry and input errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from groupcalc import GroupCalcError, Scalings, a
from groupcalc._groups import IntertwinerGroup
from torch_bridge.similarity import (
    g_cka,
    g_procrustes,
    laplace_cka,
    linear_cka,
    orthogonal_procrustes,
    rbf_cka,
    resolve_group,
    subspace_match,
)

# Groups built by hand from their scalings, to test the measures' handling of each shape of
# S independently of the engine (the engine-derived groups are tested further down).
RELU = IntertwinerGroup.from_scalings(Scalings("all"), label="relu-like")
SIGNED = IntertwinerGroup.from_scalings(Scalings("all", negative=-1), label="odd-power-like")
PERM = IntertwinerGroup.from_scalings(Scalings("trivial"), label="sigmoid-like")
SIGNPERM = IntertwinerGroup.from_scalings(Scalings("trivial", negative=-1), label="tanh-like")
DISCRETE = IntertwinerGroup.from_scalings(Scalings("discrete", generator=2), label="powers of 2")
GAUSS = IntertwinerGroup.from_scalings(Scalings("trivial", negative=-1, phi=a**0), label="gaussian-like")
GL = IntertwinerGroup("general_linear", label="linear")
MONOMIAL = [RELU, SIGNED, PERM, SIGNPERM, DISCRETE]


def rng_(seed=0):
    return np.random.default_rng(seed)


def relu_features(n=60, c=5, spatial=(), seed=0):
    return np.maximum(rng_(seed).normal(size=(n, c) + spatial), 0)


def act_on_channels(X, A, shift=None):
    """Y[n, :, ...] = A^T X[n, :, ...] (+ shift per channel): rows times a matrix, per position."""
    Y = np.einsum("nc...,cd->nd...", X, A)
    if shift is not None:
        Y = Y + shift.reshape((1, -1) + (1,) * (X.ndim - 2))
    return Y


def random_rotation(c, seed=1):
    Q, R = np.linalg.qr(rng_(seed).normal(size=(c, c)))
    return Q * np.sign(np.diag(R))


# ----------------------------------------------------------------------------- references
def ref_hsic1(K, L):
    """HSIC_1 as the inner product of U-centred matrices (Szekely and Rizzo's U-centring),
    an independent route to the estimator of Song et al. / Nguyen et al. eq. 3."""
    n = K.shape[0]

    def ucenter(M):
        M = M.astype(float).copy()
        np.fill_diagonal(M, 0)
        U = M - M.sum(1, keepdims=True) / (n - 2) - M.sum(0, keepdims=True) / (n - 2) + M.sum() / ((n - 1) * (n - 2))
        np.fill_diagonal(U, 0)
        return U

    return float((ucenter(K) * ucenter(L)).sum() / (n * (n - 3)))


def ref_cka(K, L):
    return ref_hsic1(K, L) / math.sqrt(ref_hsic1(K, K) * ref_hsic1(L, L))


def ref_channels(X, center=True, normalise=True):
    X = np.asarray(X, float).reshape(X.shape[0], X.shape[1], -1)
    if center:
        X = X - X.mean(axis=(0, 2), keepdims=True)
    if normalise:
        X = X / np.sqrt((X**2).sum(axis=(0, 2), keepdims=True))
    return X


def ref_max_kernel(X):
    """K_ij = max_c <x_i^c, x_j^c>, straight from appendix D.7.2 (N x N x C in memory)."""
    return np.einsum("icp,jcp->ijc", X, X).max(axis=2)


def ref_g_cka(X, Y, normalise=True):
    return ref_cka(ref_max_kernel(ref_channels(X, normalise=normalise)), ref_max_kernel(ref_channels(Y, normalise=normalise)))


def ref_g_procrustes(X, Y, signs=False, normalise=True):
    """Definition 5.2 by brute force over all (signed) permutations of channels."""
    Xt = ref_channels(X, center=False, normalise=normalise)
    Yt = ref_channels(Y, center=False, normalise=normalise)
    d = Xt.shape[1]
    best = math.inf
    sign_choices = itertools.product([1, -1], repeat=d) if signs else [(1,) * d]
    sign_choices = list(sign_choices)
    for perm in itertools.permutations(range(d)):
        for s in sign_choices:
            best = min(best, np.sqrt(((Xt - Yt[:, list(perm)] * np.array(s)[None, :, None]) ** 2).sum()))
    return 1 - best / (np.sqrt((Xt**2).sum()) + np.sqrt((Yt**2).sum()))


def ref_orthogonal_procrustes(X, Y):
    Xf = np.asarray(X, float).reshape(X.shape[0], X.shape[1], -1).transpose(0, 2, 1).reshape(-1, X.shape[1])
    Yf = np.asarray(Y, float).reshape(Y.shape[0], Y.shape[1], -1).transpose(0, 2, 1).reshape(-1, Y.shape[1])
    Xf, Yf = Xf / np.linalg.norm(Xf), Yf / np.linalg.norm(Yf)
    R, _ = scipy.linalg.orthogonal_procrustes(Yf, Xf)
    return 1 - np.linalg.norm(Xf - Yf @ R) / 2


def ref_linear_cka(X, Y):
    Xf = X.reshape(X.shape[0], -1)
    Yf = Y.reshape(Y.shape[0], -1)
    return ref_cka(Xf @ Xf.T, Yf @ Yf.T)


def ref_rbf_cka(X, Y, threshold=1.0):
    def gram(F):
        F = F.reshape(F.shape[0], -1)
        D = ((F[:, None, :] - F[None, :, :]) ** 2).sum(-1)
        return np.exp(-D / (2 * threshold**2 * np.median(D)))

    return ref_cka(gram(X), gram(Y))


def ref_laplace_cka(X, Y, threshold=1.0):
    def gram(F):
        F = ref_channels(F)
        D = np.sqrt(((F[:, None] - F[None, :]) ** 2).sum(-1)).sum(-1)
        return np.exp(-D / (threshold * np.median(D)))

    return ref_cka(gram(X), gram(Y))


def ref_subspace_match(X, Y, eps):
    """The largest epsilon-match by enumerating all pairs of subsets (Wang et al. Def. 3)."""
    Zx = X.reshape(X.shape[0], X.shape[1], -1).transpose(1, 0, 2).reshape(X.shape[1], -1)
    Zy = Y.reshape(Y.shape[0], Y.shape[1], -1).transpose(1, 0, 2).reshape(Y.shape[1], -1)

    def close(v, B):
        if len(B) == 0:
            return False
        coef, *_ = np.linalg.lstsq(B.T, v, rcond=None)
        return np.linalg.norm(v - B.T @ coef) <= eps * np.linalg.norm(v) + 1e-12

    best = 0
    for r in range(0, Zx.shape[0] + 1):
        for sx in itertools.combinations(range(Zx.shape[0]), r):
            for q in range(0, Zy.shape[0] + 1):
                for sy in itertools.combinations(range(Zy.shape[0]), q):
                    ok = all(close(Zx[i], Zy[list(sy)]) for i in sx) and all(close(Zy[j], Zx[list(sx)]) for j in sy)
                    if ok:
                        best = max(best, r + q)
    return best / (Zx.shape[0] + Zy.shape[0])


# ----------------------------------------------------------------------------- agreement with references
@pytest.mark.parametrize("spatial", [(), (3, 2)])
def test_g_cka_matches_reference(spatial):
    X = relu_features(45, 5, spatial, seed=1)
    Y = relu_features(45, 4, spatial, seed=2) + 0.5 * X[:, :4]
    assert g_cka(X, Y, RELU) == pytest.approx(ref_g_cka(X, Y), abs=1e-10)


def test_g_cka_without_scalings_does_not_normalise():
    X = relu_features(30, 4, seed=3) * np.array([1, 5, 0.2, 3])
    Y = relu_features(30, 4, seed=4)
    assert g_cka(X, Y, PERM) == pytest.approx(ref_g_cka(X, Y, normalise=False), abs=1e-10)
    assert g_cka(X, Y, PERM) != pytest.approx(ref_g_cka(X, Y), abs=1e-3)


def test_max_kernel_blocks_cover_the_matrix(monkeypatch):
    """Several row, column and channel blocks (and ragged edges) give the reference kernel."""
    import torch_bridge.similarity._kernels as kernels

    monkeypatch.setattr(kernels, "_blocks", lambda n, c, elements=0: (7, 11, 3))
    Z = rng_(5).normal(size=(8, 30, 4))
    K = kernels.max_gram(torch.from_numpy(Z)).numpy()
    R = ref_max_kernel(Z.transpose(1, 0, 2))
    np.testing.assert_allclose(K, R, atol=1e-12)
    K1 = kernels._symmetric_blockwise(torch.from_numpy(Z).contiguous(), "max", workers=1).numpy()
    np.testing.assert_allclose(K1, R, atol=1e-12)


@pytest.mark.parametrize("group,signs", [(RELU, False), (SIGNED, True)])
@pytest.mark.parametrize("spatial", [(), (2, 2)])
def test_g_procrustes_matches_brute_force(group, signs, spatial):
    X = rng_(6).normal(size=(25, 4) + spatial)
    Y = rng_(7).normal(size=(25, 4) + spatial) + X[:, [2, 0, 3, 1]]
    assert g_procrustes(X, Y, group) == pytest.approx(ref_g_procrustes(X, Y, signs=signs), abs=1e-10)


def test_g_procrustes_without_scalings_matches_brute_force():
    X = rng_(8).normal(size=(20, 4)) * 3
    Y = rng_(9).normal(size=(20, 4))
    assert g_procrustes(X, Y, PERM) == pytest.approx(ref_g_procrustes(X, Y, normalise=False), abs=1e-10)
    assert g_procrustes(X, Y, SIGNPERM) == pytest.approx(ref_g_procrustes(X, Y, signs=True, normalise=False), abs=1e-10)


@pytest.mark.parametrize("spatial", [(), (3, 3)])
def test_orthogonal_procrustes_matches_scipy(spatial):
    X = rng_(10).normal(size=(30, 5) + spatial)
    Y = rng_(11).normal(size=(30, 5) + spatial) + act_on_channels(X, random_rotation(5))
    assert orthogonal_procrustes(X, Y) == pytest.approx(ref_orthogonal_procrustes(X, Y), abs=1e-10)


@pytest.mark.parametrize("shape", [(40, 6), (40, 3, 4, 4)])  # feature-space route, then Gram route
def test_linear_cka_matches_reference(shape):
    X = rng_(12).normal(size=shape)
    Y = rng_(13).normal(size=shape) + X**2
    assert linear_cka(X, Y) == pytest.approx(ref_linear_cka(X, Y), abs=1e-10)


def test_linear_cka_streams_over_batches(monkeypatch):
    import torch_bridge.similarity._features as features

    X = rng_(14).normal(size=(50, 4))
    Y = rng_(15).normal(size=(50, 3)) + X[:, :3]
    monkeypatch.setattr(features, "BATCH_ELEMENTS", 7)
    assert linear_cka(X, Y) == pytest.approx(ref_linear_cka(X, Y), abs=1e-10)


@pytest.mark.parametrize("n", [35, 36])  # odd and even counts: numpy's median convention
def test_rbf_and_laplace_cka_match_reference(n):
    X = relu_features(n, 4, (2, 2), seed=16)
    Y = relu_features(n, 3, (2, 2), seed=17) + X[:, :3]
    assert rbf_cka(X, Y) == pytest.approx(ref_rbf_cka(X, Y), abs=1e-10)
    assert rbf_cka(X, Y, threshold=0.5) == pytest.approx(ref_rbf_cka(X, Y, 0.5), abs=1e-10)
    assert laplace_cka(X, Y, RELU) == pytest.approx(ref_laplace_cka(X, Y), abs=1e-10)
    X2, Y2 = X[:, :, 0, 0], Y[:, :, 0, 0]
    assert laplace_cka(X2, Y2, RELU) == pytest.approx(ref_laplace_cka(X2, Y2), abs=1e-10)


@pytest.mark.parametrize("eps", [0.3, 0.6])
def test_subspace_match_matches_enumeration(eps):
    base = rng_(18).normal(size=(12, 2))
    X = np.column_stack([base[:, 0], base[:, 1], rng_(19).normal(size=12)])
    Y = np.column_stack([base @ [1, 1] + 0.2 * rng_(20).normal(size=12), rng_(21).normal(size=12), base[:, 0]])
    assert subspace_match(X, Y, eps) == pytest.approx(ref_subspace_match(X, Y, eps))


def test_unbiased_estimator_and_the_reference_code_formula_agree():
    """The package's HSIC (Song et al. form, as in the paper's code) equals U-centring."""
    from torch_bridge.similarity._hsic import hsic_terms

    F = rng_(22).normal(size=(9, 3))
    K = np.abs(F @ F.T)
    L = np.maximum(F, 0) @ np.maximum(F, 0).T
    expected = (ref_hsic1(K, K), ref_hsic1(L, L), ref_hsic1(K, L))
    assert hsic_terms(torch.from_numpy(K.copy()), torch.from_numpy(L.copy())) == pytest.approx(expected, abs=1e-12)
    # The upper-triangle mode (used by g_cka) reads nothing on or below the diagonal.
    lower = np.tril(np.ones_like(K, dtype=bool))
    Ku, Lu = np.where(lower, np.nan, K), np.where(lower, np.nan, L)
    assert hsic_terms(torch.from_numpy(Ku), torch.from_numpy(Lu), upper=True) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- invariance
def sampled(G, c, seed, side="post"):
    A = G.sample(c, np.random.default_rng(seed))
    return G.phi(A) if side == "post" else A


@pytest.mark.parametrize("G", MONOMIAL, ids=lambda g: g.label)
@pytest.mark.parametrize("spatial", [(), (2, 3)])
def test_group_measures_are_one_on_group_related_features(G, spatial):
    X = rng_(23).normal(size=(40, 5) + spatial)
    for seed in range(3):
        A = sampled(G, 5, seed)
        shift = rng_(seed).normal(size=5)
        assert g_cka(X, act_on_channels(X, A, shift), G) == pytest.approx(1.0, abs=1e-9)
        assert laplace_cka(X, act_on_channels(X, A, shift), G) == pytest.approx(1.0, abs=1e-9)
        assert g_procrustes(X, act_on_channels(X, A), G) == pytest.approx(1.0, abs=1e-9)
        assert g_procrustes(X, act_on_channels(X, A, shift), G, center=True) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("G", MONOMIAL + [GL], ids=lambda g: g.label)
def test_group_measures_are_not_rotation_invariant(G):
    X = relu_features(50, 5, seed=24)
    Y = X @ random_rotation(5, seed=25)
    if G.kind == "general_linear":
        # The general-linear measures are invariant under every invertible map.
        assert g_cka(X, Y, G) == pytest.approx(1.0, abs=1e-9)
        assert g_procrustes(X, Y @ rng_(2).normal(size=(5, 5)), G) == pytest.approx(1.0, abs=1e-9)
        return
    assert g_cka(X, Y, G) < 0.95
    assert laplace_cka(X, Y, G) < 0.95
    assert g_procrustes(X, Y, G) < 0.95


def test_baselines_are_rotation_invariant_but_not_scaling_invariant():
    X = relu_features(50, 5, seed=26)
    Y = X @ random_rotation(5, seed=27)
    assert linear_cka(X, Y) == pytest.approx(1.0, abs=1e-9)
    assert rbf_cka(X, Y) == pytest.approx(1.0, abs=1e-9)
    assert orthogonal_procrustes(X, Y) == pytest.approx(1.0, abs=1e-9)
    D = np.diag([1, 10, 0.1, 3, 0.5])
    assert linear_cka(X, X @ D) < 0.99
    assert orthogonal_procrustes(X, X @ D) < 0.99
    assert g_cka(X, X @ D, RELU) == pytest.approx(1.0, abs=1e-9)


def test_signs_count_only_where_the_group_has_them():
    X = rng_(28).normal(size=(40, 4))
    flip = np.diag([1.0, -1.0, 1.0, 1.0])
    assert g_procrustes(X, X @ flip, SIGNED) == pytest.approx(1.0, abs=1e-12)
    assert g_procrustes(X, X @ flip, RELU) < 0.9
    # The max kernel cannot see a channel's sign (lemma E.46): g_cka is 1 even for ReLU.
    assert g_cka(X, X @ flip, RELU) == pytest.approx(1.0, abs=1e-12)


def test_discrete_scalings_only_allow_their_powers():
    X = rng_(29).normal(size=(40, 3))
    assert g_procrustes(X, X @ np.diag([2.0, 0.25, 8.0]), DISCRETE) == pytest.approx(1.0, abs=1e-12)
    assert g_procrustes(X, X @ np.diag([3.0, 1.0, 1.0]), DISCRETE) < 0.99
    assert g_cka(X, X @ np.diag([3.0, 1.0, 1.0]), DISCRETE) < 0.999
    assert g_procrustes(X, X @ np.diag([3.0, 1.0, 1.0]), RELU) == pytest.approx(1.0, abs=1e-12)


def test_permutation_only_group_keeps_scale():
    X = rng_(30).normal(size=(40, 3))
    assert g_procrustes(X, X[:, [2, 0, 1]], PERM) == pytest.approx(1.0, abs=1e-12)
    assert g_procrustes(X, X @ np.diag([2.0, 1, 1]), PERM) < 0.99


def test_post_and_pre_activation_sides_use_phi():
    """Gaussian-like: S = {1, -1}, phi = 1. Before the activation channels may flip sign;
    after it G-related networks differ by a permutation only."""
    assert resolve_group(GAUSS, "pre").signs and not resolve_group(GAUSS, "post").signs
    X = rng_(31).normal(size=(30, 3))
    flipped = X @ np.diag([-1.0, 1, 1])
    assert g_procrustes(X, flipped, GAUSS, side="pre") == pytest.approx(1.0, abs=1e-12)
    assert g_procrustes(X, flipped, GAUSS, side="post") < 0.9


def test_general_linear_measures_follow_the_span():
    X = rng_(32).normal(size=(40, 4))
    B = rng_(33).normal(size=(4, 4))
    assert g_procrustes(X, X @ B, GL) == pytest.approx(1.0, abs=1e-9)
    assert g_cka(X, X @ B + 1.0, GL) == pytest.approx(1.0, abs=1e-9)
    assert g_cka(X, np.column_stack([X[:, :3], rng_(34).normal(size=40)]), GL) < 0.95


@pytest.mark.parametrize("seed", range(6))
def test_procrustes_of_related_features_is_one_to_rounding(seed):
    """The residual is summed directly, so Y = X R (or X B) gives 1 to ~1e-15 on every BLAS;
    sqrt(|X|^2 + |Y|^2 - 2 |M|_*) would turn a 2-ulp rounding of |M|_* into 1e-8."""
    X = rng_(100 + seed).normal(size=(64 + 7 * seed, 6))
    assert orthogonal_procrustes(X, X @ random_rotation(6, seed=200 + seed)) == pytest.approx(1.0, abs=1e-12)
    # whitening a random B costs its condition number in accuracy: 1e-10, not 1e-12
    assert g_procrustes(X, X @ rng_(300 + seed).normal(size=(6, 6)), GL) == pytest.approx(1.0, abs=1e-10)
    # unequal widths: Y holds a rotated copy of X's first 4 channels; the 2 extra X channels count
    Y = X[:, :4] @ random_rotation(4, seed=400 + seed)
    padded = np.column_stack([Y, np.zeros((X.shape[0], 2))])  # the reference needs equal widths
    assert orthogonal_procrustes(X, Y) == pytest.approx(ref_orthogonal_procrustes(X, padded), abs=1e-10)
    assert orthogonal_procrustes(Y, X) == pytest.approx(ref_orthogonal_procrustes(padded, X), abs=1e-10)


# ----------------------------------------------------------------------------- properties
features = hnp.arrays(
    np.float64, st.tuples(st.integers(6, 12), st.integers(1, 4)),
    elements=st.floats(-3, 3, allow_nan=False, width=32),
)


@settings(max_examples=25, deadline=None)
@given(features, st.integers(0, 2**31 - 1))
def test_bounds_and_symmetry(X, seed):
    noise = np.random.default_rng(seed)
    X = X + 0.1 * noise.normal(size=X.shape)  # generic data: no duplicated samples
    Y = X[:, ::-1] ** 2 + noise.normal(size=X.shape)
    for f in (g_procrustes, orthogonal_procrustes):
        v, w = (f(X, Y, RELU), f(Y, X, RELU)) if f is g_procrustes else (f(X, Y), f(Y, X))
        assert 0 <= v <= 1 and v == pytest.approx(w, abs=1e-9)
    for f in (g_cka, laplace_cka):
        v, w = f(X, Y, RELU), f(Y, X, RELU)
        assert -1 <= v <= 1 and v == pytest.approx(w, abs=1e-9)
    v, w = linear_cka(X, Y), linear_cka(Y, X)
    assert -1 <= v <= 1 and v == pytest.approx(w, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([RELU, SIGNPERM, DISCRETE, SIGNED]), st.sampled_from([np.float32, np.float64]),
       st.integers(6, 30), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_invariance_property(G, dtype, n, c, seed):
    """sigma(A x) = phi(A) sigma(x) seen from the features: phi(A)-related features give 1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, c)).astype(dtype)
    Y = (X.astype(np.float64) @ sampled(G, c, seed) + rng.normal(size=c)).astype(dtype)
    tol = 1e-9 if dtype == np.float64 else 2e-4
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    assert g_cka(Xt, Yt, G) == pytest.approx(1.0, abs=tol)
    assert g_procrustes(Xt, Yt, G, center=True) == pytest.approx(1.0, abs=tol * 10)


def test_unbiased_cka_can_be_negative():
    """The unbiased estimator of zero dependence is negative about half of the time; the
    value is reported, not clipped at 0 (docs/similarity.md)."""
    values = [linear_cka(rng_(s).normal(size=(20, 3)), rng_(s + 100).normal(size=(20, 3))) for s in range(20)]
    assert min(values) < 0 < max(values)


# ----------------------------------------------------------------------------- inputs
def test_torch_float32_agrees_with_numpy_float64():
    X = relu_features(40, 6, (3, 3), seed=35)
    Y = relu_features(40, 6, (3, 3), seed=36) + X
    for f in (g_cka, g_procrustes, laplace_cka):
        assert f(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32), RELU) == pytest.approx(
            f(X, Y, RELU), abs=2e-5)
    assert linear_cka(torch.tensor(X, dtype=torch.float32), Y) == pytest.approx(linear_cka(X, Y), abs=2e-5)


def test_requires_grad_tensors_are_accepted():
    X = torch.randn(20, 3, requires_grad=True)
    assert g_cka(X, X * 2, RELU) == pytest.approx(1.0, abs=1e-5)


def test_dead_channels_are_left_out():
    X = relu_features(40, 4, seed=37)
    Xd = np.column_stack([X, np.zeros(40)])
    Y = X[:, [1, 0, 3, 2]] * 2
    for f in (g_cka, g_procrustes, laplace_cka):
        assert f(Xd, Y, RELU) == pytest.approx(f(X, Y, RELU), abs=1e-12)
    # A constant (not zero) channel is dead for centred measures.
    assert g_cka(np.column_stack([X, np.full(40, 3.0)]), Y, RELU) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: g_cka(np.ones((10, 3)) + np.eye(10, 3), np.ones((9, 3)), RELU), "N=10 samples but Y has N=9"),
        (lambda: g_cka(np.eye(3), np.eye(3), RELU), "N >= 4"),
        (lambda: linear_cka(np.eye(3), np.eye(3)), "N >= 4"),
        (lambda: g_cka(np.array([[np.nan, 1]] * 5), np.ones((5, 2)), RELU), "'X' contains 5 NaN"),
        (lambda: g_procrustes(np.ones((5, 2)), np.array([[np.inf, 1]] * 5), RELU), "'Y' contains 5 NaN or inf"),
        (lambda: g_cka(np.zeros((6, 3)), np.eye(6, 3), RELU), "every one of its 3 channels is constant"),
        (lambda: g_procrustes(np.zeros((6, 3)), np.eye(6, 3), RELU), "every one of its 3 channels is zero"),
        (lambda: g_procrustes(np.ones((6, 2, 2, 2)), np.ones((6, 2, 3, 3)), RELU), "4 positions per channel but Y has 9"),
        (lambda: g_cka(np.ones(6), np.ones(6), RELU), "must have shape"),
        (lambda: g_cka([[1.0]], np.ones((1, 1)), RELU), "numpy array or a torch tensor"),
        (lambda: g_cka(np.eye(6, 3), np.eye(6, 3), RELU, side="middle"), "'side'"),
        (lambda: g_cka(np.eye(6, 3), np.eye(6, 3), 3.5), "'group'"),
        (lambda: rbf_cka(np.eye(6, 3), np.eye(6, 3), threshold=0), "'threshold'"),
        (lambda: subspace_match(np.eye(6, 3), np.eye(6, 3), epsilon=2), "'epsilon'"),
    ],
)
def test_bad_input_errors_name_the_problem(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_affine_groups_are_refused_with_a_reason():
    with pytest.raises(GroupCalcError, match="kind 'affine'"):
        g_cka(np.eye(6, 3), np.eye(6, 3), IntertwinerGroup("affine", label="shifted identity"))


# ----------------------------------------------------------------------------- engine-derived groups
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "sigmoid", "gaussian"])
def test_engine_groups_give_invariant_measures(name):
    import groupcalc

    make = getattr(groupcalc, "group", None)
    if make is None:
        from groupcalc._groups import group as make
    G = make(name)
    X = rng_(38).normal(size=(30, 4))
    for side in ("post", "pre"):
        A = sampled(G, 4, 1, side)
        assert g_procrustes(X, X @ A, name, side=side) == pytest.approx(1.0, abs=1e-9)
        assert g_cka(X, X @ A + 0.5, name, side=side) == pytest.approx(1.0, abs=1e-9)


def test_formulas_are_derived_like_names():
    X = relu_features(30, 4, seed=39)
    Y = relu_features(30, 4, seed=40) + X
    assert resolve_group("max(x, 0)") == resolve_group("relu").__class__("monomial", "all", False, None, "max(x, 0)")
    assert g_procrustes(X, Y, "max(x, 0)") == pytest.approx(g_procrustes(X, Y, "relu"), abs=1e-12)
    assert resolve_group("2*x").kind == "general_linear"
    with pytest.raises(GroupCalcError, match="kind 'affine'"):
        g_cka(X, Y, "x + 1")
