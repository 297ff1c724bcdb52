"""Rules of torch_bridge/symmetry/rules/_norm.py (and the RMS-norm pattern of _pool/_elementwise).

Groups derived by hand (docs/torch_bridge.md, "Norm layers"): batch norm eq. E.47; layer norm:
input permutations, output P D with affine; RMS norm: input signed permutations (||x|| is
invariant under O(n) only, and the gain absorbs a diagonal), gain-free: O(n) passes through.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.symmetry import (DenseElement, GeneralLinear, Monomial, MonomialElement, Orthogonal, SymmetryElement,
                                   fold_norm_gains, symmetry_spec)
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


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_input_permutations_output_diagonal(affine):
    net = randomize(nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5, elementwise_affine=affine), nn.Linear(5, 2)).double())
    x = torch.randn(6, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    # with affine: the LN output is between gamma and the next Linear: P D, D any non-zero;
    # the LN input (Linear 0) carries the same permutation and no scaling (not a site)
    assert site.name == "1"
    assert site.group == (Monomial(5, R_NONZERO) if affine else Monomial(5, ONE))
    assert spec.verify(net, x, generator=GEN().manual_seed(1)) < 1e-10
    # a scaling of the LN input (on the Linear-0 rows only) is not a symmetry (eps > 0)
    spec_rows = [b for b in spec.bindings["0.weight"] if b.dim == 0]
    assert spec_rows and spec_rows[0].site is None


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
    assert site.group == Monomial(4, ONE) and spec.dimension == 0
    assert spec.verify(net, x, generator=GEN().manual_seed(2)) < 1e-10


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


def test_group_norm_permutes_within_groups():
    """GroupNorm(2, 8): each group of 4 channels is normalised on its own: permutations inside
    each group on the input, P D on the affine output with the same permutation."""
    net = randomize(nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Conv2d(8, 2, 1)).double())
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert sorted((s.name, s.group) for s in spec.sites) == [("1[0:4]", Monomial(4, POSITIVE)),
                                                            ("1[4:8]", Monomial(4, POSITIVE))]
    assert any("group norm" in n for n in spec.notes)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
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
