"""Rules of torch_bridge/symmetry/rules/_norm.py (and the RMS-norm pattern of _pool/_elementwise).

Groups derived by hand (docs/torch_bridge.md, "Norm layers"): batch norm eq. E.47; layer norm:
input permutations, output P D with affine; RMS norm: input signed permutations (||x|| is
invariant under O(n) only, and the gain absorbs a diagonal), gain-free: O(n) passes through.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.symmetry import (Block, DenseElement, GeneralLinear, Monomial, MonomialElement, Orthogonal, ScaledPermutation,
                                   SymmetryElement, fold_norm_gains, symmetry_spec)
from torch_bridge.symmetry._site_groups import ONE, POSITIVE, R_NONZERO, SIGNS

GEN = torch.Generator


def randomize(m, seed=0):
    g = GEN().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            w = getattr(mod, "weight", None)
            if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) and w is not None:
                w.copy_((torch.rand(w.shape, generator=g, dtype=w.dtype) + 0.5) * torch.sign(torch.randn(w.shape, generator=g, dtype=w.dtype)))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g, dtype=w.dtype))
    return m


class FunctionalBN(nn.Module):
    """F.batch_norm with the model's own buffers (timm's functional form)."""

    def __init__(self):
        super().__init__()
        self.conv, self.out = nn.Conv2d(2, 4, 1), nn.Conv2d(4, 1, 1)
        self.register_buffer("mean", torch.randn(4))
        self.register_buffer("var", torch.rand(4) + 0.5)
        self.gamma, self.beta = nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(4))

    def forward(self, x):
        h = F.batch_norm(self.conv(x), self.mean, self.var, self.gamma, self.beta, False, 0.1, 1e-5)
        return self.out(torch.relu(h))


def test_functional_batch_norm_follows_eq_E47():
    net = FunctionalBN().double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert [s.group for s in spec.sites] == [Monomial(4, R_NONZERO), Monomial(4, POSITIVE)]
    assert spec.dimension == 8
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10


def _signs_on(spec, name, signs, perm=None):
    """The element of ``spec`` that is the identity but for ``diag(signs) P`` on site ``name``."""
    n = len(signs)
    p = torch.arange(n) if perm is None else perm
    return SymmetryElement({name: MonomialElement(p, torch.tensor(signs, dtype=torch.float64))})


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_input_permutations_times_global_sign(affine):
    """LN(s P x) = s P LN(x) (docs/transformer_symmetries.md, section 1): the LN input carries
    permutations times +-I; with affine the output is P D (gamma' = s D P gamma), without it the
    output is the input's element itself. A per-unit sign or a scaling of the input breaks it."""
    net = randomize(nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5, elementwise_affine=affine), nn.Linear(5, 2)).double())
    x = torch.randn(6, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    groups = {s.name: s.group for s in spec.sites}
    assert groups["0"] == ScaledPermutation(5, SIGNS)
    if affine:
        assert groups == {"0": ScaledPermutation(5, SIGNS), "1": Monomial(5, R_NONZERO)}
        assert spec.site("1").permutation == "0" or spec.site("0").permutation == "1"
    else:
        assert list(groups) == ["0"] and spec.site("0").members == ("0", "1")
    assert spec.components == 120 * 2 * (2**5 if affine else 1) and spec.dimension == (5 if affine else 0)
    for seed in range(4):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    # the global sign alone (with the output site untouched) keeps the function
    minus = _signs_on(spec, "0", [-1.0] * 5)
    assert spec.contains(minus) and spec.verify(net, x, g=minus) < 1e-10
    # the next larger groups: a sign on one unit, or a scaling by 2 of the LN input (eps > 0)
    for bad in ([1.0, -1.0, 1.0, 1.0, 1.0], [2.0] * 5):
        g = _signs_on(spec, "0", bad)
        assert not spec.contains(g)
        assert spec.verify(net, x, g=g) > 1e-3


def test_functional_layer_norm_without_affine():
    class FLN(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.layer_norm(self.a(x), (4,)))

    net = FLN().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group == ScaledPermutation(4, SIGNS) and spec.dimension == 0 and spec.components == 48
    assert spec.verify(net, x, generator=GEN().manual_seed(2)) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, site.name, [-1.0] * 4)) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, site.name, [-1.0, 1.0, 1.0, 1.0])) > 1e-3


def test_post_ln_stream_has_one_sign_per_layer_norm_input():
    """BERT-like post-LN: each LN output is the next LN's input (its own sign, the permutation
    shared by all), the last one is free: 2^3 signs, one 6! permutation, 6 scalings."""
    class PostLN(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(3, 6)
            self.ln = nn.ModuleList(nn.LayerNorm(6) for _ in range(3))
            self.fc = nn.ModuleList(nn.Linear(6, 6) for _ in range(2))
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            h = self.ln[0](self.inp(x))
            for fc, ln in zip(self.fc, self.ln[1:]):
                h = ln(h + fc(h))
            return self.out(h)

    net = randomize(PostLN().double())
    x = torch.randn(7, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    signs = [s for s in spec.sites if isinstance(s.group, ScaledPermutation)]
    assert len(signs) == 3 and all(s.group == ScaledPermutation(6, SIGNS) for s in signs)
    # the fc outputs are tied to the stream by the residual additions; the last LN output is free
    assert spec.dimension == 6 and spec.components == math.factorial(6) * 2**3 * 2**6
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    middle = signs[1].name
    assert spec.verify(net, x, g=_signs_on(spec, middle, [-1.0] * 6)) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, middle, [-1.0] * 3 + [1.0] * 3)) > 1e-3


class HandRMSNorm(nn.Module):
    def __init__(self, n, gain=True):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(n) + 0.5) if gain else None
        self.eps = 1e-6

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * self.weight if self.weight is not None else y


def rms_net(kind, gain=True):
    norm = nn.RMSNorm(6, eps=1e-6, elementwise_affine=gain) if kind == "module" else HandRMSNorm(6, gain)
    return nn.Sequential(nn.Linear(4, 6), norm, nn.Linear(6, 3)).double()


@pytest.mark.parametrize("kind", ["module", "hand"])
def test_rms_norm_with_gain_signed_permutations_in_diagonal_out(kind):
    net = rms_net(kind)
    x = torch.randn(5, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    groups = [s.group for s in spec.sites]
    # input: O(6) ∩ Monomial(R*) = signed permutations; output (gain) P D, perm shared
    assert groups == [Monomial(6, SIGNS), Monomial(6, R_NONZERO)]
    assert spec.sites[0].permutation == spec.sites[1].name
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
    # a positive scaling of the input that is not +-1 breaks it (eps > 0, and the RMS changes)
    s = torch.tensor([2.0, 1, 1, 1, 1, 1], dtype=torch.float64)
    g = {spec.sites[0].name: MonomialElement(torch.arange(6), s)}
    assert spec.verify(net, x, g=SymmetryElement(g)) > 1e-3


@pytest.mark.parametrize("kind", ["module", "hand"])
def test_gain_free_rms_norm_passes_rotations(kind):
    net = rms_net(kind, gain=False)
    x = torch.randn(5, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group == Orthogonal(6) and spec.dimension == 15
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
    # a general linear element is not a symmetry: the norm is not GL-invariant
    A = GeneralLinear(6).sample(GEN().manual_seed(4))
    assert spec.verify(net, x, g=SymmetryElement({site.name: A})) > 1e-3


def test_fold_norm_gains_keeps_the_function_and_frees_rotations():
    net = rms_net("hand")
    x = torch.randn(5, 4, dtype=torch.float64)
    folded = fold_norm_gains(net, x)
    with torch.no_grad():
        assert float((net(x) - folded(x)).abs().max()) < 1e-12
    assert folded[1].weight is None
    spec = symmetry_spec(folded, x)
    assert spec.sites[0].group == Orthogonal(6)
    assert spec.verify(folded, x, generator=GEN().manual_seed(5)) < 1e-10
    assert isinstance(spec.sample(GEN().manual_seed(0))[spec.sites[0].name], DenseElement)


def test_group_norm_permutes_and_signs_within_groups():
    """GroupNorm(2, 8): each group of 4 channels is normalised on its own (a layer norm of its
    channels, docs/transformer_symmetries.md section 8): on the input permutations and one sign
    inside each group and a permutation of whole groups, Block(2, Perm x {+-I}); on the affine
    output P D with the same permutation. A sign on one channel of a group, or a swap of two
    channels across groups, breaks it; swapping the two whole groups keeps it."""
    net = randomize(nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 2, 1)).double())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert [(s.name, s.group) for s in spec.sites] == [("0", Block(2, ScaledPermutation(4, SIGNS))),
                                                        ("1", Block(2, Monomial(4, POSITIVE)))]
    assert spec.site("0").permutation == "1" and spec.site("1").permutation == "free"
    assert spec.dimension == 8 and spec.components == 2**2 * 2 * math.factorial(4) ** 2
    assert not any("not represented" in n for n in spec.notes)
    for seed in range(4):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, "0", [1.0] * 4 + [-1.0] * 4)) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, "0", [-1.0] + [1.0] * 7)) > 1e-3
    swap = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    ones = torch.ones(8, dtype=torch.float64)
    whole = SymmetryElement({"0": MonomialElement(swap, ones), "1": MonomialElement(swap, ones)})
    assert spec.contains(whole) and spec.verify(net, x, g=whole) < 1e-10
    across = torch.tensor([0, 1, 2, 4, 3, 5, 6, 7])
    bad = SymmetryElement({"0": MonomialElement(across, ones), "1": MonomialElement(across, ones)})
    assert not spec.contains(bad) and spec.verify(net, x, g=bad) > 1e-3
    # swapping one channel of each group (across groups) is not a symmetry
    p = torch.arange(8)
    p[3], p[4] = 4, 3
    with torch.no_grad():  # the cross-group swap applied by hand to every tensor it touches
        moved = spec.act(spec.identity(), net)
        moved[0].weight.copy_(net[0].weight[p])
        moved[0].bias.copy_(net[0].bias[p])
        moved[1].weight.copy_(net[1].weight[p])
        moved[1].bias.copy_(net[1].bias[p])
        moved[3].weight.copy_(net[3].weight[:, p])
        assert float((moved(x) - net(x)).abs().max()) > 1e-3


# The group of a layer norm's input: ScaledPermutation ------------------------------------------

def test_scaled_permutation_protocol():
    """{c P : c in S}: sample / identity / contains / compose / inverse, counts, label, repr."""
    from torch_bridge.symmetry import Scalar  # noqa: F401  (the repr names them)
    from torch_bridge.symmetry._site_groups import Scalings  # noqa: F401

    G = ScaledPermutation(5, SIGNS)
    assert (G.dimension, G.components) == (0, 120 * 2)
    assert ScaledPermutation(5, R_NONZERO).dimension == 1 and ScaledPermutation(5, POSITIVE).components == 120
    assert ScaledPermutation(5, SIGNS, permutations=False).components == 2
    assert eval(repr(G)) == G and hash(eval(repr(G))) == hash(G) and G != Monomial(5, SIGNS)
    assert "Perm" in G.label and "5" in G.label
    gen = GEN().manual_seed(0)
    seen = set()
    for _ in range(20):
        g = G.sample(gen)
        assert isinstance(g, MonomialElement) and G.contains(g)
        assert G.contains(g.compose(G.sample(gen))) and G.contains(g.inverse()) and G.contains(g.dual())
        assert torch.unique(g.scale).numel() == 1
        seen.add(float(g.scale[0]))
    assert seen == {1.0, -1.0}
    assert G.contains(G.identity())
    tied = G.sample(gen, perm=torch.tensor([4, 3, 2, 1, 0]))
    assert torch.equal(tied.perm, torch.tensor([4, 3, 2, 1, 0]))
    # the next larger group (a sign per unit) and a scaling are not in it
    assert not G.contains(MonomialElement(torch.arange(5), torch.tensor([1.0, -1, 1, 1, 1], dtype=torch.float64)))
    assert not G.contains(MonomialElement(torch.arange(5), torch.full((5,), 2.0, dtype=torch.float64)))
    assert not ScaledPermutation(5, SIGNS, permutations=False).contains(tied)
    assert not G.contains(DenseElement(torch.eye(5, dtype=torch.float64) + 0.1))


def test_scaled_permutation_meets():
    """The lattice: exact meets with GL, O, Monomial, Scalar, itself; a sound subgroup with Block."""
    from torch_bridge.symmetry import Scalar

    G = ScaledPermutation(4, SIGNS)
    assert GeneralLinear(4).intersect(G) == G and G.intersect(GeneralLinear(4)) == G
    assert ScaledPermutation(4, R_NONZERO).intersect(Orthogonal(4)) == G
    assert Monomial(4, R_NONZERO).intersect(ScaledPermutation(4, POSITIVE)) == ScaledPermutation(4, POSITIVE)
    assert G.intersect(Monomial(4, POSITIVE)) == Monomial(4, ONE)  # {1}: plain permutations
    assert G.intersect(Monomial(4, R_NONZERO, permutations=False)) == Scalar(4, SIGNS)
    assert G.intersect(Scalar(4, R_NONZERO)) == Scalar(4, SIGNS)
    m = G.meet(Block(2, GeneralLinear(2)))
    assert not m.exact and m.group == Block(2, Monomial(2, ONE)) and m.reason
    assert ScaledPermutation(1, SIGNS).intersect(GeneralLinear(1)) == Monomial(1, SIGNS, False)
    # one sign per block (GroupNorm's input when its groups are one class)
    B = Block(2, G)
    g = B.sample(GEN().manual_seed(3))
    assert isinstance(g, MonomialElement) and B.contains(g) and B.components == 2 * (24 * 2) ** 2
    one_sign = MonomialElement(torch.arange(8), torch.tensor([-1.0] * 4 + [1.0] * 4, dtype=torch.float64))
    assert B.contains(one_sign) and not G.__class__(8, SIGNS).contains(one_sign)


def test_norm_of_a_fixed_input_keeps_a_diagonal_output():
    """LN / GroupNorm reading the network input: no permutation (the input cannot move), but the
    affine output takes any non-zero diagonal D (gamma' = D gamma, beta' = D beta); a permutation
    of it breaks the function."""
    for norm, x in ((nn.LayerNorm(5), torch.randn(6, 5, dtype=torch.float64)),
                    (nn.GroupNorm(1, 5), torch.randn(2, 5, 3, 3, dtype=torch.float64))):
        net = randomize(nn.Sequential(norm, nn.Conv2d(5, 2, 1) if x.dim() == 4 else nn.Linear(5, 2)).double())
        spec = symmetry_spec(net, x)
        (site,) = spec.sites
        assert site.group == Monomial(5, R_NONZERO, permutations=False)
        assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
        swap = MonomialElement(torch.tensor([1, 0, 2, 3, 4]), torch.ones(5, dtype=torch.float64))
        assert not spec.contains(SymmetryElement({site.name: swap}))
        assert spec.verify(net, x, g=SymmetryElement({site.name: swap})) > 1e-3


def test_canonical_form_removes_the_layer_norm_sign():
    """canonicalize picks one sign for a layer-norm input class: the model and its image under
    -I on that class (and under a sampled element) give the same canonical model."""
    from torch_bridge.symmetry import canonicalize, verify_equivalence

    net = randomize(nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 2)).double(), seed=3)
    x = torch.randn(6, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.site("0").group == ScaledPermutation(5, SIGNS)
    canon, g = canonicalize(net, spec=spec)
    assert spec.contains(g) and verify_equivalence(net, canon, x) < 1e-10
    for other in (spec.act(_signs_on(spec, "0", [-1.0] * 5), net), spec.act(spec.sample(GEN().manual_seed(7)), net)):
        canon2, _ = canonicalize(other, spec=spec)
        for (k, a), (_, b) in zip(canon.named_parameters(), canon2.named_parameters()):
            assert torch.allclose(a, b, atol=1e-9), k


def test_canonical_form_of_a_group_norm_network_is_orbit_invariant():
    """Block(2, Perm x {+-I}) and Block(2, Perm x R+) sharing one unit permutation: canonicalize
    sorts the units inside each group and the groups, and picks each group's sign."""
    from torch_bridge.symmetry import canonicalize, verify_equivalence

    net = randomize(nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 2, 1)).double(), seed=5)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    canon, g = canonicalize(net, spec=spec)
    assert spec.contains(g) and verify_equivalence(net, canon, x) < 1e-10
    for seed in (1, 2, 3):
        canon2, _ = canonicalize(spec.act(spec.sample(GEN().manual_seed(seed)), net), spec=spec)
        for (k, a), (_, b) in zip(canon.named_parameters(), canon2.named_parameters()):
            assert torch.allclose(a, b, atol=1e-9), k


@pytest.mark.parametrize("norm", [nn.InstanceNorm2d(4, affine=True), nn.GroupNorm(4, 4)], ids=["instance", "groups_of_one"])
def test_instance_norm_input_takes_a_sign_per_channel(norm):
    """Groups of one channel: a sign per channel and any permutation (of whole groups); a
    scaling (eps) breaks it."""
    net = randomize(nn.Sequential(nn.Conv2d(3, 4, 1), norm, nn.ReLU(), nn.Conv2d(4, 2, 1)).double()).eval()
    with torch.no_grad():
        net[1].weight.normal_(generator=GEN().manual_seed(1))
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert [(s.name, s.group) for s in spec.sites] == [("0", Monomial(4, SIGNS)), ("1", Monomial(4, POSITIVE))]
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, "0", [-1.0, 1.0, -1.0, 1.0])) < 1e-10
    assert spec.verify(net, x, g=_signs_on(spec, "0", [1.0, 2.0, 1.0, 1.0])) > 1e-3


# Review (h1breview): classes without a permutation, and group-norm blocks cut by sites -----------

def _verify_seeds(net, x, seeds=4):
    spec = symmetry_spec(net, x)
    return spec, max(spec.verify(net, x, generator=GEN().manual_seed(k)) for k in range(seeds))


@pytest.mark.parametrize("first", ["layer_norm", "group_norm"])
def test_a_sign_only_class_fixes_the_permutation_it_shares(first):
    """A norm of the network input, then a norm: the first norm's output class is the second's
    input, c I with c = +-1 (no permutation: the first norm's input is fixed). The second norm's
    output shares that (identity) permutation, so it must not be permuted."""
    if first == "layer_norm":
        net = randomize(nn.Sequential(nn.LayerNorm(3), nn.LayerNorm(3), nn.Linear(3, 2)).double())
        x = torch.randn(6, 3, dtype=torch.float64)
    else:
        net = randomize(nn.Sequential(nn.GroupNorm(3, 3), nn.GroupNorm(1, 3), nn.Conv2d(3, 2, 1)).double())
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec, err = _verify_seeds(net, x)
    assert err < 1e-10
    assert all(not getattr(s.group, "permutations", False) and not getattr(s.group, "head_perm", False)
               for s in spec.sites)
    # the second norm's output really cannot be permuted
    last = spec.sites[-1]
    swap = MonomialElement(torch.tensor([1, 0, 2]), torch.ones(3, dtype=torch.float64))
    assert spec.verify(net, x, g=SymmetryElement({last.name: swap})) > 1e-3


@pytest.mark.parametrize("groups, conv_groups, where", [(3, 2, "after"), (2, 3, "before")])
def test_group_norm_groups_cut_by_a_grouped_convolution_keep_no_split_sign(groups, conv_groups, where):
    """A grouped convolution whose groups do not line up with a GroupNorm's cuts a norm group
    across two sites: a sign per site would flip half of a norm group, so no sign is claimed
    there (only what is sound on each piece)."""
    if where == "after":
        layers = [nn.Conv2d(3, 6, 1), nn.GroupNorm(groups, 6), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=conv_groups, padding=1),
                  nn.ReLU(), nn.Conv2d(6, 2, 1)]
    else:
        layers = [nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 1, groups=conv_groups), nn.GroupNorm(groups, 6), nn.ReLU(),
                  nn.Conv2d(6, 2, 1)]
    net = randomize(nn.Sequential(*layers).double())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    _, err = _verify_seeds(net, x)
    assert err < 1e-10


@pytest.mark.parametrize("case", ["frozen_order", "other_blocks"])
def test_group_norm_sign_per_group_in_a_fixed_order_acts(case):
    """Block(G, c I) (a sign per group, groups in a fixed order) arises when a group norm's input
    cannot be permuted; its elements must act (they are monomial)."""
    if case == "frozen_order":
        net = randomize(nn.Sequential(nn.GroupNorm(1, 6), nn.GroupNorm(2, 6), nn.Conv2d(6, 2, 1)).double())
        x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    else:
        net = randomize(nn.Sequential(nn.Conv2d(3, 6, 1), nn.GroupNorm(2, 6), nn.GroupNorm(3, 6), nn.Conv2d(6, 2, 1)).double())
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec, err = _verify_seeds(net, x)
    assert err < 1e-10
    assert spec.components > 1
