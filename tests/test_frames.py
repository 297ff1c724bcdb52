"""Canonical frames and best fits of one site (torch_bridge.symmetry._frames): orbit
invariance, recovery of planted elements, the documented canonical properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_bridge.symmetry._site_groups import Block, GeneralLinear, Orthogonal
from torch_bridge.symmetry._frames import (
    assign, block_frame, dual_pair_frame, general_linear_frame, orthogonal_frame, procrustes, least_squares, sign_key,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=gen(seed))


def recovered(frame_a, frame_b, g, tol=1e-8):
    """frame_b(g . x) = frame_a(x) for all members: g = frame_b^{-1} frame_a on the features."""
    return frame_b.element.compose(g).equals(frame_a.element, tol)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), extra=st.integers(0, 6))
def test_orthogonal_frame_is_orbit_invariant(seed, n, extra):
    R = randn(n, n + extra, seed=seed)
    Q = Orthogonal(n).sample(gen(seed + 1))
    fa, fb = orthogonal_frame(R), orthogonal_frame(Q.apply(R, 0))
    assert fa.ambiguous == 0
    assert recovered(fa, fb, Q)
    # documented: Q R has orthogonal rows with descending norms and positive row sums
    C = fa.element.apply(R, 0)
    G = C @ C.T
    assert torch.allclose(G, torch.diag(torch.diagonal(G)), atol=1e-10)
    assert torch.all(torch.diagonal(G)[:-1] >= torch.diagonal(G)[1:])
    assert torch.all(C.sum(1) > 0)
    assert Orthogonal(n).contains(fa.element)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), extra=st.integers(1, 6), with_k=st.booleans())
def test_general_linear_frame_is_orbit_invariant(seed, n, extra, with_k):
    R = randn(n, n + extra, seed=seed)
    C = randn(n + 2, n, seed=seed + 7)
    A = GeneralLinear(n).sample(gen(seed + 1))
    Ainv = A.inverse().matrix()
    K = C.T @ C if with_k else None
    K2 = Ainv.T @ K @ Ainv if with_k else None
    fa, fb = general_linear_frame(R, K), general_linear_frame(A.apply(R, 0), K2)
    assert fa.ambiguous == 0
    assert recovered(fa, fb, A, 1e-7)
    # documented: the canonical rows are orthonormal
    Cn = fa.element.apply(R, 0)
    assert torch.allclose(Cn @ Cn.T, torch.eye(n, dtype=torch.float64), atol=1e-9)


def test_general_linear_frame_without_k_on_a_square_site_is_ambiguous():
    R = randn(3, 3, seed=0)
    assert general_linear_frame(R).ambiguous > 0
    assert general_linear_frame(randn(3, 5, seed=0)).ambiguous == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5), p=st.integers(5, 8))
def test_dual_pair_frame_is_orbit_invariant_and_balanced(seed, n, p):
    Rq, Rk = randn(n, p, seed=seed), randn(n, p + 1, seed=seed + 3)
    A = GeneralLinear(n).sample(gen(seed + 1))
    fa, fb = dual_pair_frame(Rq, Rk), dual_pair_frame(A.apply(Rq, 0), A.apply_dual(Rk, 0))
    assert fa.ambiguous == 0
    assert recovered(fa, fb, A, 1e-7)
    Fq, Fk = fa.element.apply(Rq, 0), fa.element.apply_dual(Rk, 0)
    # balanced: equal diagonal Grams (Sigma), and the bilinear form Rq^T Rk is unchanged
    assert torch.allclose(Fq @ Fq.T, Fk @ Fk.T, atol=1e-9)
    assert torch.allclose(Fq @ Fq.T, torch.diag(fa.invariants), atol=1e-9)
    assert torch.allclose(Fq.T @ Fk, Rq.T @ Rk, atol=1e-9)


@pytest.mark.parametrize("kind", ["orthogonal", "dual"])
def test_block_frame_is_orbit_invariant(kind):
    H, d, p = 4, 3, 7
    Rq = randn(H * d, p, seed=0)
    Rk = randn(H * d, p, seed=1)
    G = Block(H, Orthogonal(d) if kind == "orthogonal" else GeneralLinear(d))
    g = G.sample(gen(2))

    def frames(Rq, Rk):
        if kind == "orthogonal":
            return [orthogonal_frame(Rq[h * d:(h + 1) * d]) for h in range(H)]
        return [dual_pair_frame(Rq[h * d:(h + 1) * d], Rk[h * d:(h + 1) * d]) for h in range(H)]

    ea, amb = block_frame(frames(Rq, Rk))
    eb, _ = block_frame(frames(g.apply(Rq, 0), g.apply_dual(Rk, 0)))
    assert amb == 0
    assert eb.compose(g).equals(ea, 1e-8)
    assert G.contains(ea)
    assert not torch.equal(g.head_perm, torch.arange(H))  # the planted element did permute heads


def test_sign_key_by_hand():
    rows = torch.tensor([[1.0, -2.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 2.0]], dtype=torch.float64)
    # sums -1; 0 with cubes and fifth powers 0 too; all zero; 1
    assert sign_key(rows).tolist() == [-1.0, 0.0, 0.0, 1.0]
    assert sign_key(torch.tensor([[2.0, -1.0, -1.0]], dtype=torch.float64)).tolist() == [1.0]  # sum 0, cubes 6


def test_procrustes_and_least_squares_recover_planted_elements():
    F = randn(5, 20, seed=0)
    Q = Orthogonal(5).sample(gen(1))
    A = GeneralLinear(5).sample(gen(2))
    assert procrustes(F, Q.apply(F, 0)).compose(Q).equals(Orthogonal(5).identity(), 1e-10)
    assert least_squares(F, A.apply(F, 0)).compose(A).equals(GeneralLinear(5).identity(), 1e-9)
    # with noise, Procrustes is still the orthogonal minimiser: no sampled rotation does better
    Fb = Q.apply(F, 0) + 0.1 * randn(5, 20, seed=3)
    best = procrustes(F, Fb)
    d0 = float((best.apply(Fb, 0) - F).norm())
    for s in range(20):
        O = Orthogonal(5).sample(gen(10 + s)).compose(best)
        assert float((O.apply(Fb, 0) - F).norm()) >= d0 - 1e-12


def test_assign_by_hand():
    cost = torch.tensor([[5.0, 1.0, 9.0], [1.0, 9.0, 9.0], [9.0, 9.0, 0.0]])
    assert assign(cost).tolist() == [1, 0, 2]


def test_bad_features_raise():
    with pytest.raises(ValueError, match="Argument 'R'"):
        orthogonal_frame(torch.zeros(3))
    with pytest.raises(ValueError, match="same number of rows"):
        dual_pair_frame(randn(2, 4, seed=0), randn(3, 4, seed=0))


def test_dual_pair_frame_with_fewer_features_than_units_is_invertible_and_ambiguous():
    # a GL(8) site fed by a 3-input layer (rows 8 x 4 with the bias): no rank-8 factorisation;
    # the frame must stay an invertible element and say that it is not unique
    from torch_bridge.symmetry._frames import dual_pair_frame

    g = torch.Generator().manual_seed(0)
    Rq = torch.randn(8, 4, generator=g, dtype=torch.float64)
    Rk = torch.randn(8, 24, generator=g, dtype=torch.float64)
    f = dual_pair_frame(Rq, Rk)
    A = f.element.matrix()
    assert torch.linalg.matrix_rank(A) == 8
    assert f.ambiguous > 0
