"""Rules of torch_bridge/symmetry/rules/_linear.py: linear maps with a parameter.

Each rule is tested both ways: a sampled element keeps the function, and an element of the
next larger group (hand-picked to violate the rule's constraint) changes it. Expected groups and
dimensions are derived by hand in the comments.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torch_bridge.symmetry import (GeneralLinear, Monomial, MonomialElement, SymmetryElement,
                                   SymmetrySpecError, symmetry_spec)
from torch_bridge.symmetry._site_groups import POSITIVE, R_NONZERO

GEN = torch.Generator


def keeps(spec, net, x, seed=0, kwargs=None):
    return spec.verify(net, x, kwargs, generator=GEN().manual_seed(seed))


def rel_change(spec, net, x, elements):
    return spec.verify(net, x, g=SymmetryElement(elements))


class TwoLinear(nn.Module):
    """Linear -> Linear: the space between is GL(n) (no activation)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.b(self.a(x))


def test_space_between_two_linear_maps_is_general_linear():
    net = TwoLinear().double()
    x = torch.randn(6, 5, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group == GeneralLinear(4) and spec.dimension == 16
    assert keeps(spec, net, x) < 1e-10


class Conv1DStyle(nn.Module):
    """Hugging Face's GPT-2 Conv1D: y = addmm(b, x, W) with W stored (in, out)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(5, 6, dtype=torch.float64))
        self.b1 = nn.Parameter(torch.randn(6, dtype=torch.float64))
        self.out = nn.Linear(6, 2).double()

    def forward(self, x):
        h = torch.addmm(self.b1, x.view(-1, 5), self.w1).view(x.shape[0], x.shape[1], 6)
        return self.out(torch.relu(h))


def test_addmm_with_weight_stored_in_out():
    net = Conv1DStyle()
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    # relu: P D with D > 0 on the 6 hidden units
    assert site.group == Monomial(6, POSITIVE) and spec.dimension == 6
    assert keeps(spec, net, x) < 1e-10
    # a negative scaling is outside the ReLU group: it breaks the function
    bad = MonomialElement(torch.arange(6), torch.tensor([-1.0, 1, 1, 1, 1, 1], dtype=torch.float64))
    assert rel_change(spec, net, x, {site.name: bad}) > 1e-3


def conv_net(groups, mid=8):
    return nn.Sequential(nn.Conv2d(4, mid, 1), nn.Conv2d(mid, mid, 3, padding=1, groups=groups), nn.ReLU(),
                         nn.Conv2d(mid, 3, 1)).double()


def test_depthwise_convolution_ties_permutations_and_frees_scalings():
    """Depthwise: y_c = w_c * x_c. Input: P D_in (any non-zero D_in, absorbed by w); output:
    P D_out with the SAME permutation, D_out > 0 (relu). Dimension 8 + 8."""
    net = conv_net(8)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    groups = {s.name: s.group for s in spec.sites}
    assert groups == {"0": Monomial(8, R_NONZERO), "1": Monomial(8, POSITIVE)}
    assert spec.site("0").permutation == "1"
    assert spec.dimension == 16
    assert keeps(spec, net, x) < 1e-10
    # permuting the input channels without the output ones breaks the depthwise conv
    p = torch.roll(torch.arange(8), 1)
    g = {"0": MonomialElement(p, torch.ones(8, dtype=torch.float64)),
         "1": MonomialElement(torch.arange(8), torch.ones(8, dtype=torch.float64))}
    assert rel_change(spec, net, x, g) > 1e-3


def test_grouped_convolution_acts_blockwise():
    """groups=2 on 8 channels: each group has its own GL(4) on its input (between two linear
    maps) and its own ReLU monomial group on its output: input 2 * 16 = 32, output 2 * 4 = 8."""
    net = conv_net(2)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert sorted((s.name, s.group) for s in spec.sites) == [
        ("0[0:4]", GeneralLinear(4)), ("0[4:8]", GeneralLinear(4)),
        ("1[0:4]", Monomial(4, POSITIVE)), ("1[4:8]", Monomial(4, POSITIVE))]
    assert spec.dimension == 40
    assert any("grouped convolution" in n for n in spec.notes)
    assert keeps(spec, net, x) < 1e-10
    # a negative scaling on a relu group's units breaks it
    bad = MonomialElement(torch.arange(4), torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
    assert rel_change(spec, net, x, {"1[0:4]": bad}) > 1e-3


def test_transposed_convolution():
    net = nn.Sequential(nn.ConvTranspose2d(3, 6, 2, stride=2), nn.ReLU(), nn.Conv2d(6, 2, 3)).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group == Monomial(6, POSITIVE)
    assert keeps(spec, net, x) < 1e-10


class TokenMixing(nn.Module):
    """MLP-Mixer token mixing: a Linear over the token axis (x.transpose(1, 2)) commutes with
    the channel element; with a bias only permutations of the channels (g 1 = 1) survive."""

    def __init__(self, bias):
        super().__init__()
        self.embed, self.mix, self.head = nn.Linear(3, 6), nn.Linear(5, 5, bias=bias), nn.Linear(6, 2)

    def forward(self, x):  # x: (B, tokens=5, 3)
        h = torch.relu(self.embed(x))
        h = self.mix(h.transpose(1, 2)).transpose(1, 2)
        return self.head(h)


@pytest.mark.parametrize("bias, positive", [(False, "all"), (True, "trivial")])
def test_linear_over_a_non_last_axis(bias, positive):
    net = TokenMixing(bias).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    (site,) = spec.sites
    assert site.group.scalings.positive == positive and site.group.scalings.negative is None
    assert keeps(spec, net, x) < 1e-10


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.mid = nn.Linear(6, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx):
        return self.head(torch.relu(self.mid(self.emb(idx))))


def test_tied_embedding_and_head_are_one_tensor_acted_on_once():
    """emb's columns are covariant to the embedding space E, head's columns contravariant to
    the relu space R: one tensor forces R = E^{-T} (relation "dual"), and the head's rows are the
    output (fixed). E is GL(6) (between emb and mid), so R = E^{-T} must also be monomial with
    D > 0 (relu) and E inherits it: 6 dimensions. The action transforms the shared tensor once."""
    torch.manual_seed(0)
    net = Tied().double()
    idx = torch.randint(0, 10, (3, 4))
    spec = symmetry_spec(net, idx)
    (site,) = spec.sites
    assert site.group == Monomial(6, POSITIVE) and spec.dimension == 6
    assert {b.relation for b in spec.bindings["emb.weight"]} == {"same", "dual"}
    assert spec.bindings["emb.weight"][0].aliases == ("emb.weight", "head.weight")
    moved = spec.act(spec.sample(GEN().manual_seed(1)), net)
    assert moved.head.weight is moved.emb.weight
    assert keeps(spec, net, idx) < 1e-10


def test_module_called_twice_ties_both_calls():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.mid, self.head = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.head(torch.relu(self.mid(torch.relu(self.mid(torch.relu(self.fc(x)))))))

    net = Twice().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    # mid's input space = its output space (the same weight both times): one relu site of 5
    (site,) = spec.sites
    assert site.size == 5 and spec.dimension == 5
    assert keeps(spec, net, x) < 1e-10


def test_embedding_indices_from_hidden_units_are_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.l, self.e = nn.Linear(3, 4), nn.Embedding(4, 2)

        def forward(self, x):
            return self.e(self.l(x).argmax(-1))

    with pytest.raises(SymmetrySpecError, match="argmax"):
        symmetry_spec(Bad(), torch.randn(2, 3))


def test_recurrent_layers_are_refused_by_name():
    class Rec(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    with pytest.raises(SymmetrySpecError, match=r"module 'lstm'.*recurrent layer \(LSTM\)"):
        symmetry_spec(Rec(), torch.randn(3, 2, 4))


def test_functional_linear_with_a_free_standing_weight_parameter():
    class Fn(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
            self.out = nn.Linear(4, 1).double()

        def forward(self, x):
            return self.out(F.leaky_relu(F.linear(x, self.w), 0.1))

    net = Fn()
    x = torch.randn(5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.sites[0].group == Monomial(4, POSITIVE)
    assert keeps(spec, net, x) < 1e-10


# timm-style blocks ------------------------------------------------------------------------------

class LN2d(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
class ConvNeXtBlock(nn.Module):
    def __init__(s, C=8):
        super().__init__()
        s.dw = nn.Conv2d(C, C, 7, padding=3, groups=C); s.norm = nn.LayerNorm(C); s.pw1 = nn.Linear(C, 4*C); s.pw2 = nn.Linear(4*C, C)
        s.gamma = nn.Parameter(torch.rand(C) + 0.5)
    def forward(s, x):
        h = s.dw(x).permute(0, 2, 3, 1)
        h = s.pw2(F.gelu(s.pw1(s.norm(h)))) * s.gamma
        return x + h.permute(0, 3, 1, 2)
class Net(nn.Module):
    def __init__(s):
        super().__init__(); s.stem = nn.Conv2d(3, 8, 4, stride=4); s.n = LN2d(8); s.b1 = ConvNeXtBlock(); s.b2 = ConvNeXtBlock(); s.head = nn.Linear(8, 3)
    def forward(s, x):
        h = s.b2(s.b1(s.n(s.stem(x))))
        return s.head(h.mean((2, 3)))
class SE(nn.Module):
    def __init__(s, C=8):
        super().__init__(); s.f1 = nn.Conv2d(C, 2, 1); s.f2 = nn.Conv2d(2, C, 1)
    def forward(s, x): return x * torch.sigmoid(s.f2(F.relu(s.f1(x.mean((2, 3), keepdim=True)))))
class Mb(nn.Module):
    def __init__(s):
        super().__init__(); s.c = nn.Conv2d(3, 8, 3); s.bn = nn.BatchNorm2d(8); s.dw = nn.Conv2d(8, 8, 3, groups=8); s.bn2 = nn.BatchNorm2d(8); s.se = SE(); s.pw = nn.Conv2d(8, 4, 1); s.head = nn.Linear(4, 2)
    def forward(s, x):
        h = F.hardswish(s.bn(s.c(x))); h = F.silu(s.bn2(s.dw(h))); h = s.se(h); return s.head(s.pw(h).mean((2, 3)))


def _randomize_norms(net):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.normal_()
                m.bias.normal_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    return net


def test_convnext_style_blocks():
    """Depthwise 7x7 conv, channels-last LayerNorm (F.layer_norm after a permute), pointwise MLP,
    layer scale gamma, residual. By hand: the stream (LN2d output, tied through both residuals):
    P D, 8; per block: the LN output 8 and the layer-scale input (pw2 rows) 8; GELU units perms
    only: 8 + 2 * 16 = 40."""
    net = _randomize_norms(Net().double().eval())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.dimension == 40
    assert keeps(spec, net, x) < 1e-10


def test_mobilenet_style_block_with_squeeze_excitation():
    """conv-BN-hardswish, depthwise conv-BN-SiLU, squeeze-excitation x * sigmoid(f2(relu(f1(mean x)))),
    pointwise conv. By hand: the two BN inputs R* (8 + 8), SE hidden relu units (2), the
    pointwise output between pw and head GL(4) (16); SiLU/hardswish/sigmoid units perms only: 34."""
    net = _randomize_norms(Mb().double().eval())
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.dimension == 34
    assert keeps(spec, net, x) < 1e-10


def _weight_normed(seed=0):
    """Linear(6, 16) - ReLU - weight_norm(Linear(16, 16)) - tanh - Linear(16, 3), float64."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    torch.nn.utils.parametrizations.weight_norm(net[2])
    return net.eval(), torch.randn(20, 6, dtype=torch.float64)


def test_weight_norm_columns_rescale_the_magnitudes():
    """W = g v / |v| per row (docs/transformer_symmetries.md, section 12): the ReLU site before
    the weight-normed layer keeps its 16 positive scalings, v's columns taking (P D)^{-1} and g
    rescaled by |v'_i| / |v_i|. Without the rescaling of g the same element breaks the function;
    a negative scaling (the next larger group at a ReLU) breaks it too."""
    net, x = _weight_normed()
    spec = symmetry_spec(net, x)
    relu = spec.site("0")
    assert relu.group == Monomial(16, POSITIVE) and spec.dimension == 16
    for seed in range(3):
        assert spec.verify(net, x, generator=GEN().manual_seed(seed)) < 1e-10
    # only the ReLU site moves: the magnitudes g change (parameter-dependent), and keeping them breaks it
    g_name = next(k for k in spec.bindings if k.endswith("original0"))
    g = SymmetryElement({"0": relu.group.sample(GEN().manual_seed(5))})
    moved = spec.act(g, net)
    with torch.no_grad():
        assert float((moved(x) - net(x)).abs().max()) < 1e-10 * float(net(x).abs().max())
        g_old = dict(net.named_parameters())[g_name]
        assert not torch.allclose(dict(moved.named_parameters())[g_name], g_old)
        dict(moved.named_parameters())[g_name].copy_(g_old)
        assert float((moved(x) - net(x)).abs().max()) > 1e-3 * float(net(x).abs().max())
    bad = SymmetryElement({"0": MonomialElement(torch.arange(16), torch.tensor([-1.0] + [1.0] * 15, dtype=torch.float64))})
    assert not spec.contains(bad) and spec.verify(net, x, g=bad) > 1e-3


def test_weight_norm_canonical_form_is_orbit_invariant():
    from torch_bridge.symmetry import canonicalize, verify_equivalence

    net, x = _weight_normed(1)
    spec = symmetry_spec(net, x)
    canon, _ = canonicalize(net, spec=spec)
    assert verify_equivalence(net, canon, x) < 1e-9
    other = spec.act(spec.sample(GEN().manual_seed(4)), net)
    canon2, _ = canonicalize(other, spec=spec)
    for (k, a), (_, b) in zip(canon.named_parameters(), canon2.named_parameters()):
        assert torch.allclose(a, b, atol=1e-9), k


class TokenMLP(nn.Module):
    """A token-mixing MLP on a residual stream: Linear(5 -> 7) over the token axis, an activation,
    Linear(7 -> 5) back; ``reuse`` also adds the hidden tensor elsewhere (then its units are seen
    by more than the second Linear and get no site)."""

    def __init__(self, act, reuse=False):
        super().__init__()
        self.embed, self.fc1, self.fc2, self.head = nn.Linear(3, 6), nn.Linear(5, 7), nn.Linear(7, 5), nn.Linear(6, 2)
        self.act, self.reuse = act, reuse

    def forward(self, x):  # x: (B, tokens=5, 3)
        h = torch.tanh(self.embed(x))
        z = self.fc1(h.transpose(1, 2))  # (B, 6 channels, 7 token-hidden units)
        y = self.fc2(self.act(z))
        if self.reuse:
            return self.head(h + y.transpose(1, 2)) + z.sum()
        return self.head(h + y.transpose(1, 2))


@pytest.mark.parametrize("act, scalings", [(torch.relu, POSITIVE), (F.gelu, None)], ids=["relu", "gelu"])
def test_token_mixing_hidden_units_get_a_site(act, scalings):
    """The units a Linear over the token axis creates (7 here) are a site of their own when only
    activations and the next token Linear read them (docs/transformer_symmetries.md section 10):
    P D with D in the activation's S on fc1's rows and bias, fc2's columns by (P D)^{-1}. A
    scaling outside S (a negative one for ReLU, any for GELU) breaks the function."""
    from torch_bridge.symmetry._site_groups import ONE

    torch.manual_seed(0)
    net = TokenMLP(act).double()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    hidden = spec.site("fc1")
    assert hidden.group == Monomial(7, scalings or ONE) and hidden.permutation == "free"
    assert any("token mixing in module 'fc1'" in n for n in spec.notes)
    for seed in range(3):
        assert keeps(spec, net, x, seed) < 1e-10
    bad = torch.tensor([-1.0] + [1.0] * 6 if scalings is POSITIVE else [2.0] + [1.0] * 6, dtype=torch.float64)
    g = {"fc1": MonomialElement(torch.arange(7), bad)}
    assert not spec.contains(SymmetryElement(g)) and rel_change(spec, net, x, g) > 1e-3
    # the hidden tensor read by something else too: no site for its units (noted)
    spec = symmetry_spec(TokenMLP(act, reuse=True).double(), x)
    assert "fc1" not in {s.name for s in spec.sites}
    assert any("acts over a dimension other than the units" in n for n in spec.notes)



@pytest.mark.parametrize("raw_first", [False, True])
def test_weight_norm_direction_also_read_directly_is_refused(raw_first):
    """Review (h1breview): v of a weight norm read directly too (F.linear(h, m.weight_v)): the
    action moves v's rows as the weight norm's (permuted, g scaled), which the direct use would
    not see (it changed the function by ~1 before); refused in either trace order, with the name."""
    import warnings

    from torch.nn.utils import weight_norm

    from torch_bridge.symmetry import SymmetrySpecError

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.a, self.m, self.b = nn.Linear(3, 5), weight_norm(nn.Linear(5, 4)), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            if raw_first:
                raw = torch.relu(F.linear(h, self.m.weight_v))
                return self.b(raw + torch.relu(self.m(h)))
            normed = torch.relu(self.m(h))
            return self.b(normed + torch.relu(F.linear(h, self.m.weight_v)))

    net = Mixed().double()
    with pytest.raises(SymmetrySpecError, match="m.weight_v.*weight norm and directly"):
        symmetry_spec(net, torch.randn(6, 3, dtype=torch.float64))


@pytest.mark.parametrize("act, group", [(nn.ReLU, Monomial(6, POSITIVE)), (nn.Tanh, None)])
def test_token_mixing_through_an_activation_module(act, group):
    """Review (h1breview): token mixing whose activation is a module (nn.ReLU, nn.GELU as in
    timm's Mixer; exported as one leaf node) gets its token-hidden site like F.gelu does. A
    negative scaling of one hidden unit (the next larger group for ReLU) breaks it."""
    from torch_bridge.symmetry._site_groups import SIGNS

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.f1, self.act, self.f2, self.out = nn.Linear(3, 4), nn.Linear(5, 6), act(), nn.Linear(6, 5), nn.Linear(4, 2)

        def forward(self, x):  # (B, T=5, C=4)
            h = self.inp(x)
            return self.out(h + self.f2(self.act(self.f1(h.transpose(1, 2)))).transpose(1, 2))

    net = Mixer().double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.site("f1").group == (group or Monomial(6, SIGNS))
    for seed in range(3):
        assert keeps(spec, net, x, seed) < 1e-10
    bad = SymmetryElement({"f1": MonomialElement(torch.arange(6), torch.tensor([-2.0] + [1.0] * 5, dtype=torch.float64))})
    assert not spec.contains(bad) and spec.verify(net, x, g=bad) > 1e-3


@pytest.mark.parametrize("act", [nn.Tanh, nn.Identity])
def test_weight_norm_on_a_conv_transpose_input_axis_keeps_negative_scalings(act):
    """Review (h1breview): weight_norm(ConvTranspose1d) (dim=0, HiFi-GAN style) normalises over
    its *input* channels, a contravariant axis: (P D)^-T = P D^-1 must permute v only and divide
    g by d; scaling v by 1/d too lost sign(d) (relative change 1.2 under a negative scaling)."""
    from torch.nn.utils.parametrizations import weight_norm

    net = nn.Sequential(nn.Conv1d(3, 4, 3), act(), weight_norm(nn.ConvTranspose1d(4, 5, 3)), nn.ReLU(),
                        nn.Conv1d(5, 2, 1)).double()
    x = torch.randn(2, 3, 7, dtype=torch.float64)
    spec = symmetry_spec(net, x)
    assert spec.site("0").group.scalings.negative is not None  # tanh: signs; identity: R*
    for seed in range(4):
        assert keeps(spec, net, x, seed) < 1e-10
    flip = SymmetryElement({"0": MonomialElement(torch.arange(4), torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64))})
    assert spec.verify(net, x, g=flip) < 1e-10
