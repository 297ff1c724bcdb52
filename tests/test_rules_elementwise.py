"""Rules of torch_bridge/symmetry/rules/_elementwise.py: activations in their ATen forms, gated
products, per-channel PReLU, constants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.symmetry import Monomial, MonomialElement, SymmetryElement, symmetry_spec
from torch_bridge.symmetry._site_groups import ONE, POSITIVE, R_NONZERO

GEN = torch.Generator


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.a, self.b = fn, nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.fn(self.a(x)))


# functional form -> catalogue entry the tracer must read off the ATen op (hand-checked names/params)
ATEN_FORMS = [
    (F.relu, "relu", {}), (lambda x: F.leaky_relu(x, 0.2), "leaky_relu", {"negative_slope": 0.2}),
    (lambda x: F.elu(x, 0.5), "elu", {"alpha": 0.5}), (F.selu, "selu", {}), (lambda x: F.celu(x, 0.7), "celu", {"alpha": 0.7}),
    (F.silu, "silu", {}), (F.mish, "mish", {}), (lambda x: F.softplus(x, 2.0), "softplus", {"beta": 2.0}),
    (torch.sigmoid, "sigmoid", {}), (torch.tanh, "tanh", {}), (F.logsigmoid, "logsigmoid", {}),
    (lambda x: F.hardtanh(x, -2.0, 3.0), "hardtanh", {"min_val": -2.0, "max_val": 3.0}), (F.relu6, "relu6", {}),
    (F.hardsigmoid, "hardsigmoid", {}), (F.hardswish, "hardswish", {}), (F.gelu, "gelu", {}),
    (lambda x: F.gelu(x, approximate="tanh"), "gelu_tanh", {}), (lambda x: F.softshrink(x, 0.3), "softshrink", {"lambd": 0.3}),
    (lambda x: F.hardshrink(x, 0.3), "hardshrink", {"lambd": 0.3}), (torch.sin, "sin", {}), (lambda x: x ** 3, "polynomial", {"degree": 3}),
    (torch.square, "polynomial", {"degree": 2}), (lambda x: F.rrelu(x, 0.1, 0.3, training=False), "leaky_relu", {"negative_slope": 0.2}),
]


@pytest.mark.parametrize("fn, name, params", ATEN_FORMS)
def test_aten_activation_forms_map_to_the_catalogue(fn, name, params):
    net = Fn(fn).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (ref,) = [r for _, r, _ in spec.activations]
    assert ref.name == name and ref.kwargs == pytest.approx(params)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-9


class SwiGLU(nn.Module):
    def __init__(self, E=4, I=6):
        super().__init__()
        self.inp, self.gate, self.up, self.down, self.out = (nn.Linear(3, E), nn.Linear(E, I, bias=False),
                                                             nn.Linear(E, I, bias=False), nn.Linear(I, E, bias=False),
                                                             nn.Linear(E, 2))

    def forward(self, x):
        h = self.inp(x)
        return self.out(self.down(F.silu(self.gate(h)) * self.up(h)))


def test_gated_product_frees_the_linear_branch_scaling():
    """silu(gate) * up: the two permutations are tied; silu has S = {1}, so the gate side keeps
    permutations only; the up side (linear) takes any non-zero D, undone by down's columns:
    I = 6 dimensions, plus GL(4) = 16 for each of the spaces inp -> gate/up and down -> out: 38."""
    net = SwiGLU().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    groups = {s.name: s.group for s in spec.sites}
    assert groups["gate"] == Monomial(6, ONE) and groups["up"] == Monomial(6, R_NONZERO)
    assert spec.site("up").permutation == "gate"
    assert spec.dimension == 6 + 16 + 16
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
    # a scaling of the gate side is not a symmetry (silu is not homogeneous)
    g = spec.sample(GEN().manual_seed(0))
    bad = SymmetryElement({**g, "gate": MonomialElement(g["gate"].perm, torch.full((6,), 2.0, dtype=torch.float64))})
    assert spec.verify(net, x, g=bad) > 1e-3


def test_per_channel_prelu_moves_its_slopes_with_the_permutation():
    net = nn.Sequential(nn.Linear(3, 5), nn.PReLU(5), nn.Linear(5, 2)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.linspace(0.1, 0.5, 5))
    x = torch.randn(6, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group == Monomial(5, POSITIVE)
    g = spec.sample(GEN().manual_seed(0))
    moved = spec.act(g, net)
    torch.testing.assert_close(moved[1].weight.detach(), net[1].weight.detach()[g[site.name].perm])
    assert spec.verify(net, x, g=g) < 1e-10


def test_added_constant_allows_permutations_only():
    net = Fn(lambda h: torch.relu(h) + 1.0).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group == Monomial(4, ONE)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10


def test_forward_hooks_are_part_of_the_function():
    """A forward hook that rescales an output is captured by torch.export like any op; act
    deep-copies the model with its hooks."""
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    net[0].register_forward_hook(lambda m, i, y: 2.0 * y + 0.5)
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    # + 0.5 before relu: an added constant, permutations only
    assert site.group == Monomial(4, ONE)
    assert spec.verify(net, x, generator=GEN().manual_seed(0)) < 1e-10
