"""Site groups and their elements (torch_bridge.symmetry._site_groups and ._elements): group laws,
membership, the lattice of intersections, the action on tensors, hand-counted dimensions and components."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groupcalc import Scalings, a
from groupcalc._groups import IntertwinerGroup
from torch_bridge.symmetry._elements import BlockElement, DenseElement, MonomialElement, ScalarElement
from torch_bridge.symmetry._site_groups import (
    GL, ONE, POSITIVE, R_NONZERO, SIGNS, Block, GeneralLinear, Meet, Monomial, Orthogonal, Scalar, ScaledPermutation,
    as_scalings,
)

TWO_Z = Scalings("discrete", 2, None)
N = 6
# Every kind on 6 units; the lattice tests run over all pairs.
GROUPS = [
    GeneralLinear(N), Orthogonal(N),
    Monomial(N), Monomial(N, POSITIVE), Monomial(N, SIGNS), Monomial(N, ONE), Monomial(N, R_NONZERO, False),
    Monomial(N, POSITIVE, False), Monomial(N, TWO_Z),
    Scalar(N), Scalar(N, POSITIVE), Scalar(N, SIGNS),
    Block(2, GeneralLinear(3)), Block(3, GeneralLinear(2)), Block(2, Orthogonal(3)), Block(2, GeneralLinear(3), False),
    Block(2, Monomial(3, POSITIVE)), Block(3, Orthogonal(2), False), Block(2, Scalar(3)),
    ScaledPermutation(N, SIGNS), ScaledPermutation(N, R_NONZERO), Block(2, ScaledPermutation(3, SIGNS)),
]
IDS = [repr(g) for g in GROUPS]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def close(x, y, dtype=torch.float64):
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    return torch.allclose(x.to(torch.float64), y.to(torch.float64), atol=tol, rtol=tol)


# Group laws ----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(i=st.integers(0, len(GROUPS) - 1), seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_group_laws(i, seed, dtype):
    G = GROUPS[i]
    g = gen(seed)
    x, y, z = (G.sample(g, dtype=dtype) for _ in range(3))
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    assert x.dtype == dtype
    for el in (x, x.compose(y), x.inverse(), x.dual(), G.identity(dtype)):
        assert G.contains(el, tol)
    A, B, C = (e.matrix().to(torch.float64) for e in (x, y, z))
    I = torch.eye(N, dtype=torch.float64)
    assert close(x.compose(y).matrix(), A @ B, dtype)
    assert close(x.compose(y).compose(z).matrix(), x.compose(y.compose(z)).matrix(), dtype)
    assert close(x.compose(x.inverse()).matrix(), I, dtype)
    assert close(x.inverse().compose(x).matrix(), I, dtype)
    assert close(x.compose(G.identity(dtype)).matrix(), A, dtype)
    assert close(x.dual().matrix(), torch.linalg.inv(A).T, dtype)
    assert close(x.dual().dual().matrix(), A, dtype)


@pytest.mark.parametrize("G", GROUPS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_apply_matches_the_matrix(G, dtype):
    x = G.sample(gen(1))
    A = x.matrix()
    t = torch.randn(5, N, 4, dtype=dtype, generator=gen(2))
    want = torch.einsum("ij,ajb->aib", A, t.double())
    got = x.apply(t, 1)
    assert got.dtype == dtype and got.shape == t.shape
    assert close(got, want, dtype)
    want_dual = torch.einsum("ij,ajb->aib", torch.linalg.inv(A).T, t.double())
    assert close(x.apply_dual(t, -2), want_dual, dtype)
    # a producer's rows and a consumer's columns: apply(W, 0) = A W, apply_dual(V, 1) = V A^{-1}
    W, V = torch.randn(N, 3, dtype=torch.float64), torch.randn(2, N, dtype=torch.float64)
    assert close(x.apply(W, 0), A @ W)
    assert close(x.apply_dual(V, 1), V @ torch.linalg.inv(A))
    # repeat: a flattened (n, r) map, unit-major
    t2 = torch.randn(3, N * 4, dtype=torch.float64)
    assert close(x.apply(t2, 1, repeat=4), t2 @ torch.kron(A, torch.eye(4, dtype=A.dtype)).T)
    assert close(x.apply_dual(t2, 1, repeat=4), t2 @ torch.kron(torch.linalg.inv(A).contiguous(), torch.eye(4, dtype=A.dtype)))


def test_the_input_tensor_is_not_modified():
    x = Monomial(N).sample(gen(0))
    t = torch.randn(N, 2, dtype=torch.float64)
    keep = t.clone()
    x.apply(t, 0)
    x.apply_dual(t, 0)
    assert torch.equal(t, keep)


def test_elements_are_values():
    perm, scale = torch.tensor([2, 0, 1]), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = MonomialElement(perm, scale)
    scale[0] = 9.0  # the element holds its own copy
    assert float(x.scale[0]) == 1.0
    y = MonomialElement(torch.tensor([2, 0, 1]), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    assert x == y and hash(x) == hash(y)
    assert x != MonomialElement(perm, torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    assert x != x.to(torch.float32)  # dtype is part of the value
    with pytest.raises(Exception):
        x.perm = torch.tensor([0, 1, 2])
    assert MonomialElement(torch.tensor([0]), torch.tensor([-0.0])) == MonomialElement(torch.tensor([0]), torch.tensor([0.0]))
    assert hash(MonomialElement(torch.tensor([0]), torch.tensor([-0.0]))) == hash(MonomialElement(torch.tensor([0]), torch.tensor([0.0])))


def test_monomial_convention_by_hand():
    # (A h)_i = s_i h_{pi(i)}
    x = MonomialElement(torch.tensor([2, 0, 1]), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    h = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    assert x.apply(h, 0).tolist() == [30.0, -20.0, 10.0]
    assert x.matrix().tolist() == [[0, 0, 1], [-2, 0, 0], [0, 0.5, 0]]
    assert x.inverse().apply(x.apply(h, 0), 0).tolist() == h.tolist()
    assert x.dual().scale.tolist() == [1.0, -0.5, 2.0] and x.dual().perm.tolist() == [2, 0, 1]


def test_block_convention_by_hand():
    B = torch.stack([2 * torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]).double()
    x = BlockElement(B, torch.tensor([1, 0]))
    h = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    # block 0 gets B_0 h_{block 1} = 2 * (3, 4); block 1 gets B_1 h_{block 0} = (2, 1)
    assert x.apply(h, 0).tolist() == [6.0, 8.0, 2.0, 1.0]


# Membership ------------------------------------------------------------------------------------

def test_membership_by_hand():
    g = gen(0)
    Q = Orthogonal(N).sample(g)
    M = GeneralLinear(N).sample(g)
    signed = Monomial(N, SIGNS).sample(g)
    assert GeneralLinear(N).contains(Q) and Orthogonal(N).contains(Q) and not Monomial(N).contains(Q)
    assert not Orthogonal(N).contains(M)
    assert Orthogonal(N).contains(signed) and Monomial(N, SIGNS).contains(signed) and not Monomial(N, POSITIVE).contains(signed)
    assert not GeneralLinear(N).contains(DenseElement(torch.ones(N, N)))
    assert not GeneralLinear(N).contains(MonomialElement(torch.arange(N), torch.zeros(N)))
    assert Scalar(N).contains(ScalarElement(torch.tensor(-3.0), N))
    assert Scalar(N).contains(DenseElement(-3 * torch.eye(N)))
    assert not Scalar(N, POSITIVE).contains(ScalarElement(torch.tensor(-3.0), N))
    assert not Scalar(N).contains(MonomialElement(torch.arange(N), torch.arange(1.0, N + 1)))
    assert Monomial(N, TWO_Z).contains(MonomialElement(torch.arange(N), 2.0 ** torch.arange(-3.0, N - 3)))
    assert not Monomial(N, TWO_Z).contains(MonomialElement(torch.arange(N), torch.full((N,), 3.0)))
    p = torch.tensor([1, 0, 2, 3, 4, 5])
    assert not Monomial(N, R_NONZERO, False).contains(MonomialElement(p, torch.ones(N)))
    # a permutation that does not move whole blocks is not in Block(2, ...)
    assert not Block(2, GeneralLinear(3)).contains(MonomialElement(torch.tensor([0, 1, 3, 2, 4, 5]), torch.ones(N)))
    assert Block(2, GeneralLinear(3)).contains(MonomialElement(torch.tensor([3, 5, 4, 0, 1, 2]), torch.ones(N)))
    assert not Block(2, GeneralLinear(3), False).contains(MonomialElement(torch.tensor([3, 5, 4, 0, 1, 2]), torch.ones(N)))
    assert not Monomial(5).contains(Monomial(N).sample(g))  # wrong size: not a member


@pytest.mark.parametrize("G", GROUPS, ids=IDS)
def test_samples_and_identity_are_members(G):
    for s in range(5):
        assert G.contains(G.sample(gen(s)))
    assert G.contains(G.identity())
    assert G.identity().equals(Monomial(N, ONE).identity())


def test_sample_is_reproducible_and_ties_permutations():
    G = Monomial(N)
    assert G.sample(gen(5)) == G.sample(gen(5))
    p = torch.tensor([5, 4, 3, 2, 1, 0])
    assert torch.equal(G.sample(gen(1), perm=p).perm, p)
    assert torch.equal(Block(3, GeneralLinear(2)).sample(gen(1), perm=torch.tensor([2, 0, 1])).head_perm, torch.tensor([2, 0, 1]))
    with pytest.raises(ValueError, match="identity"):
        Monomial(N, R_NONZERO, False).sample(gen(1), perm=p)
    with pytest.raises(ValueError, match="permutation"):
        G.sample(gen(1), perm=torch.tensor([0, 0, 1, 2, 3, 4]))


def test_discrete_and_sign_samples():
    x = Monomial(N, TWO_Z).sample(gen(0))
    k = torch.log2(x.scale)
    assert torch.equal(k, torch.round(k))
    s = Monomial(50, SIGNS).sample(gen(0)).scale
    assert set(s.tolist()) == {1.0, -1.0}


# The lattice -----------------------------------------------------------------------------------

def _pool():
    """Candidate elements of many kinds (brute-force membership runs over them)."""
    g = gen(7)
    out = []
    for G in GROUPS:
        for _ in range(3):
            out.append(G.sample(g))
    out += [x.compose(y) for x, y in zip(out[::5], out[1::5])]
    return out


POOL = _pool()


@pytest.mark.parametrize("i", range(len(GROUPS)), ids=IDS)
def test_meet_against_brute_force_membership(i):
    G = GROUPS[i]
    for H in GROUPS:
        m = G.meet(H)
        assert isinstance(m, Meet)
        assert m.exact == H.meet(G).exact
        # the meet is a subgroup of both (sound), always
        for s in range(3):
            el = m.group.sample(gen(s))
            assert G.contains(el) and H.contains(el), (G, H, m)
        for el in POOL:
            in_both = G.contains(el) and H.contains(el)
            in_meet = m.group.contains(el)
            assert not in_meet or in_both, (G, H, m, el)
            if m.exact:
                assert in_both == in_meet, (G, H, m, el)
        if not m.exact:
            assert m.reason


def test_meets_by_hand():
    n = 6
    assert Orthogonal(n).intersect(Monomial(n)) == Monomial(n, SIGNS)
    assert Orthogonal(n).intersect(Monomial(n, POSITIVE)) == Monomial(n, ONE)
    assert GeneralLinear(n).intersect(Block(2, Orthogonal(3))) == Block(2, Orthogonal(3))
    assert Block(2, GeneralLinear(3)).intersect(Orthogonal(n)) == Block(2, Orthogonal(3))
    assert Block(2, GeneralLinear(3)).intersect(Monomial(n, POSITIVE)) == Block(2, Monomial(3, POSITIVE))
    assert Block(2, GeneralLinear(3)).intersect(Monomial(n, POSITIVE, False)) == Block(2, Monomial(3, POSITIVE, False), False)
    assert Scalar(n).intersect(Orthogonal(n)) == Scalar(n, SIGNS)
    assert Scalar(n).intersect(Block(2, Monomial(3, POSITIVE))) == Scalar(n, POSITIVE)
    assert Monomial(n, TWO_Z).intersect(Monomial(n, SIGNS)) == Monomial(n, ONE)
    assert Monomial(n, TWO_Z).intersect(Monomial(n, POSITIVE)) == Monomial(n, TWO_Z)
    assert Block(6, GeneralLinear(1)).intersect(GeneralLinear(n)) == Monomial(n)  # normalised
    assert Block(1, Orthogonal(n)).intersect(GeneralLinear(n)) == Orthogonal(n)
    m = Block(2, GeneralLinear(3)).meet(Block(3, GeneralLinear(2)))
    assert not m.exact and m.group == Monomial(n, R_NONZERO, False) and "3 and of 2" in m.reason
    with pytest.raises(ValueError, match="units"):
        Orthogonal(3).intersect(Orthogonal(4))


# Dimensions and components, counted by hand --------------------------------------------------

@pytest.mark.parametrize("G, dim, comps", [
    (GeneralLinear(4), 16, 2),                       # GL(n): n^2; det > 0, det < 0
    (Orthogonal(4), 6, 2),                           # O(n): n(n-1)/2; SO(n) and its coset
    (Orthogonal(1), 0, 2),                           # {+1, -1}
    (Monomial(4), 4, 24 * 16),                       # n! sign patterns 2^n, one R+ per unit
    (Monomial(3, POSITIVE), 3, 6),
    (Monomial(3, SIGNS), 0, 6 * 8),
    (Monomial(3, ONE), 0, 6),
    (Monomial(3, R_NONZERO, False), 3, 8),
    (Monomial(3, TWO_Z), 0, math.inf),
    (Scalar(5), 1, 2), (Scalar(5, POSITIVE), 1, 1), (Scalar(5, SIGNS), 0, 2),
    (Block(2, GeneralLinear(3)), 18, 2 * 2**2),      # 2 heads: 2! orders, 2 det signs each
    (Block(2, GeneralLinear(3), False), 18, 4),
    (Block(3, Orthogonal(2)), 3, 6 * 8),
    (Block(12, GeneralLinear(64)), 12 * 64 * 64, math.factorial(12) * 2**12),  # GPT-2 small's q/k heads
    (Block(2, Monomial(3, TWO_Z)), 0, math.inf),
    (ScaledPermutation(4, SIGNS), 0, 24 * 2),        # c P: n! orders, c = +-1 (a layer norm's input)
    (ScaledPermutation(4), 1, 24 * 2), (ScaledPermutation(4, POSITIVE), 1, 24),
    (Block(2, ScaledPermutation(3, SIGNS)), 0, 2 * (6 * 2) ** 2),  # a group norm's input: a sign per group
])
def test_dimension_and_components_by_hand(G, dim, comps):
    assert G.dimension == dim
    assert G.components == comps
    assert str(dim) in G.describe()


def test_repr_round_trips():
    ns = {"GeneralLinear": GeneralLinear, "Orthogonal": Orthogonal, "Monomial": Monomial, "Scalar": Scalar,
          "Block": Block, "ScaledPermutation": ScaledPermutation, "R_NONZERO": R_NONZERO, "POSITIVE": POSITIVE, "SIGNS": SIGNS, "ONE": ONE,
          "Scalings": Scalings, "S": __import__("sympy").S}
    for G in GROUPS + [Monomial(3, Scalings("discrete", __import__("sympy").Rational(3, 2), -1))]:
        assert eval(repr(G), ns) == G
    elns = {"MonomialElement": MonomialElement, "DenseElement": DenseElement, "ScalarElement": ScalarElement,
            "BlockElement": BlockElement, "tensor": torch.tensor, "torch": torch}
    for G in GROUPS:
        x = G.sample(gen(0))
        assert eval(repr(x), elns) == x


def test_structural_equality_of_groups():
    assert GL is GeneralLinear
    assert Monomial(4) == Monomial(4, R_NONZERO, True) == Monomial(4, "R*") == Monomial(4, None)
    relu = IntertwinerGroup.from_scalings(Scalings("all", None, None, a), label="relu")
    assert Monomial.of_activation(4, relu) == Monomial(4, POSITIVE)
    assert hash(Block(2, Orthogonal(3))) == hash(Block(2, Orthogonal(3)))
    assert Monomial(1) == Monomial(1, R_NONZERO, False)  # a single unit has no permutation
    assert as_scalings(Scalings("all", None, -1, a**3)) == R_NONZERO  # phi is not part of a site's S


# phi -----------------------------------------------------------------------------------------

CUBE = IntertwinerGroup.from_scalings(Scalings("all", None, -1, a**3), label="cube")
RELU = IntertwinerGroup.from_scalings(Scalings("all", None, None, a), label="relu")


@pytest.mark.parametrize("act, f, G", [
    (CUBE, lambda x: x**3, Monomial(N)),
    (RELU, torch.relu, Monomial(N, POSITIVE)),
    (RELU, torch.relu, Block(2, Monomial(3, POSITIVE))),
    (CUBE, lambda x: x**3, Scalar(N)),
])
def test_phi_intertwines(act, f, G):
    # sigma(A x) = phi(A) sigma(x), and phi is a homomorphism
    x, y = G.sample(gen(0)), G.sample(gen(1))
    h = torch.randn(7, N, dtype=torch.float64, generator=gen(2))
    assert close(f(x.apply(h, 1)), x.phi(act).apply(f(h), 1))
    assert close(x.compose(y).phi(act).matrix(), x.phi(act).compose(y.phi(act)).matrix())


def test_phi_of_other_kinds():
    Q = Orthogonal(N).sample(gen(0))
    lin = IntertwinerGroup("general_linear", label="identity")
    const = IntertwinerGroup("constant", label="one")
    assert Q.phi(lin) is Q
    assert Q.phi(const).equals(Monomial(N, ONE).identity())
    with pytest.raises(ValueError, match="monomial"):
        Q.phi(CUBE)


# Large sites stay sparse ---------------------------------------------------------------------

def test_a_resnet50_sized_site_never_goes_dense():
    G = Monomial(2048)
    x = G.sample(gen(0), dtype=torch.float32)
    W = torch.randn(2048, 512)
    y = x.inverse().apply(x.apply(W, 0), 0)
    assert torch.allclose(y, W, rtol=1e-5, atol=1e-5)
    e = x.compose(x.inverse())
    assert isinstance(e, MonomialElement) and torch.equal(e.perm, torch.arange(2048))
    assert torch.allclose(e.scale, torch.ones(2048))
    assert x.dual().scale.numel() == 2048


# Errors --------------------------------------------------------------------------------------

def test_bad_arguments_raise_one_line():
    with pytest.raises(ValueError, match="Argument 'n'"):
        GeneralLinear(0)
    with pytest.raises(ValueError, match="Argument 'perm'"):
        MonomialElement(torch.tensor([0, 0]), torch.ones(2))
    with pytest.raises(ValueError, match="Argument 'inner'"):
        Block(2, Block(2, Orthogonal(2)))
    with pytest.raises(ValueError, match="Argument 't'"):
        Monomial(3).identity().apply(torch.zeros(4, 2), 0)
    with pytest.raises(ValueError, match="Argument 't'"):
        Monomial(3).identity().apply(torch.zeros(3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="Argument 'other'"):
        Monomial(3).identity().compose(Monomial(4).identity())
    with pytest.raises(ValueError, match="Argument 'scalings'"):
        Monomial(3, "R")
    with pytest.raises(ValueError, match="Argument 'generator'"):
        Monomial(3).sample(0)
