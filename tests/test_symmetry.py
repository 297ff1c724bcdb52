"""Symmetry specs of PyTorch networks: activation mapping, sites, the group action.

Expected sites, dimensions and component counts are derived by hand in the comments from the
architectures (figs. 26-28) and the rules of the paper (Proposition 3.4, eq. E.47, E.9.2).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import activations
from torch_bridge.models import randomize_batchnorm, CatalogueActivation, mlp, myrtle, resnet18, resnet20
from torch_bridge.symmetry import (ActivationRef, MonomialElement, SymmetryElement, SymmetrySpecError, function_activation,
                                   module_activation, symmetry_spec, verify_equivalence)


def pn(group):
    """(positive part, has negative elements) of a monomial group's S."""
    s = group.scalings
    return s.positive, s.negative is not None

DIGITS = (5, 1, 8, 8)  # scikit-learn digits-shaped input






def max_param_change(a, b):
    return max(float((p - q).abs().max()) for p, q in zip(a.state_dict().values(), b.state_dict().values()) if p.is_floating_point())


# Activation mapping -------------------------------------------------------------------

@pytest.mark.parametrize("module, name, params", [
    (nn.ReLU(), "relu", {}),
    (nn.Identity(), "identity", {}),
    (nn.LeakyReLU(0.3), "leaky_relu", {"negative_slope": 0.3}),
    (nn.ELU(alpha=2.0), "elu", {"alpha": 2.0}),
    (nn.CELU(alpha=0.5), "celu", {"alpha": 0.5}),
    (nn.SELU(), "selu", {}),
    (nn.GELU(), "gelu", {}),
    (nn.GELU(approximate="tanh"), "gelu_tanh", {}),
    (nn.SiLU(), "silu", {}),
    (nn.Mish(), "mish", {}),
    (nn.Softplus(beta=3.0), "softplus", {"beta": 3.0}),
    (nn.Sigmoid(), "sigmoid", {}),
    (nn.LogSigmoid(), "logsigmoid", {}),
    (nn.Tanh(), "tanh", {}),
    (nn.Hardtanh(-2.0, 3.0), "hardtanh", {"min_val": -2.0, "max_val": 3.0}),
    (nn.ReLU6(), "relu6", {}),
    (nn.Hardsigmoid(), "hardsigmoid", {}),
    (nn.Hardswish(), "hardswish", {}),
    (nn.Softsign(), "softsign", {}),
    (nn.Tanhshrink(), "tanhshrink", {}),
    (nn.Softshrink(0.7), "softshrink", {"lambd": 0.7}),
    (nn.Hardshrink(0.2), "hardshrink", {"lambd": 0.2}),
    (nn.RReLU(0.1, 0.3), "leaky_relu", {"negative_slope": 0.2}),
    (CatalogueActivation("gaussian"), "gaussian", {}),
    (CatalogueActivation("polynomial", degree=3), "polynomial", {"degree": 3.0}),
])
def test_module_mapping(module, name, params):
    ref = module_activation(module)
    assert ref.name == name
    assert ref.kwargs == pytest.approx(params)


def test_non_activations_map_to_none():
    assert module_activation(nn.Linear(2, 2)) is None
    assert module_activation(nn.PReLU(num_parameters=4)) is None  # per-channel slopes


@pytest.mark.parametrize("target, args, kwargs, name, params", [
    (torch.relu, (None,), {}, "relu", {}),
    (F.relu, (None,), {"inplace": True}, "relu", {}),
    ("relu", (None,), {}, "relu", {}),
    (F.leaky_relu, (None, 0.25), {}, "leaky_relu", {"negative_slope": 0.25}),
    (F.leaky_relu, (None,), {}, "leaky_relu", {"negative_slope": 0.01}),
    (F.gelu, (None,), {"approximate": "tanh"}, "gelu_tanh", {}),
    (F.gelu, (None,), {}, "gelu", {}),
    (torch.tanh, (None,), {}, "tanh", {}),
    (F.elu, (None,), {"alpha": 0.5}, "elu", {"alpha": 0.5}),
    (F.softplus, (None, 2.0), {}, "softplus", {"beta": 2.0}),
    (F.hardtanh, (None,), {"min_val": -3.0, "max_val": 3.0}, "hardtanh", {"min_val": -3.0, "max_val": 3.0}),
    (torch.sin, (None,), {}, "sin", {}),
    (torch.square, (None,), {}, "polynomial", {"degree": 2}),
    (torch.add, (None, 1), {}, None, None),
])
def test_function_mapping(target, args, kwargs, name, params):
    ref = function_activation(target, args, kwargs)
    if name is None:
        assert ref is None
    else:
        assert ref.name == name and ref.kwargs == pytest.approx(params)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = F.leaky_relu(self.a(x), negative_slope=0.3)
        h = self.b(h).tanh()
        h = self.c(h) ** 3
        return self.d(h)


def test_functional_forms_are_read_from_the_graph():
    net = Functional().double()
    x = torch.randn(6, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    found = [ref for _, ref, _ in spec.activations]
    assert found == [ActivationRef("leaky_relu", (("negative_slope", 0.3),)), ActivationRef("tanh"),
                     ActivationRef("polynomial", (("degree", 3.0),))]
    # hand-derived groups: leaky_relu (0, oo); tanh {+-1}; x^3: R* with phi(a) = a^3
    s = {site.name: site.group for site in spec.sites}
    assert pn(s["a"]) == ("all", False)
    assert pn(s["b"]) == ("trivial", True)
    assert pn(s["c"]) == ("all", True)
    g = spec.sample(torch.Generator().manual_seed(0))
    moved = spec.act(g, net)
    assert verify_equivalence(net, moved, x) < 1e-10
    assert max_param_change(net, moved) > 1e-2


# Sites ---------------------------------------------------------------------------------

def test_mlp_sites_hand_derived():
    spec = symmetry_spec(mlp([3, 5, 4, 2], activation="relu"), torch.zeros(1, 3))
    # two hidden layers of 5 and 4 ReLU units: G = P D with D > 0 on each; output frozen
    assert [(s.name, s.size, s.permutation) for s in spec.sites] == [("1", 5, "free"), ("3", 4, "free")]
    assert all(pn(s.group) == ("all", False) for s in spec.sites)
    assert spec.dimension == 9
    assert spec.components == math.factorial(5) * math.factorial(4)
    text = spec.summary()
    assert "total: 2 sites, dimension 9, components 2880" in text and "120" in text


@pytest.mark.parametrize("act, positive, negative", [
    ("tanh", "trivial", True), ("gelu", "trivial", False), ("leaky_relu", "all", False), ("sin", "trivial", True),
])
def test_mlp_site_groups_follow_the_activation(act, positive, negative):
    spec = symmetry_spec(mlp([3, 4, 2], activation=act), torch.zeros(1, 3))
    (site,) = spec.sites
    assert pn(site.group) == (positive, negative)


def test_myrtle_maxpool_removes_sign_flips():
    # Without batch norm, conv i feeds tanh; after layers 2-4 comes a max-pool, which commutes
    # with positive scalings only: {+-1} ∩ (0, oo) = {1}. Layer 1 has no pooling: {+-1}.
    spec = symmetry_spec(myrtle(width=2, batch_norm=False, activation="tanh", in_channels=1), torch.zeros(DIGITS))
    negs = [pn(s.group)[1] for s in spec.sites]
    assert [s.size for s in spec.sites] == [2, 4, 8, 16]
    assert negs == [True, False, False, False]
    assert all(s.permutation == "free" for s in spec.sites)


def test_myrtle_batch_norm_sites_hand_derived():
    # Each conv output is a batch-norm input: all of R* (eq. E.47), sharing its permutation
    # with the batch-norm output, which feeds ReLU (0, oo) (+ max-pool, same).
    spec = symmetry_spec(myrtle(width=2, in_channels=1), torch.zeros(DIGITS))
    assert [(s.name, s.size, s.permutation) for s in spec.sites] == [
        ("0", 2, "1"), ("1", 2, "free"), ("3", 4, "4"), ("4", 4, "free"),
        ("7", 8, "8"), ("8", 8, "free"), ("11", 16, "12"), ("12", 16, "free")]
    assert [pn(s.group) for s in spec.sites[:2]] == [("all", True), ("all", False)]
    assert spec.dimension == 2 * (2 + 4 + 8 + 16)


def test_resnet20_sites_hand_derived():
    """Full-width ResNet20 (fig. 27).

    * 19 convolutions, each feeding a batch norm: R* sites of 16 + 6*16 + 6*32 + 6*64 = 688
      units, sign flips included, permutation shared with the batch-norm output;
    * 9 inner batch norms (bn1 of each block): (0, oo), 3*16 + 3*32 + 3*64 = 336 units, own
      permutations;
    * the residual stream: one site per stage tied through every block (E.9.2); the
      zero-padding shortcuts embed stage s in the middle of stage s+1, so stage 2 adds
      two new 8-channel pieces and stage 3 two 16-channel pieces: 16 + 16 + 32 = 64 units.
    dimension = 688 + 336 + 64 = 1088.
    """
    spec = symmetry_spec(resnet20(), torch.zeros(2, 3, 32, 32))
    assert spec.dimension == 1088
    free = sorted(s.size for s in spec.sites if s.permutation == "free")
    assert free == sorted([16] * 3 + [32] * 3 + [64] * 3 + [16, 8, 8, 16, 16])
    log10 = sum(math.lgamma(n + 1) for n in free) / math.log(10) + 688 * math.log10(2)
    assert spec.log10_components == pytest.approx(log10)
    stream = spec.site("bn1")
    assert {"bn1", "layers.0.0.bn2", "layers.0.2.bn2", "layers.1.0.bn2[8:24]", "layers.2.2.bn2[24:40]"} <= set(stream.members)
    assert spec.site("layers.1.0.bn2[0:8]").size == 8


def test_avgpool_keeps_sign_flips_maxpool_does_not():
    # ResNet20 with tanh ends with *average* pooling: the last stream keeps {+-1}.
    spec = symmetry_spec(resnet20(width=2, activation="tanh", in_channels=1), torch.zeros(DIGITS))
    last = [s for s in spec.sites if s.permutation == "free" and s.name.startswith("layers.2.0.bn2")]
    assert last and all(pn(s.group)[1] for s in last)


def test_resnet18_projection_shortcut_is_tied_to_the_stream():
    spec = symmetry_spec(resnet18(width=2, in_channels=1), torch.zeros(DIGITS))
    stream2 = spec.site("layers.1.0.bn2")
    assert set(stream2.members) == {"layers.1.0.bn2", "layers.1.0.shortcut.1", "layers.1.1.bn2"}
    assert spec.site("layers.1.0.shortcut.0").permutation == "layers.1.0.bn2"


# The action ------------------------------------------------------------------------------

REFERENCE = {
    "mlp": lambda act: mlp([64, 6, 5, 10], activation=act),
    "myrtle": lambda act: myrtle(width=2, activation=act, in_channels=1),
    "myrtle_nobn": lambda act: myrtle(width=2, batch_norm=False, activation=act, in_channels=1),
    "resnet20": lambda act: resnet20(width=2, activation=act, in_channels=1),
    "resnet18": lambda act: resnet18(width=2, activation=act, in_channels=1),
}
TORCH_ACTIVATIONS = [a.name for a in activations.catalogue() if a.torch_name]
OTHER_ACTIVATIONS = [a.name for a in activations.catalogue() if not a.torch_name]


def check_action(net, seed=0):
    net = randomize_batchnorm(net.double(), seed).eval()
    x = torch.randn(DIGITS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    spec = symmetry_spec(net, x)  # the engine's default budget: the answer does not depend on load
    g = spec.sample(generator=torch.Generator().manual_seed(seed))
    moved = spec.act(g, net)
    with torch.no_grad():
        y, y2 = net(x), moved(x)
    assert float((y2 - y).abs().max()) <= 1e-9 * max(1.0, float(y.abs().max()))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "act modified the original"
    return spec, net, moved


@pytest.mark.parametrize("model", list(REFERENCE))
@pytest.mark.parametrize("act", TORCH_ACTIVATIONS)
def test_every_reference_model_and_torch_activation(model, act):
    """Done-when: act(sample()) computes the same function while the weights move."""
    spec, net, moved = check_action(REFERENCE[model](act))
    assert max_param_change(net, moved) > 1e-3


@pytest.mark.parametrize("act", OTHER_ACTIVATIONS)
def test_catalogue_activations_without_torch_module(act):
    # (a shallow net: stacked exp or x**2 overflow in deep ones)
    spec, net, moved = check_action(REFERENCE["mlp"](act))
    assert max_param_change(net, moved) > 1e-3


def test_float32_model_keeps_dtype_and_equivalence():
    net = randomize_batchnorm(resnet20(width=2, in_channels=1)).eval()
    x = torch.randn(DIGITS)
    spec = symmetry_spec(net, x)
    moved = spec.act(spec.sample(torch.Generator().manual_seed(3)), net)
    assert all(p.dtype == torch.float32 for p in moved.parameters())
    with torch.no_grad():
        y = net(x)
    assert verify_equivalence(net, moved, x) <= 1e-4 * float(y.abs().max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_models():
    net = randomize_batchnorm(resnet20(width=2, in_channels=1)).cuda().eval()
    x = torch.randn(DIGITS, device="cuda")
    spec = symmetry_spec(net, x)
    moved = spec.act(spec.sample(), net)
    assert next(moved.parameters()).is_cuda
    assert verify_equivalence(net, moved, x) <= 1e-4 * float(net(x).abs().max())


def test_batch_norm_statistics_follow_eq_E47():
    # conv -> bn -> relu: scale the bn input by s (any sign) and the output by t > 0.
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4, 2)).double()
    randomize_batchnorm(net)
    net.eval()
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    s = torch.tensor([2.0, -0.5, 3.0], dtype=torch.float64)
    t = torch.tensor([0.5, 4.0, 1.5], dtype=torch.float64)
    g = SymmetryElement({"0": MonomialElement(torch.arange(3), s), "1": MonomialElement(torch.arange(3), t)})
    moved = spec.act(g, net)
    bn, new = net[1], moved[1]
    eps = bn.eps
    torch.testing.assert_close(new.running_mean, s * bn.running_mean)
    torch.testing.assert_close(new.running_var, s**2 * (bn.running_var + eps) - eps)
    torch.testing.assert_close(new.weight.detach(), t * torch.sign(s) * bn.weight.detach())
    torch.testing.assert_close(new.bias.detach(), t * bn.bias.detach())
    torch.testing.assert_close(moved[0].weight.detach(), s.view(3, 1, 1, 1) * net[0].weight.detach())
    assert verify_equivalence(net, moved, x) < 1e-12


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed_g=st.integers(0, 2**31 - 1), seed_h=st.integers(0, 2**31 - 1))
def test_group_laws(seed_g, seed_h):
    net, x, spec = _resnet_for_laws()
    g = spec.sample(torch.Generator().manual_seed(seed_g))
    h = spec.sample(torch.Generator().manual_seed(seed_h))
    assert spec.contains(g) and spec.contains(h)
    gh = spec.compose(g, h)
    assert spec.contains(gh)
    lhs, rhs = spec.act(gh, net), spec.act(g, spec.act(h, net))
    for (k, a), b in zip(lhs.state_dict().items(), rhs.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=k)
    back = spec.act(spec.inverse(g), spec.act(g, net))
    assert max_param_change(back, net) < 1e-9
    e = spec.compose(g, spec.inverse(g))
    assert all(el.equals(spec.site(k).group.identity(), 1e-9) for k, el in e.items())
    assert verify_equivalence(net, lhs, x) < 1e-9


_LAWS = {}


def _resnet_for_laws():
    if not _LAWS:
        net = randomize_batchnorm(resnet20(width=2, activation="leaky_relu", in_channels=1).double()).eval()
        x = torch.randn(DIGITS, dtype=torch.float64)
        _LAWS["v"] = (net, x, symmetry_spec(net, x))
    return _LAWS["v"]


def test_verify_equivalence_restores_training_mode():
    net = resnet20(width=2, in_channels=1).train()
    other = resnet20(width=2, in_channels=1).train()
    x = torch.randn(DIGITS)
    d = verify_equivalence(net, other, x)
    assert d > 0 and net.training and other.training and net.bn1.training


# Odd wirings --------------------------------------------------------------------------------

class FanOut(nn.Module):
    """h = l1(x) feeds leaky_relu, a Threshold(0, 0) (= ReLU, not a catalogue module) and,
    through the skip connection c = l2(a) + h, a tanh."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(12, 4), nn.Linear(6, 4)
        self.th = nn.Threshold(0.0, 0.0)

    def forward(self, x):
        h = self.l1(x)
        a = F.leaky_relu(h, 0.2)
        b = self.th(h)
        c = self.l2(a) + h
        d = torch.cat([torch.tanh(c), b], dim=1)
        return self.l3(d) + self.l4(b.relu())


def test_fan_out_skip_and_concatenation():
    net = FanOut().double()
    x = torch.randn(7, 5, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    # l1 and l2 are tied by the addition; their group is (0,oo) ∩ (0,oo) ∩ {+-1} = {1}
    (site,) = spec.sites
    assert site.name == "l1" and set(site.members) == {"l1", "l2"}
    assert pn(site.group) == ("trivial", False)
    assert any("threshold" in n and "estimated numerically" in n for n in spec.notes)
    g = spec.sample(torch.Generator().manual_seed(1))
    moved = spec.act(g, net)
    assert verify_equivalence(net, moved, x) < 1e-12
    assert max_param_change(net, moved) > 1e-3


class TwoHeads(nn.Module):
    """One hidden layer read by two activations: relu and leaky_relu -> (0, oo) survives."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2 = nn.Linear(3, 5), nn.Linear(10, 2)

    def forward(self, x):
        h = self.l1(x)
        return self.l2(torch.cat([F.relu(h), F.leaky_relu(h, 0.1)], 1))


def test_intersection_of_two_positive_homogeneous_activations():
    net = TwoHeads().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert pn(site.group) == ("all", False)
    moved = spec.act(spec.sample(torch.Generator().manual_seed(0)), net)
    assert verify_equivalence(net, moved, x) < 1e-12


def test_threshold_module_gets_numeric_estimate():
    net = nn.Sequential(nn.Linear(3, 4), nn.Threshold(0.0, 0.0), nn.Linear(4, 2))
    spec = symmetry_spec(net, torch.zeros(1, 3))
    (site,) = spec.sites
    # Threshold(0, 0) is ReLU: (0, oo) by hand
    assert pn(site.group) == ("all", False)


class WithCumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.l, self.o = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.o(torch.cumsum(torch.relu(self.l(x)), 1))


def test_layer_norm_permutes_with_its_affine_parameters():
    # Linear -> LayerNorm -> ReLU -> Linear: LN commutes with permutations (its gamma, beta
    # permuted) and the global sign of its input, but not with per-unit scalings of it: the
    # Linear output gets {+-1} I times permutations, sharing its permutation with the LN output,
    # whose ReLU site gets (0, oo).
    net = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 2)).double()
    with torch.no_grad():
        net[1].weight.normal_()
        net[1].bias.normal_()
    x = torch.randn(6, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    sign, site = spec.sites
    assert (site.name, site.permutation, pn(site.group)[0]) == ("1", "free", "all")
    assert (sign.name, sign.permutation, sign.dimension, sign.components) == ("0", "1", 0, 2)
    moved = spec.act(spec.sample(torch.Generator().manual_seed(2)), net)
    assert verify_equivalence(net, moved, x) < 1e-12
    assert max_param_change(net, moved) > 1e-2


def test_unsupported_operation_is_named():
    with pytest.raises(SymmetrySpecError, match=r"aten.cumsum .*no rule"):
        symmetry_spec(WithCumsum(), torch.zeros(1, 3))


def test_unknown_freeze_keeps_a_valid_group():
    net = WithCumsum().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x, unknown="freeze")
    assert spec.sites == () and spec.notes
    assert verify_equivalence(net, spec.act(spec.sample(), net), x) == 0.0


def test_untraceable_model_gives_one_line_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(2, 2)

        def forward(self, x):
            return self.l(x) if x.sum() > 0 else x

    with pytest.raises(SymmetrySpecError, match="torch.export cannot capture"):
        symmetry_spec(Branchy(), torch.zeros(1, 2))


def test_argument_errors():
    net = mlp([3, 4, 2])
    with pytest.raises(TypeError, match="example_inputs"):
        symmetry_spec(net, [[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="unknown"):
        symmetry_spec(net, torch.zeros(1, 3), unknown="ignore")
    spec = symmetry_spec(net, torch.zeros(1, 3))
    with pytest.raises(ValueError, match="architecture"):
        spec.act(spec.identity(), mlp([3, 5, 2]))
    with pytest.raises(ValueError, match="not a site"):
        spec.act(SymmetryElement({"nope": MonomialElement(torch.arange(4), torch.ones(4))}), net)
    with pytest.raises(TypeError, match="generator"):
        spec.sample(generator=3)
    with pytest.raises(KeyError, match="no site"):
        spec.site("nope")


def test_json_summary_fields():
    spec = symmetry_spec(myrtle(width=2, in_channels=1), torch.zeros(DIGITS))
    js = spec.to_json()
    assert js["dimension"] == spec.dimension
    assert js["sites"][1] == {**js["sites"][1], "name": "1", "group": "Monomial(2, POSITIVE, permutations=True)",
                              "permutation": "free", "components": "2"}


def test_resnet18_full_width_counts_hand_derived():
    """Full-width ResNet18 (fig. 28), on a small input (only the shapes matter).

    Convolutions feeding batch norms: stem 64, blocks 4*64 + 4*128 + 4*256 + 4*512, projection
    shortcuts 128 + 256 + 512: 4800 units of R* (sign flips). Inner ReLU sites: 2*(64 + 128 +
    256 + 512) = 1920. Residual streams (projection shortcuts start a new one per stage):
    64 + 128 + 256 + 512 = 960. Dimension 7680.
    """
    spec = symmetry_spec(resnet18(), torch.zeros(1, 3, 8, 8))
    assert spec.dimension == 7680
    free = [64, 64, 64, 128, 128, 256, 256, 512, 512, 128, 256, 512]
    assert sorted(s.size for s in spec.sites if s.permutation == "free") == sorted(free)
    log10 = sum(math.lgamma(n + 1) for n in free) / math.log(10) + 4800 * math.log10(2)
    assert spec.log10_components == pytest.approx(log10)
    assert "components 10^7379.4" in spec.summary()
    js = spec.to_json()
    assert js["components"] is None and js["log10_components"] == pytest.approx(log10)


class CubePlusX(nn.Module):
    """x**3 + x: odd, and a x**3 + a x = b (x**3 + x) for all x forces a = b = +-1."""

    def forward(self, x):
        return x**3 + x


class CustomElementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.c, self.b, self.o = nn.Linear(3, 4), CubePlusX(), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.c(self.a(x))
        h = torch.nn.functional.threshold(self.b(h), 0.0, 0.0)  # = relu: (0, oo)
        return self.o(h)


def test_user_elementwise_module_and_function_get_numeric_estimates():
    net = CustomElementwise().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    s = {site.name: site.group for site in spec.sites}
    assert pn(s["a"]) == ("trivial", True)
    assert pn(s["b"]) == ("all", False)
    assert len(spec.notes) == 2 and all("estimated numerically" in n for n in spec.notes)
    moved = spec.act(spec.sample(torch.Generator().manual_seed(0)), net)
    assert verify_equivalence(net, moved, x) < 1e-12


def test_pooling_over_the_hidden_axis_is_refused():
    # MaxPool1d on a (batch, features) tensor pools over the features themselves
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.MaxPool1d(2), nn.Linear(2, 1))
    with pytest.raises(SymmetrySpecError, match="pooling over the hidden axis"):
        symmetry_spec(net, torch.zeros(2, 3))


# Never silently wrong (issue 10, section 5) ---------------------------------------------------

import _transformer_models as TM  # noqa: E402  (tests/_transformer_models.py, written for these cases)


def _relative(spec, model, args, kwargs, seed=0):
    return spec.verify(model, args, kwargs, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case, dimension", [("tied_head", 16), ("untied_head", 272), ("sliced_gate", 32),
                                             ("shared_module", 8), ("multihead_attention", 256),
                                             ("encoder_layer", 288)])
def test_odd_cases_keep_the_function(case, dimension):
    model, args, kwargs = TM.ODD_CASES[case]()
    spec = symmetry_spec(model, args, kwargs)
    assert spec.dimension == dimension  # hand counts: docs/transformer_symmetries.md
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for seed in range(2):
        assert _relative(spec, model, args, kwargs, seed) <= 1e-5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "act modified the original"


def test_slicing_example_gets_the_gelu_permutations_tied_and_the_free_linear_half():
    model, args, kwargs = TM.ODD_CASES["sliced_gate"]()
    spec = symmetry_spec(model, args, kwargs)
    gelu, linear = spec.sites
    assert (gelu.name, gelu.size, pn(gelu.group)) == ("a[0:32]", 32, ("trivial", False))
    assert (linear.name, linear.size, pn(linear.group)) == ("a[32:64]", 32, ("all", True))
    assert linear.permutation == "a[0:32]"  # the product ties the permutations of both halves
    moved = spec.act(spec.sample(torch.Generator().manual_seed(3)), model)
    with torch.no_grad():
        assert float((moved(*args) - model(*args)).abs().max()) <= 1e-5 * float(model(*args).abs().max())


def test_tied_head_transforms_the_shared_tensor_once():
    model, args, kwargs = TM.ODD_CASES["tied_head"]()
    spec = symmetry_spec(model, args, kwargs)
    moved = spec.act(spec.sample(torch.Generator().manual_seed(0)), model)
    shared = [n for n, b in spec.bindings.items() if len(b[0].aliases) > 1]
    assert len(shared) == 1
    names = spec.bindings[shared[0]][0].aliases
    a, b = (moved.get_parameter(n) for n in names)
    assert a is b  # still one tensor


def test_pruned_weights_are_handled_exactly():
    """torch.nn.utils.prune: weight = weight_orig * weight_mask. Monomial elements move the mask
    by their permutations (it stays a 0/1 mask), so the pruned layer's sites are monomial (here
    they are anyway: relu 16, tanh 0): 16 dimensions, and the function is kept."""
    model, args, kwargs = TM.ODD_CASES["pruning"]()
    spec = symmetry_spec(model, args, kwargs)
    assert spec.dimension == 16
    g = spec.sample(torch.Generator().manual_seed(0))
    moved = spec.act(g, model)
    mask, new_mask = model[2].weight_mask, moved[2].weight_mask
    assert set(new_mask.unique().tolist()) <= {0.0, 1.0} and not torch.equal(mask, new_mask)
    assert float(mask.sum()) == float(new_mask.sum())
    assert _relative(spec, model, args, kwargs) <= 1e-5


def test_weight_norm_is_handled_exactly():
    """parametrizations.weight_norm: W = g v / |v| per row. Rows: P D is v's rows permuted and g
    scaled; columns: v's columns by B^-1 and g rescaled by |v'_i| / |v_i| (a parameter-dependent
    action), so the relu site before it keeps its 16 positive scalings."""
    model, args, kwargs = TM.ODD_CASES["weight_norm"]()
    spec = symmetry_spec(model, args, kwargs)
    assert spec.dimension == 16 and [s.size for s in spec.sites] == [16, 16]
    for seed in range(2):
        assert _relative(spec, model, args, kwargs, seed) <= 1e-5


@pytest.mark.parametrize("case", ["spectral_norm", "parametrize"])
def test_computed_weights_are_refused_in_one_line(case):
    model, args, kwargs = TM.ODD_CASES[case]()
    with pytest.raises(SymmetrySpecError, match=r"module '2'.*remove it first") as e:
        symmetry_spec(model, args, kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("case, module", [("lstm", "lstm")])
def test_unsupported_layers_are_refused_by_name(case, module):
    model, args, kwargs = TM.ODD_CASES[case]()
    with pytest.raises(SymmetrySpecError, match=f"module '{module}"):
        symmetry_spec(model, args, kwargs)


def test_unknown_freeze_on_a_refused_layer_keeps_a_valid_group():
    model, args, kwargs = TM.ODD_CASES["lstm"]()
    spec = symmetry_spec(model, args, kwargs, unknown="freeze")
    assert any("recurrent" in n for n in spec.notes)
    assert _relative(spec, model, args, kwargs) <= 1e-6


def test_a_model_without_sites_says_why():
    net = nn.Sequential(nn.Linear(3, 2))
    spec = symmetry_spec(net, torch.zeros(1, 3))
    assert spec.sites == () and any(n.startswith("no site: every hidden unit space is fixed") for n in spec.notes)
    spec = symmetry_spec(nn.Sequential(nn.ReLU()), torch.zeros(1, 3))
    assert any("no layer with parameters" in n for n in spec.notes)


def test_strict_refuses_estimated_activation_groups():
    net = CustomElementwise().double()
    x = torch.randn(5, 3, dtype=torch.float64)
    with pytest.raises(SymmetrySpecError, match="strict=True.*estimated numerically"):
        symmetry_spec(net, x, strict=True)
    assert symmetry_spec(mlp([3, 4, 2]), torch.zeros(1, 3), strict=True).dimension == 4


def test_verify_reports_a_relative_difference():
    net = mlp([3, 4, 2], activation="relu").double()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.verify(net, x) < 1e-12
    from torch_bridge.symmetry import MonomialElement as ME

    bad = SymmetryElement({"1": ME(torch.arange(4), torch.tensor([-1.0, 1, 1, 1], dtype=torch.float64))})
    assert spec.verify(net, x, g=bad) > 1e-3


def test_transformed_tensors_returns_only_what_an_element_moves():
    net = mlp([3, 5, 4, 2], activation="relu").double()
    x = torch.randn(4, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    g = spec.sample(torch.Generator().manual_seed(0))
    only_first = SymmetryElement({"1": g["1"]})
    # site "1" (5 relu units) moves Linear 1's rows and bias and Linear 3's columns only
    assert set(spec.transformed_tensors(only_first, net)) == {"1.weight", "1.bias", "3.weight"}
    assert spec.transformed_tensors(spec.identity(), net).keys() == spec.transformed_tensors(g, net).keys()
    assert spec.verify(net, x, g=only_first) < 1e-12


def test_fold_norm_gains_on_hugging_face_llama():
    model, args, kwargs = TM.TRANSFORMERS["hf_llama"]()
    from torch_bridge.symmetry import Orthogonal, fold_norm_gains

    folded = fold_norm_gains(model, args, kwargs)
    with torch.no_grad():
        a, b = model(*args, **kwargs).logits, folded(*args, **kwargs).logits
    assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    spec = symmetry_spec(folded, args, kwargs)
    assert any(s.group == Orthogonal(32) for s in spec.sites)  # the residual stream rotates
    assert _relative(spec, folded, args, kwargs) <= 1e-5


def test_engine_unknown_activation_group_is_noted_and_refused_by_strict():
    # sigma(x) = x exp(sin(c log|x|)), c = 1.4142 (read as 7071/5000): odd (x odd, log|x| even),
    # so {1, -1} is in S; positive scalings need a shift s of t = log|x| with
    # exp(sin(c (t + s))) = q exp(sin(c t)), i.e. c s in 2 pi Z (a = e^(2 pi k / c)) -- exp(sin)
    # is not a rational function of e^(i c t), so the engine cannot derive this exactly and its
    # numeric scan finds no exact constant: status "unknown", lower bound {1, -1}. The bridge
    # must use only that bound, say so in a note, refuse it with strict=True, and not cache it.
    from groupcalc import _groups

    name = "test_logperiodic_undecided"
    activations.register(name, "x*exp(sin(1.4142*log(abs(x))))")
    try:
        net = nn.Sequential(nn.Linear(3, 4), CatalogueActivation(name), nn.Linear(4, 2)).double()
        x = torch.randn(5, 3, dtype=torch.float64)
        spec = symmetry_spec(net, x)
        assert [n for n in spec.notes if name in n and "status 'unknown'" in n and "{1, -1} is used" in n], spec.notes
        (_, _, used), = spec.activations
        assert used.status == "unknown" and used.one_dimensional().describe() == "{1, -1}"
        assert "SIGNS" in repr(spec.sites[0].group)  # the site acts by signed permutations only
        assert not [k for k in _groups._CACHE if k[0] == name]
        with pytest.raises(SymmetrySpecError, match=f"strict=True: the group of activation {name}.*status 'unknown'"):
            symmetry_spec(net, x, strict=True)
    finally:
        activations.unregister(name)


def test_verify_reports_a_broken_action_as_infinite():
    """A NaN in the moved model's outputs must not vanish in a max(): an element with a zero
    scaling (not in the group) breaks the network, and verify says so."""
    from torch_bridge.symmetry import MonomialElement

    net = mlp([4, 6, 3], activation="relu").double().eval()
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    bad = SymmetryElement({site.name: MonomialElement(torch.arange(6), torch.zeros(6, dtype=torch.float64))})
    assert spec.verify(net, x, g=bad) == math.inf
    assert spec.verify(net, x) < 1e-12
