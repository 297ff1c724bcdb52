"""The worked examples: appendix C of Godfrey et al. (two ReLU networks with different weights
and the same function) and the example of seed 002 (Johnson, "Subspace match probably does
not accurately assess the similarity of learned representations"), recomputed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from torch_bridge.similarity import (
    g_cka,
    g_procrustes,
    laplace_cka,
    linear_cka,
    orthogonal_procrustes,
    subspace_match,
)


def relu(x):
    return np.maximum(x, 0)


def net(W1, W2, X):
    """Rows of X are inputs; returns (hidden post-activation features, outputs)."""
    H = relu(X @ np.asarray(W1, float).T)
    return H, H @ np.asarray(W2, float).T


# ----------------------------------------------------------------------------- appendix C
W1, W2 = [[1, 0], [0, 2]], [[3, 0], [0, 1]]
W1t, W2t = [[0, 2], [1, 0]], [[0, 3], [1, 0]]


def relu_group():
    import groupcalc

    make = getattr(groupcalc, "group", None)
    if make is None:
        from groupcalc._groups import group as make
    return make("relu")


def test_appendix_c_networks_compute_the_same_function_with_different_hidden_features():
    X = np.random.default_rng(0).normal(size=(64, 2))
    H, out = net(W1, W2, X)
    Ht, outt = net(W1t, W2t, X)
    np.testing.assert_allclose(out, outt, atol=1e-12)  # f~ = f
    assert not np.allclose(H, Ht)  # ... but the hidden representations differ
    # By hand: W1~ W1^{-1} = [[0, 1], [1, 0]], a permutation, so H~ = H P.
    A = np.asarray(W1t, float) @ np.linalg.inv(np.asarray(W1, float))
    np.testing.assert_allclose(A, [[0, 1], [1, 0]], atol=1e-12)
    assert relu_group().contains(A)
    np.testing.assert_allclose(Ht, H @ A.T, atol=1e-12)


def test_appendix_c_every_g_measure_is_one():
    X = np.random.default_rng(1).normal(size=(64, 2))
    H, _ = net(W1, W2, X)
    Ht, _ = net(W1t, W2t, X)
    for f in (g_cka, laplace_cka, g_procrustes):
        assert f(H, Ht, "relu") == pytest.approx(1.0, abs=1e-9), f.__name__
    assert g_procrustes(H, Ht, "relu", center=True) == pytest.approx(1.0, abs=1e-9)
    assert subspace_match(H, Ht, epsilon=1e-6) == 1.0


def test_appendix_c_with_a_rescaling_only_the_g_measures_stay_at_one():
    """Same function again, now through A = P D with D = diag(5, 0.2): W1' = A W1 and
    W2' = W2 A^{-1} (Proposition 3.4). Rotation-invariant baselines drop below 1."""
    A = np.array([[0, 5.0], [0.2, 0]])
    W1s, W2s = A @ np.asarray(W1, float), np.asarray(W2, float) @ np.linalg.inv(A)
    X = np.random.default_rng(2).normal(size=(80, 2))
    H, out = net(W1, W2, X)
    Hs, outs = net(W1s, W2s, X)
    np.testing.assert_allclose(out, outs, atol=1e-10)
    for f in (g_cka, laplace_cka, g_procrustes):
        assert f(H, Hs, "relu") == pytest.approx(1.0, abs=1e-9), f.__name__
    assert linear_cka(H, Hs) < 0.99
    assert orthogonal_procrustes(H, Hs) < 0.99


# ----------------------------------------------------------------------------- seed 002
JOHNSON_DATA = np.array([[1.0, 1.0], [-1.0, -1.0]])
J_W1, J_W1t = np.eye(2), np.diag([1.0, -1.0])
J_W2 = J_W2t = np.array([[1.0, -1.0], [1.0, -1.0]])


def test_seed_002_example_3_1_does_not_hold_as_printed():
    """Example 3.1 claims identical output activation vectors (zero at each neuron) and hidden
    activation vectors {[1,1],[1,1]} versus {[1,0],[1,0]}. Recomputed by hand:

    network W: hidden ReLU((1,1)) = (1,1), ReLU((-1,-1)) = (0,0); output W2 h = (0,0), (0,0).
    network W~: hidden ReLU((1,-1)) = (1,0), ReLU((-1,1)) = (0,1); output (1,1), (-1,-1).
    """
    H, out = net(J_W1, J_W2, JOHNSON_DATA)
    Ht, outt = net(J_W1t, J_W2t, JOHNSON_DATA)
    np.testing.assert_array_equal(out, [[0, 0], [0, 0]])
    np.testing.assert_array_equal(outt, [[1, 1], [-1, -1]])
    assert not np.array_equal(out[0], outt[0])  # the outputs differ on input (1, 1)
    # Activation vectors of the hidden neurons (one entry per input, Definition 2.1):
    np.testing.assert_array_equal(H.T, [[1, 0], [1, 0]])  # not [1,1], [1,1]
    np.testing.assert_array_equal(Ht.T, [[1, 0], [0, 1]])  # not [1,0], [1,0]
    # ... and the hidden layers do match: neuron 1 of both networks has the vector (1, 0).
    # Maximum match (hand): X* = both neurons of W (span (1,0)), Y* = neuron 1 of W~: 3/4.
    value, xs, ys = subspace_match(H, Ht, epsilon=1e-6, return_match=True)
    assert (value, xs, ys) == (0.75, [0, 1], [0])


def corrected_example(n=64, seed=3):
    """Two ReLU networks that agree on the data while the hidden layers share no subspace.

    Data: points of the open positive quadrant. Network A: W1 = I, W2 = [1, 1], so
    f_A(x) = relu(x1) + relu(x2). Network B: W1 = [[1, 1], [1, -1]], W2 = [1, 0], so
    f_B(x) = relu(x1 + x2). On the data both equal x1 + x2; off it they differ (x = (1, -1)).
    """
    X = np.random.default_rng(seed).uniform(0.05, 1.0, size=(n, 2))
    HA, outA = net(np.eye(2), [[1.0, 1.0]], X)
    HB, outB = net([[1.0, 1.0], [1.0, -1.0]], [[1.0, 0.0]], X)
    return X, HA, outA, HB, outB


def test_corrected_example_agrees_on_the_data_and_subspace_match_sees_nothing():
    X, HA, outA, HB, outB = corrected_example()
    np.testing.assert_allclose(outA, outB, atol=1e-12)
    # Off the data the functions differ: the networks are not reparametrisations of each other.
    assert net(np.eye(2), [[1.0, 1.0]], np.array([[1.0, -1.0]]))[1][0, 0] == 1.0
    assert net([[1.0, 1.0], [1.0, -1.0]], [[1.0, 0.0]], np.array([[1.0, -1.0]]))[1][0, 0] == 0.0
    # Hidden neuron vectors: A = (x1, x2), B = (x1 + x2, relu(x1 - x2)). x1 + x2 lies in
    # span(A) but x1, x2 are not in span(B) (relu(x1 - x2) is not linear on the data), so the
    # iteration empties X*, then Y*: no match at all.
    assert subspace_match(HA, HB, epsilon=0.05) == 0.0
    assert subspace_match(outA, outB, epsilon=1e-6) == 1.0


def test_corrected_example_g_measures_see_the_difference():
    """The hidden layers are not related by G_ReLU (their functions differ off the data), and
    every G-measure is below 1; at the output every measure is 1."""
    _, HA, outA, HB, outB = corrected_example()
    for f in (g_cka, laplace_cka, g_procrustes):
        assert f(HA, HB, "relu") < 0.99, f.__name__
        assert f(outA, outB, "relu") == pytest.approx(1.0, abs=1e-9)


def test_g_related_layers_always_have_a_full_subspace_match():
    """If H~ = H P D (D > 0), every neuron's vector is a multiple of one on the other side,
    so the maximum match is everything: subspace match 0 rules out G-relatedness."""
    rng = np.random.default_rng(4)
    H = relu(rng.normal(size=(30, 5)))
    A = np.eye(5)[rng.permutation(5)] * rng.uniform(0.3, 3, 5)
    assert subspace_match(H, H @ A, epsilon=1e-6) == 1.0
