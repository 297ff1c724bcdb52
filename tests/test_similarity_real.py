"""torch_bridge.similarity for real models (issue 11, part 4): the biased estimator, the
kernel API, CKA over minibatches, the layer x layer matrix, Procrustes distances, layouts,
extreme scales and group mismatch warnings.

Expected values come from float64 numpy written here from the textbook definitions, from
brute force, or from a population value derived by hand."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from groupcalc import Scalings
from groupcalc._groups import IntertwinerGroup
from torch_bridge.similarity import (
    BatchedCKA, LayerSimilarity, SimilarityWarning, center_gram, collect_features, g_cka, g_procrustes, gram, hsic,
    kernel_cka, laplace_cka, layer_similarity, linear_cka, minibatch_cka, orthogonal_procrustes, rbf_cka,
    subspace_match,
)
from torch_bridge.similarity._cli import main

RELU = IntertwinerGroup.from_scalings(Scalings("all"), label="relu-like")
PERM = IntertwinerGroup.from_scalings(Scalings("trivial"), label="sigmoid-like")
POW3 = IntertwinerGroup.from_scalings(Scalings("discrete", generator=3), label="powers of 3")
SIGNPERM = IntertwinerGroup.from_scalings(Scalings("trivial", negative=-1), label="tanh-like")


def rng_(seed=0):
    return np.random.default_rng(seed)


def related_pair(n=60, c=5, seed=0):
    rng = rng_(seed)
    X = np.maximum(rng.normal(size=(n, c)), 0)
    Y = np.maximum(X @ rng.normal(size=(c, c)) + 0.5 * rng.normal(size=(n, c)), 0)
    return X, Y


# ----------------------------------------------------------------------------- textbook references
def ref_biased_cka(K, L):
    """Kornblith et al. 2019, eq. 2-3: HSIC_0 = tr(K H L H) / (n-1)^2, H = I - 11^T/n."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n

    def h(A, B):
        return np.trace(A @ H @ B @ H) / (n - 1) ** 2

    return h(K, L) / math.sqrt(h(K, K) * h(L, L))


def ref_unbiased_hsic(K, L):
    """Song et al. 2012, Theorem 2, term by term."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ Kt @ Lt @ one) / (n * (n - 3))


def ref_normalised(X):
    """Channels centred and divided by their norm; constant (dead) channels left out."""
    X = np.asarray(X, float).reshape(X.shape[0], X.shape[1], -1)
    X = X - X.mean(axis=(0, 2), keepdims=True)
    norm = np.sqrt((X**2).sum(axis=(0, 2)))
    live = norm > 1e-12
    return X[:, live] / norm[live][None, :, None]


def ref_max_kernel(X):
    return np.einsum("icp,jcp->ijc", X, X).max(axis=2)


def ref_rbf(F, threshold=1.0):
    F = F.reshape(F.shape[0], -1)
    F = F - F.mean(0)
    D = ((F[:, None, :] - F[None, :, :]) ** 2).sum(-1)
    return np.exp(-D / (2 * threshold**2 * np.median(D)))


def ref_laplace(F):
    F = ref_normalised(F)
    D = np.sqrt(((F[:, None] - F[None, :]) ** 2).sum(-1)).sum(-1)
    return np.exp(-D / np.median(D))


# ----------------------------------------------------------------------------- 1. biased estimator
@pytest.mark.parametrize("spatial", [(), (2, 3)])
def test_biased_estimator_matches_the_textbook_formula(spatial):
    rng = rng_(1)
    X = rng.normal(size=(30, 4) + spatial)
    Y = np.maximum(X, 0) ** 2 + 0.3 * rng.normal(size=X.shape)
    Xf, Yf = X.reshape(30, -1), Y.reshape(30, -1)
    assert linear_cka(X, Y, estimator="biased") == pytest.approx(ref_biased_cka(Xf @ Xf.T, Yf @ Yf.T), abs=1e-12)
    assert rbf_cka(X, Y, estimator="biased") == pytest.approx(ref_biased_cka(ref_rbf(X), ref_rbf(Y)), abs=1e-12)
    K, L = ref_max_kernel(ref_normalised(X)), ref_max_kernel(ref_normalised(Y))
    assert g_cka(X, Y, RELU, estimator="biased") == pytest.approx(ref_biased_cka(K, L), abs=1e-12)
    assert laplace_cka(X, Y, RELU, estimator="biased") == pytest.approx(
        ref_biased_cka(ref_laplace(X), ref_laplace(Y)), abs=1e-12)


def test_biased_linear_cka_on_wide_features_uses_the_gram_route():
    rng = rng_(2)
    X = rng.normal(size=(12, 30))  # D > N: Gram matrices
    Y = X[:, :10] ** 2 + rng.normal(size=(12, 10))
    assert linear_cka(X, Y, estimator="biased") == pytest.approx(ref_biased_cka(X @ X.T, Y @ Y.T), abs=1e-12)


def test_biased_is_upward_biased_on_independent_features_and_unbiased_is_not():
    # Independent Gaussian features: the population CKA is 0. The biased estimator's value is
    # about sqrt(D_x D_y) / N-ish and positive; the unbiased one scatters around 0.
    vals_b, vals_u = [], []
    for seed in range(10):
        rng = rng_(100 + seed)
        X, Y = rng.normal(size=(40, 20)), rng.normal(size=(40, 20))
        vals_b.append(linear_cka(X, Y, estimator="biased"))
        vals_u.append(linear_cka(X, Y))
    assert min(vals_b) > 0.2
    assert abs(np.mean(vals_u)) < 0.05


def test_estimator_argument_is_checked():
    X = rng_(3).normal(size=(10, 3))
    with pytest.raises(ValueError, match="Argument 'estimator' must be 'unbiased' or 'biased', not 'kornblith'"):
        linear_cka(X, X, estimator="kornblith")
    # the biased estimator needs only N >= 2
    assert linear_cka(X[:3], 2 * X[:3], estimator="biased") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="N >= 4"):
        linear_cka(X[:3], X[:3])


# ----------------------------------------------------------------------------- 4. kernel API
def test_kernel_api_reproduces_the_measures_and_the_definitions():
    X, Y = related_pair(40, 4, seed=4)
    Kx, Ky = gram(X).numpy(), gram(Y).numpy()
    np.testing.assert_allclose(Kx, X @ X.T, rtol=1e-12)
    assert hsic(Kx, Ky) == pytest.approx(ref_unbiased_hsic(Kx, Ky), rel=1e-10)
    n = 40
    H = np.eye(n) - 1.0 / n
    assert hsic(Kx, Ky, "biased") == pytest.approx(np.trace(Kx @ H @ Ky @ H) / (n - 1) ** 2, rel=1e-10)
    # center_gram: inner products of centred matrices are the HSIC numerators
    U, V = center_gram(Kx).numpy(), center_gram(Ky).numpy()
    assert (U * V).sum() / (n * (n - 3)) == pytest.approx(ref_unbiased_hsic(Kx, Ky), rel=1e-10)
    np.testing.assert_allclose(center_gram(Kx, "biased").numpy(), H @ Kx @ H, atol=1e-10)
    for kernel, measure in [("linear", linear_cka), ("rbf", rbf_cka)]:
        assert kernel_cka(gram(X, kernel), gram(Y, kernel)) == pytest.approx(measure(X, Y), abs=1e-12)
    assert kernel_cka(gram(X, "max"), gram(Y, "max")) == pytest.approx(g_cka(X, Y), abs=1e-12)
    assert kernel_cka(gram(X, "laplace"), gram(Y, "laplace"), "biased") == pytest.approx(
        laplace_cka(X, Y, estimator="biased"), abs=1e-12)
    np.testing.assert_allclose(gram(X, "max", group=RELU).numpy(), ref_max_kernel(ref_normalised(X)), atol=1e-12)


def test_kernel_api_errors():
    with pytest.raises(ValueError, match="Argument 'kernel' must be one of"):
        gram(np.ones((5, 2)), "cosine")
    with pytest.raises(ValueError, match="square N x N"):
        hsic(np.ones((4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="same shape"):
        hsic(np.eye(5), np.eye(6))


# ----------------------------------------------------------------------------- 2. minibatches
def gaussian_known_answer(n, seed):
    """X ~ N(0, I_8), Y = the first 2 coordinates. Population linear CKA (by hand):
    HSIC(K, L) = |Cov(X, Y)|_F^2 = 2, HSIC(K, K) = |I_8|^2 = 8, HSIC(L, L) = 2, so
    CKA = 2 / sqrt(16) = 0.5."""
    X = rng_(seed).normal(size=(n, 8))
    return X, X[:, :2].copy()


def test_minibatch_cka_agrees_with_the_full_batch_value_within_its_error():
    X, Y = gaussian_known_answer(4000, seed=5)
    full = linear_cka(X, Y)
    assert full == pytest.approx(0.5, abs=0.03)  # its own sampling error is ~0.01 at N = 4000
    for b in (64, 250, 1000):
        r = minibatch_cka([(X[i:i + b], Y[i:i + b]) for i in range(0, 4000, b)])
        assert isinstance(r, BatchedCKA) and r.samples == 4000 and r.batches == math.ceil(4000 / b)
        # documented: |minibatch - full| within 3 jackknife standard errors (docs/similarity.md)
        assert abs(r.value - full) <= 3 * r.stderr, (b, r, full)
        assert abs(r.value - 0.5) <= 3 * r.stderr + 0.005
        assert 0.005 < r.stderr < 0.05
    # the same from a DataLoader over (X, Y) pairs, batches of 250
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)),
                                         batch_size=250)
    r = minibatch_cka(loader)
    assert r.batches == 16 and abs(r.value - full) <= 3 * r.stderr
    assert r.value == pytest.approx(minibatch_cka([(X[i:i + 250], Y[i:i + 250]) for i in range(0, 4000, 250)]).value,
                                    abs=1e-12)


def test_minibatch_cka_of_one_batch_is_the_full_batch_value():
    X, Y = related_pair(80, 5, seed=6)
    for measure, fn in (("linear_cka", linear_cka), ("g_cka", g_cka)):
        for est in ("unbiased", "biased"):
            r = minibatch_cka([(X, Y)], measure, estimator=est)
            assert r.value == pytest.approx(fn(X, Y, estimator=est), abs=1e-12)
            assert math.isnan(r.stderr)


def test_minibatch_g_cka_with_a_general_linear_group_whitens_with_the_whole_data_set():
    GL = IntertwinerGroup("general_linear", label="linear")
    X, Y = related_pair(90, 4, seed=19)
    assert minibatch_cka([(X, Y)], "g_cka", group=GL).value == pytest.approx(g_cka(X, Y, GL), abs=1e-10)
    B = rng_(20).normal(size=(4, 4))
    r = minibatch_cka([(X[i:i + 30], X[i:i + 30] @ B + 1.0) for i in range(0, 90, 30)], "g_cka", group=GL)
    assert r.value == pytest.approx(1.0, abs=1e-9)  # any invertible map of the channels


def test_minibatch_g_cka_normalises_with_the_whole_data_set():
    # With whole-data channel statistics the batches of a group-related pair are each exactly
    # related, so the value is 1; the normalisation matches the full-batch G-CKA's.
    rng = rng_(7)
    X = np.maximum(rng.normal(size=(120, 4, 2, 2)), 0)
    A = np.eye(4)[[3, 1, 0, 2]] * np.array([0.5, 2.0, 3.0, 1.5])
    Y = np.einsum("nc...,cd->nd...", X, A) + 0.7
    pairs = [(X[i:i + 30], Y[i:i + 30]) for i in range(0, 120, 30)]
    assert minibatch_cka(pairs, "g_cka", group=RELU).value == pytest.approx(1.0, abs=1e-12)
    X2, Y2 = related_pair(200, 5, seed=8)
    r = minibatch_cka([(X2[i:i + 50], Y2[i:i + 50]) for i in range(0, 200, 50)], "g_cka")
    assert abs(r.value - g_cka(X2, Y2)) <= 3 * r.stderr


def test_minibatch_cka_inputs():
    X, Y = related_pair(40, 3, seed=9)
    with pytest.raises(ValueError, match="two passes"):
        minibatch_cka(((X[i:i + 10], Y[i:i + 10]) for i in range(0, 40, 10)), "g_cka")
    with pytest.raises(ValueError, match="Argument 'measure' must be one of linear_cka, g_cka"):
        minibatch_cka([(X, Y)], "rbf_cka")
    with pytest.warns(SimilarityWarning, match="1 batch"):
        r = minibatch_cka([(X[:37], Y[:37]), (X[37:], Y[37:])])  # the last batch has 3 samples
    assert r.dropped == 1 and r.samples == 37
    with pytest.raises(ValueError, match="N=10 samples in X but N=9"):
        minibatch_cka([(X[:10], Y[:9])])
    # a generator is fine for linear CKA (one pass)
    gen = ((X[i:i + 10], Y[i:i + 10]) for i in range(0, 40, 10))
    assert minibatch_cka(gen).batches == 4


# ----------------------------------------------------------------------------- 3. layer x layer
def two_mlps():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))
    b = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 9), nn.Tanh(), nn.Linear(9, 3))
    return a, b


def test_layer_similarity_in_one_batch_equals_the_pairwise_measures():
    a, b = two_mlps()
    x = torch.randn(64, 6, dtype=torch.float64)
    a, b = a.double(), b.double()
    res = layer_similarity(a, b, x, layers_a=["1", "3", "4"], batch_size=64)
    fa = collect_features(a, x, ["1", "3", "4"])
    fb = collect_features(b, x, ["1", "3"])
    assert res.layers_a == ("1", "3", "4") and res.layers_b == ("1", "3")  # default: activation modules
    for i, la in enumerate(res.layers_a):
        for j, lb in enumerate(res.layers_b):
            assert res.values[i][j] == pytest.approx(linear_cka(fa[la], fb[lb]), abs=1e-10)
    g = layer_similarity(a, b, x, measure="g_cka", estimator="biased", batch_size=64)
    assert g.groups_a == ("relu", "relu") and g.groups_b == ("tanh", "tanh")
    assert g["3", "1"] == pytest.approx(_two_group_g_cka(fa["3"], fb["1"], "relu", "tanh"), abs=1e-10)


def _two_group_g_cka(X, Y, gx, gy):
    """G-CKA (biased) with X normalised by gx and Y by gy, from the textbook formula: the
    relu group divides channels by their norm, tanh's (signs, no scalings) does not."""
    Zx = ref_normalised(X.numpy()) if gx == "relu" else _centred(X.numpy())
    Zy = ref_normalised(Y.numpy()) if gy == "relu" else _centred(Y.numpy())
    return ref_biased_cka(ref_max_kernel(Zx), ref_max_kernel(Zy))


def _centred(X):
    X = X.reshape(X.shape[0], X.shape[1], -1)
    return X - X.mean(axis=(0, 2), keepdims=True)


def test_layer_similarity_of_two_models_from_a_loader_draws_a_heatmap(tmp_path):
    a, b = two_mlps()
    x = torch.randn(300, 6)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(300)), batch_size=100)
    res = layer_similarity(a, b, loader, layers_a=nn.ReLU, layers_b=["1", "3", "4"])
    assert res.matrix.shape == (2, 3) and res.layers_a == ("1", "3")
    assert res.batches == 3 and res.samples == 300
    fa = collect_features(a, x, ["1", "3"])
    fb = collect_features(b, x, ["1", "3", "4"])
    pairs = [(fa["3"][i:i + 100], fb["4"][i:i + 100]) for i in range(0, 300, 100)]
    assert res["3", "4"] == pytest.approx(minibatch_cka(pairs).value, abs=1e-9)
    png = res.plot(tmp_path / "cka.png", labels=("relu MLP", "tanh MLP"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    with pytest.raises(ValueError, match="must name a .png file"):
        res.plot(tmp_path / "cka.pdf")


def test_layer_similarity_of_a_model_with_itself_streams_batches():
    a, _ = two_mlps()
    x = torch.randn(300, 6)
    res = layer_similarity(a, a, x, batch_size=100, progress=True)
    assert res.batches == 3 and res.samples == 300
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-6)  # a model against itself
    np.testing.assert_allclose(res.matrix, res.matrix.T, atol=1e-9)
    # the streamed matrix equals minibatch_cka over the same batches
    f = collect_features(a, x, ["1", "3"])
    pairs = [(f["1"][i:i + 100], f["3"][i:i + 100]) for i in range(0, 300, 100)]
    assert res["1", "3"] == pytest.approx(minibatch_cka(pairs).value, abs=1e-9)
    with pytest.raises(AttributeError):
        res.values = ()  # frozen (dataclasses.FrozenInstanceError)
    assert LayerSimilarity(**{k: v for k, v in res.__dict__.items()}) == res
    assert json.loads(json.dumps(res.to_dict()))["layers_a"] == ["1", "3"]


def test_layer_similarity_group_handling():
    torch.manual_seed(1)
    gelu = nn.Sequential(nn.Linear(5, 8), nn.GELU(), nn.Linear(8, 4))
    relu = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(40, 5)
    with pytest.warns(SimilarityWarning, match="layer '1' of model_a is gelu"):
        layer_similarity(gelu, relu, x, measure="g_cka", group="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = layer_similarity(gelu, relu, x, measure="g_cka")  # each layer its own group
    assert res.groups_a == ("gelu",) and res.groups_b == ("relu",)
    with pytest.raises(ValueError, match="layer '0' of model_a .*Linear.* is not an activation module"):
        layer_similarity(gelu, relu, x, layers_a=["0"], measure="g_cka")
    with pytest.raises(ValueError, match="two passes"):
        layer_similarity(gelu, relu, iter([x]), measure="g_cka")
    with pytest.raises(ValueError, match="no module named 'act'"):
        layer_similarity(gelu, relu, x, layers_a=["act"])


# ----------------------------------------------------------------------------- 5. distances
def test_procrustes_distances_match_their_definitions():
    rng = rng_(10)
    X, Y = rng.normal(size=(25, 4)), rng.normal(size=(25, 4))
    Xn, Yn = X / np.linalg.norm(X), Y / np.linalg.norm(Y)
    nuc = np.linalg.svd(Xn.T @ Yn, compute_uv=False).sum()
    assert orthogonal_procrustes(X, Y, form="angular") == pytest.approx(math.acos(nuc), abs=1e-10)
    assert orthogonal_procrustes(X, Y, form="euclidean") == pytest.approx(math.sqrt(2 - 2 * nuc), abs=1e-10)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    nuc_c = np.linalg.svd((Xc / np.linalg.norm(Xc)).T @ (Yc / np.linalg.norm(Yc)), compute_uv=False).sum()
    assert orthogonal_procrustes(X, Y, center=True, form="angular") == pytest.approx(math.acos(nuc_c), abs=1e-10)
    # G-Procrustes: brute force over permutations of the normalised channels
    Xr, Yr = np.abs(X), np.abs(Y)
    Xt, Yt = Xr / np.linalg.norm(Xr, axis=0), Yr / np.linalg.norm(Yr, axis=0)
    best = min(np.linalg.norm(Xt - Yt[:, list(p)]) for p in itertools.permutations(range(4)))
    assert g_procrustes(Xr, Yr, RELU, form="euclidean") == pytest.approx(best, abs=1e-10)
    cos = (8 - best**2) / 8  # |X~| = |Y~| = 2
    assert g_procrustes(Xr, Yr, RELU, form="angular") == pytest.approx(math.acos(cos), abs=1e-10)


def test_distances_are_zero_for_related_features():
    X, _ = related_pair(50, 4, seed=11)
    Q, _ = np.linalg.qr(rng_(12).normal(size=(4, 4)))
    for form in ("angular", "euclidean"):
        assert orthogonal_procrustes(X, 3 * X @ Q, form=form) < 1e-7
        assert g_procrustes(X, X[:, [2, 0, 3, 1]] * np.array([1, 2, 3, 4]), RELU, form=form) < 1e-7
    with pytest.raises(ValueError, match="Argument 'form' must be one of"):
        orthogonal_procrustes(X, X, form="cosine")


# ----------------------------------------------------------------------------- 6. layout
def test_channels_last_layout_reads_tokens_as_positions():
    rng = rng_(13)
    tokens = rng.normal(size=(20, 7, 4))  # (N, T, C)
    other = np.abs(rng.normal(size=(20, 7, 3)))
    first = np.ascontiguousarray(tokens.transpose(0, 2, 1))
    other_first = np.ascontiguousarray(other.transpose(0, 2, 1))
    for fn in (g_cka, g_procrustes, orthogonal_procrustes, linear_cka, subspace_match):
        assert fn(tokens, other, layout="NTC") == pytest.approx(fn(first, other_first), abs=1e-12)
    with pytest.warns(SimilarityWarning, match="layout='channels_last'"):
        g_cka(tokens, other)  # (20, 7, 4): 7 "channels" > 4 positions looks token-major
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g_cka(tokens, other, layout="channels_first")
        g_cka(first, other_first)  # (N, C, L) with L > C: no warning
    with pytest.raises(ValueError, match="Argument 'layout' must be one of"):
        g_cka(tokens, other, layout="NCWH")


def test_collect_features_knows_that_linear_layers_put_channels_last():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    x = torch.randn(16, 9, 3)  # 9 tokens of 3 features
    f = collect_features(model, x, ["0", "2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known layout: no layout warning
        v = linear_cka(f["0"], f["2"])
    ref = linear_cka(f["0"].clone(), f["2"].clone(), layout="channels_last")
    assert v == pytest.approx(ref, abs=1e-12)
    assert orthogonal_procrustes(f["0"], f["2"]) == pytest.approx(
        orthogonal_procrustes(f["0"].transpose(1, 2).contiguous(), f["2"].transpose(1, 2).contiguous()), abs=1e-10)


# ----------------------------------------------------------------------------- 7. extreme scales
MEASURES = {
    "g_cka": lambda X, Y: g_cka(X, Y, RELU),
    "g_cka_pow3": lambda X, Y: g_cka(X, Y, POW3),
    "g_cka_perm": lambda X, Y: g_cka(X, Y, PERM),
    "laplace_cka": lambda X, Y: laplace_cka(X, Y, RELU),
    "g_procrustes": lambda X, Y: g_procrustes(X, Y, RELU),
    "g_procrustes_perm": lambda X, Y: g_procrustes(X, Y, PERM),
    "g_procrustes_signs": lambda X, Y: g_procrustes(X, Y, SIGNPERM, form="angular"),
    "linear_cka": linear_cka,
    "linear_cka_biased": lambda X, Y: linear_cka(X, Y, estimator="biased"),
    "rbf_cka": rbf_cka,
    "orthogonal_procrustes": orthogonal_procrustes,
    "subspace_match": lambda X, Y: subspace_match(X, Y, 0.5),
    "minibatch_g_cka": lambda X, Y: minibatch_cka([(X[:30], Y[:30]), (X[30:], Y[30:])], "g_cka", group=RELU).value,
}


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("dtype,scale", [(np.float32, 1e-30), (np.float64, 1e-30), (np.float64, 1e200),
                                         (np.float64, 1e-300), (np.float32, 1e30)])
def test_scaled_inputs_give_the_unscaled_value(name, dtype, scale):
    X, Y = related_pair(60, 5, seed=14)
    X = np.column_stack([X, np.abs(rng_(15).normal(size=(60, 1)))])  # subspace match not trivially 0/1
    fn = MEASURES[name]
    expected = fn(X, Y)  # float64 at scale 1
    Xs, Ys = (X * scale).astype(dtype), (Y * scale).astype(dtype)
    assert np.isfinite(Xs).all() and (Xs != 0).any()
    tol = 1e-5 if dtype == np.float32 else 1e-10
    if name.endswith("pow3"):
        # The group holds only powers of 3: a scale that is not one is not a symmetry. A power
        # of 3 of about the same size is: the value must not move.
        s3 = 3.0 ** round(math.log(scale, 3))
        Xs, Ys = (X * s3).astype(dtype), (Y * s3).astype(dtype)
    assert fn(Xs, Ys) == pytest.approx(expected, abs=tol)


def test_values_too_large_for_the_dtype_are_a_clear_error():
    X, Y = related_pair(20, 3, seed=16)
    with np.errstate(over="ignore"):
        Xs = (X * 1e200).astype(np.float32)  # inf in float32
    with pytest.raises(ValueError, match="Argument 'X' contains .* infinite"):
        g_procrustes(Xs, Y)


def test_scaled_sides_with_a_group_without_scalings_compare_scales():
    # sigmoid-like groups keep the scale: X against 2^-600 X is (numerically) unrelated,
    # X against itself is 1, whatever the common scale.
    X, _ = related_pair(30, 3, seed=17)
    assert g_procrustes(X * 1e200, X * 1e200, PERM) == pytest.approx(1.0, abs=1e-12)
    assert g_procrustes(X, X * 2.0**-600, PERM) == pytest.approx(0.0, abs=1e-12)
    assert g_procrustes(X, X * 0.5, PERM) == pytest.approx(1 - 0.5 / 1.5, abs=1e-12)
    # the angle ignores each side's scale, even 500 orders of magnitude apart
    _, Y = related_pair(30, 3, seed=18)
    angle = g_procrustes(X, Y, PERM, form="angular")
    assert 0.1 < angle < 1.5
    assert g_procrustes(X * 1e-300, Y * 1e200, PERM, form="angular") == pytest.approx(angle, abs=1e-12)
    assert g_procrustes(X, X * 1e-10, PERM, form="angular") < 1e-7


# ----------------------------------------------------------------------------- 8. group mismatch
def test_features_of_a_gelu_module_warn_under_the_default_relu_group():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 6), nn.LeakyReLU(0.1))
    f = collect_features(model, torch.randn(30, 4), ["1", "3"])
    with pytest.warns(SimilarityWarning, match="module '1' \\(GELU, activation gelu.*pass group='gelu'"):
        g_cka(f["1"], f["3"])
    with pytest.warns(SimilarityWarning, match="GELU"):
        g_procrustes(f["1"], f["3"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g_cka(f["3"], f["3"], "relu")        # leaky_relu has relu's post-activation group: no word
        g_cka(f["1"], f["1"], "gelu")
        g_cka(f["1"].clone(), f["3"])        # a copy carries no record


# ----------------------------------------------------------------------------- 9. CLI
@pytest.fixture()
def saved(tmp_path):
    X, Y = related_pair(40, 4, seed=18)
    np.save(tmp_path / "a.npy", X)
    np.save(tmp_path / "b.npy", Y)
    np.save(tmp_path / "t.npy", np.ascontiguousarray(np.stack([X, Y], axis=1)))  # (N, T=2, C=4)
    np.save(tmp_path / "u.npy", np.ascontiguousarray(np.stack([Y, X ** 2], axis=1)))
    return tmp_path, X, Y


def test_cli_estimator_form_and_layout(saved, capsys):
    d, X, Y = saved
    assert main([str(d / "a.npy"), str(d / "b.npy"), "--estimator", "biased", "--form", "angular", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["estimator"] == "biased" and out["form"] == "angular"
    assert out["measures"]["linear_cka"] == pytest.approx(linear_cka(X, Y, estimator="biased"), abs=1e-12)
    assert out["measures"]["orthogonal_procrustes"] == pytest.approx(
        orthogonal_procrustes(X, Y, form="angular"), abs=1e-12)
    T, U = np.load(d / "t.npy"), np.load(d / "u.npy")
    assert main([str(d / "t.npy"), str(d / "u.npy"), "--layout", "NTC", "--measure", "g_cka", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measures"]["g_cka"] == pytest.approx(g_cka(T, U, layout="channels_last"), abs=1e-12)


def test_cli_reports_layout_warnings_one_line_each(saved, capsys):
    d, _, _ = saved
    # (40, 4, 2) read channels-first: 4 "channels" > 2 positions looks token-major
    np.save(d / "tok.npy", np.load(d / "t.npy").transpose(0, 2, 1).copy())
    assert main([str(d / "tok.npy"), str(d / "tok.npy"), "--measure", "linear_cka", "--json"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert [ln[:56] for ln in lines] == ["groupcalc similarity: warning: Argument 'X' of shape (40",
                                         "groupcalc similarity: warning: Argument 'Y' of shape (40"]
    assert json.loads(captured.out)["warnings"] and "layout='channels_last'" in json.loads(captured.out)["warnings"][0]


@pytest.mark.parametrize("args,message", [
    (["--estimator", "kornblith"], "invalid choice: 'kornblith'"),
    (["--layout", "NWHC"], "invalid choice: 'NWHC'"),
    (["--form", "cosine"], "invalid choice: 'cosine'"),
])
def test_cli_bad_options_exit_2_with_one_line(saved, capsys, args, message):
    d, _, _ = saved
    assert main([str(d / "a.npy"), str(d / "b.npy")] + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.integers(-1, 1), st.integers(0, 2**31 - 1),
       st.sampled_from(["unbiased", "biased"]))
def test_power_of_two_scales_of_each_side_leave_every_cka_unchanged(dtype, sign, seed, estimator):
    """Per-side scale invariance of CKA as a property, out to the ends of the dtype's range."""
    rng = np.random.default_rng(seed)
    top = 100 if dtype == np.float32 else 900
    kx, ky = (int(v) for v in rng.integers(-top, top, size=2))
    X, Y = related_pair(24, 3, seed=seed % 1000)
    X, Y = X.astype(dtype), Y.astype(dtype)
    Xs, Ys = X * dtype(2.0) ** kx, Y * dtype(2.0) ** ky
    if sign < 0:
        Ys = -Ys  # a global sign flips no CKA
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for fn in (linear_cka, g_cka, laplace_cka):
        assert fn(Xs, Ys, estimator=estimator) == pytest.approx(fn(X, Y if sign >= 0 else -Y, estimator=estimator),
                                                                abs=tol)


# ----------------------------------------------------------------------------- review (h3review)
def test_euclidean_g_procrustes_without_scalings_is_in_the_features_units():
    # PERM keeps the scale: delta = min over permutations of |X - Y P|_F (brute force), and it
    # scales with the features (the internal power-of-two rescaling must be undone).
    X, Y = related_pair(30, 4, seed=21)
    best = min(np.linalg.norm(X - Y[:, list(p)]) for p in itertools.permutations(range(4)))
    assert g_procrustes(X, Y, PERM, form="euclidean") == pytest.approx(best, rel=1e-10)
    for dtype, k in ((np.float64, -700), (np.float64, 650), (np.float32, -100), (np.float32, 90)):
        s = 2.0**k
        Xs, Ys = (X * s).astype(dtype), (Y * s).astype(dtype)
        tol = 1e-5 if dtype == np.float32 else 1e-10
        assert g_procrustes(Xs, Ys, PERM, form="euclidean") == pytest.approx(best * s, rel=tol)
    # one side 2^-600 of the other: delta is |X| (the small side is negligible)
    assert g_procrustes(X, X * 2.0**-600, PERM, form="euclidean") == pytest.approx(np.linalg.norm(X), rel=1e-12)


def test_kernel_api_at_extreme_scales():
    X, Y = related_pair(30, 4, seed=22)
    expected = linear_cka(X, Y)
    for dtype, scale in ((np.float32, 1e-30), (np.float32, 1e30), (np.float64, 1e-150)):
        Xs, Ys = (X * scale).astype(dtype), (Y * scale).astype(dtype)
        K = gram(Xs)
        assert K.dtype == torch.float64  # X X^T ~ 1e-60 or 1e60 does not fit float32
        ref = Xs.astype(np.float64) @ Xs.astype(np.float64).T
        np.testing.assert_allclose(K.numpy(), ref, rtol=1e-5 if dtype == np.float32 else 1e-12)
        assert kernel_cka(K, gram(Ys)) == pytest.approx(expected, abs=1e-5 if dtype == np.float32 else 1e-10)
    # HSIC is bilinear: hsic(a K, b L) = a b hsic(K, L), even where a b K L underflows
    Kx, Ky = X @ X.T, Y @ Y.T
    h = hsic(Kx, Ky)
    assert hsic(Kx * 2.0**-600, Ky * 2.0**-300) == pytest.approx(h * 2.0**-900, rel=1e-12)
    assert kernel_cka(Kx * 1e-300, Ky * 1e300) == pytest.approx(kernel_cka(Kx, Ky), abs=1e-12)
    with pytest.raises(ValueError, match="Argument 'X': its Gram matrix does not fit float64"):
        gram(X * 1e200)


def test_layer_similarity_restores_every_module_mode_even_for_one_model_twice():
    a, b = two_mlps()
    a.train()
    a[1].eval()  # a part kept in eval mode must stay so
    before = [m.training for m in a.modules()]
    layer_similarity(a, a, torch.randn(40, 6), batch_size=20)
    assert [m.training for m in a.modules()] == before
    layer_similarity(a, b, torch.randn(40, 6), batch_size=20, measure="g_cka")
    assert [m.training for m in a.modules()] == before and b.training
    collect_features(a, torch.randn(8, 6), ["1"])
    assert [m.training for m in a.modules()] == before


def test_layer_similarity_argument_errors():
    a, b = two_mlps()
    x = torch.randn(40, 6)
    with pytest.raises(ValueError, match="Argument 'group' applies to measure='g_cka' only"):
        layer_similarity(a, b, x, group="relu")
    res = layer_similarity(a, b, x, batch_size=40)
    with pytest.raises(KeyError, match="'9' is not a layer of model A"):
        res["9", "1"]
    assert hash(res) == hash(LayerSimilarity(**{k: (list(v) if isinstance(v, tuple) else v)
                                                for k, v in res.__dict__.items()}))


def test_minibatch_overflow_after_the_first_batch_is_a_clear_error():
    X, Y = related_pair(40, 3, seed=23)
    pairs = [(X[:20], Y[:20]), (X[20:] * 1e200, Y[20:] * 1e200)]  # the first batch fixes the power of two
    with pytest.raises(ValueError, match="minibatch_cka: the HSIC terms overflowed"):
        minibatch_cka(pairs)


GL = IntertwinerGroup("general_linear", label="linear")
PER_CHANNEL = {
    "g_cka": lambda X, Y: g_cka(X, Y, RELU),
    "g_cka_gl": lambda X, Y: g_cka(X, Y, GL),
    "laplace_cka": lambda X, Y: laplace_cka(X, Y, RELU),
    "g_procrustes": lambda X, Y: g_procrustes(X, Y, RELU),
    "g_procrustes_angular": lambda X, Y: g_procrustes(X, Y, RELU, form="angular"),
    "g_procrustes_gl": lambda X, Y: g_procrustes(X, Y, GL),
    "kernel_cka_max": lambda X, Y: kernel_cka(gram(X, "max", group=RELU), gram(Y, "max", group=RELU)),
    "minibatch_g_cka": lambda X, Y: minibatch_cka([(X[:30], Y[:30]), (X[30:], Y[30:])], "g_cka", group=RELU).value,
}


@pytest.mark.parametrize("name", sorted(PER_CHANNEL))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_scaled_far_apart_by_the_group_give_the_unscaled_value(name, dtype):
    # A positive scaling of each channel is an element of the relu group (and of GL): the
    # value must not move, even when the channels span 45 orders of magnitude, which no single
    # power of two can bring into float32's range.
    X, Y = related_pair(60, 5, seed=24)
    fn = PER_CHANNEL[name]
    expected = fn(X, Y)
    d = np.array([1e-25, 1.0, 1e20, 3.0, 1e-12])
    Xs, Ys = (X * d).astype(dtype), (Y * d[::-1]).astype(dtype)
    assert np.isfinite(Xs).all() and (Xs[:, 0] != 0).any()
    assert fn(Xs, Ys) == pytest.approx(expected, abs=1e-5 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channels_scaled_far_apart_by_powers_of_the_step_give_the_unscaled_value(dtype):
    # For a group of powers of 3 a channel scaled by 3^k is the same point of the quotient;
    # channels 3^-50 (1e-24) and 3^40 (1e19) apart must keep the value (one power of two for
    # the whole array would send the small channel below float32's range).
    X, Y = related_pair(60, 5, seed=25)
    d = 3.0 ** np.array([-50, 0, 40, 1, -25])
    Xs, Ys = (X * d).astype(dtype), (Y * d[::-1]).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-9
    for fn in (lambda A, B: g_cka(A, B, POW3), lambda A, B: g_procrustes(A, B, POW3),
               lambda A, B: laplace_cka(A, B, POW3),
               lambda A, B: minibatch_cka([(A[:30], B[:30]), (A[30:], B[30:])], "g_cka", group=POW3).value):
        assert fn(Xs, Ys) == pytest.approx(fn(X, Y), abs=tol)


def test_minibatch_cka_names_a_batch_that_is_not_an_array():
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 9.0]]
    with pytest.raises(TypeError, match="pairs of arrays or tensors, but X_b is list"):
        minibatch_cka([(rows, np.array(rows))])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subspace_match_ignores_each_neurons_scale_however_far_apart(dtype):
    # Neurons 0, 1 of X and 0, 1 of Y span the same plane, the rest is unrelated: the match is
    # (2 + 2) / (4 + 3) by construction, and a span does not change when a neuron is rescaled.
    rng = rng_(26)
    A = rng.normal(size=(80, 2))
    X = np.column_stack([A, rng.normal(size=(80, 2))])
    Y = np.column_stack([A @ [[1.0, 2.0], [-1.0, 0.5]], rng.normal(size=(80, 1))])
    assert subspace_match(X, Y, 0.2) == pytest.approx(4 / 7)
    Xs = (X * [1e-25, 1e20, 1.0, 1e-12]).astype(dtype)
    Ys = (Y * [1e18, 1e-20, 5.0]).astype(dtype)
    assert subspace_match(Xs, Ys, 0.2) == pytest.approx(4 / 7)
