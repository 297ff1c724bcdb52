"""Canonical forms and alignment, on random and briefly trained networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torch_bridge.models import randomize_batchnorm, mlp, myrtle, resnet18, resnet20
from torch_bridge.symmetry import symmetry_spec, verify_equivalence
from torch_bridge.symmetry._align import align, weight_distance
from torch_bridge.symmetry._canonical import canonicalize

DIGITS = (6, 1, 8, 8)






def assert_same_weights(a, b, tol):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        if x.is_floating_point():
            scale = max(1.0, float(x.abs().max()))
            assert float((x - y).abs().max()) <= tol * scale, k


def _layer_norm_mlp():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.LayerNorm(7), nn.Tanh(), nn.Linear(7, 10))
    with torch.no_grad():
        net[2].weight.normal_()
        net[2].bias.normal_()
    return net


BUILDERS = {
    "mlp_relu": lambda: mlp([64, 7, 5, 10], activation="relu"),
    "mlp_tanh": lambda: mlp([64, 7, 5, 10], activation="tanh"),
    "mlp_leaky": lambda: mlp([64, 7, 5, 10], activation=("leaky_relu", {"negative_slope": 0.2})),
    "myrtle": lambda: myrtle(width=3, in_channels=1),
    "myrtle_nobn": lambda: myrtle(width=3, batch_norm=False, in_channels=1),
    "resnet20": lambda: resnet20(width=3, in_channels=1),
    "resnet18": lambda: resnet18(width=2, in_channels=1),
    "mlp_layernorm": _layer_norm_mlp,
}
_SPECS: dict = {}


def setup(name, seed=0):
    torch.manual_seed(seed)
    net = randomize_batchnorm(BUILDERS[name]().double(), seed)
    x = torch.randn(DIGITS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if name not in _SPECS:
        _SPECS[name] = symmetry_spec(net, x)
    return net, x, _SPECS[name]


# Canonical forms -----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(BUILDERS))
def test_canonical_form_is_orbit_invariant(name):
    net, x, spec = setup(name)
    canon, g = canonicalize(net, spec=spec)
    assert_same_weights(spec.act(g, net), canon, 1e-12)
    assert verify_equivalence(net, canon, x) < 1e-9
    for seed in (1, 2):
        other = spec.act(spec.sample(torch.Generator().manual_seed(seed)), net)
        assert weight_distance(other, net) > 1e-2
        canon2, _ = canonicalize(other, spec=spec)
        assert_same_weights(canon, canon2, 1e-9)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_canonical_form_is_orbit_invariant_property(seed):
    net, x, spec = setup("resnet20")
    canon, _ = canonicalize(net, spec=spec)
    other = spec.act(spec.sample(torch.Generator().manual_seed(seed)), net)
    canon2, _ = canonicalize(other, spec=spec)
    assert_same_weights(canon, canon2, 1e-9)


def test_canonical_mlp_satisfies_the_documented_rules():
    net, x, spec = setup("mlp_relu")
    canon, _ = canonicalize(net, spec=spec)
    for layer in (canon[1], canon[3]):
        rows = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
        # unit-norm incoming rows (ReLU: S+ = (0, oo))
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(rows.shape[0], dtype=torch.float64))
        # units sorted by decreasing sum of the incoming row (first signature entry)
        sums = rows.sum(1)
        assert torch.all(sums[:-1] >= sums[1:])


def test_canonical_tanh_signs_are_positive():
    net, x, spec = setup("mlp_tanh")
    canon, _ = canonicalize(net, spec=spec)
    for layer in (canon[1], canon[3]):
        rows = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
        assert torch.all(rows.sum(1) > 0)
        # tanh has no positive scalings: norms are untouched (a multiset of the originals)
    orig = torch.cat([net[1].weight, net[1].bias[:, None]], 1).detach().norm(dim=1)
    new = torch.cat([canon[1].weight, canon[1].bias[:, None]], 1).detach().norm(dim=1)
    torch.testing.assert_close(torch.sort(orig).values, torch.sort(new).values)


def test_dead_units_keep_scale_one():
    from torch_bridge.symmetry._canonical import canonical_scalings

    net, x, spec = setup("mlp_relu")
    with torch.no_grad():
        net[1].weight[2].zero_()
        net[1].bias[2] = 0.0
    g1 = canonical_scalings(spec, net)
    assert float(g1.scales["1"][2]) == 1.0
    canon, g = canonicalize(net, spec=spec)
    rows = torch.cat([canon[1].weight, canon[1].bias[:, None]], 1).detach()
    (dead,) = torch.nonzero(rows.norm(dim=1) == 0)[:, 0].tolist()
    assert verify_equivalence(net, canon, x) < 1e-9
    # orbit members agree except on the dead unit's outgoing weights (documented)
    other = spec.act(spec.sample(torch.Generator().manual_seed(4)), net)
    canon2, _ = canonicalize(other, spec=spec)
    keep = [i for i in range(7) if i != dead]
    torch.testing.assert_close(canon[1].weight, canon2[1].weight)
    torch.testing.assert_close(canon[3].weight[:, keep], canon2[3].weight[:, keep])
    assert not torch.allclose(canon[3].weight[:, dead], canon2[3].weight[:, dead])


# Alignment ----------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::torch_bridge.symmetry.UnderdeterminedAlignmentWarning")  # tiny inputs
@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("name", ["mlp_relu", "mlp_tanh", "myrtle", "resnet20", "mlp_layernorm"])
def test_alignment_recovers_a_planted_element(name, method):
    net, x, spec = setup(name)
    k = spec.sample(torch.Generator().manual_seed(11))
    planted = spec.act(k, net)
    g, report = align(net, planted, x, method, spec=spec, return_report=True)
    assert report.distance_before > 1e-1
    assert report.distance_after < 1e-8 * max(1.0, report.distance_before)
    assert_same_weights(spec.act(g, planted), net, 1e-9)
    # g undoes k: g k is the identity
    e = spec.compose(g, k)
    assert all(torch.equal(p, torch.arange(len(p))) for p in e.perms.values())
    assert all(torch.allclose(v, torch.ones_like(v), atol=1e-9) for v in e.scales.values())


@pytest.mark.filterwarnings("ignore::torch_bridge.symmetry.UnderdeterminedAlignmentWarning")  # tiny inputs
@pytest.mark.parametrize("name", ["mlp_relu", "myrtle", "resnet20"])
def test_alignment_of_independent_networks_reduces_distance(name):
    a, x, spec = setup(name, seed=0)
    b, _, _ = setup(name, seed=1)
    for method in ("weights", "activations"):
        g, report = align(a, b, x, method, spec=spec, return_report=True)
        moved = spec.act(g, b)
        assert report.distance_after < report.distance_before
        assert report.distance_after == pytest.approx(weight_distance(a, moved))
        assert verify_equivalence(b, moved, x) < 1e-9


def test_weight_matching_is_at_least_as_good_as_canonical_sorting_alone():
    a, x, spec = setup("mlp_relu", seed=0)
    b, _, _ = setup("mlp_relu", seed=3)
    _, r_w = align(a, b, x, "weights", spec=spec, max_iter=100, return_report=True)
    _, r_0 = align(a, b, x, "weights", spec=spec, max_iter=0, return_report=True)
    assert r_w.distance_after <= r_0.distance_after + 1e-12


def test_align_argument_errors():
    a, x, spec = setup("mlp_relu")
    with pytest.raises(ValueError, match="method"):
        align(a, a, x, "magic", spec=spec)
    with pytest.raises(ValueError, match="architecture"):
        align(a, mlp([64, 8, 5, 10]).double(), x, spec=spec)


# Briefly trained networks ------------------------------------------------------------------

def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(d.target)
    return X, y


def train(net, X, y, steps, seed):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for i in range(steps):
        idx = torch.randint(0, len(X), (64,))
        loss = nn.functional.cross_entropy(net(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("build, steps", [
    (lambda: mlp([64, 16, 12, 10], activation="leaky_relu"), 150),
    (lambda: myrtle(width=4, in_channels=1), 40),
])
def test_trained_networks(build, steps):
    X, y = digits()
    torch.manual_seed(0)
    net = train(build(), X, y, steps, seed=0)
    with torch.no_grad():
        acc = float((net(X).argmax(1) == y).float().mean())
    assert acc > 0.5  # it did learn something
    x = X[:32]
    spec = symmetry_spec(net, x)
    k = spec.sample(torch.Generator().manual_seed(5))
    moved = spec.act(k, net)
    with torch.no_grad():
        scale = float(net(x).abs().max())
    assert verify_equivalence(net, moved, x) < 1e-4 * scale
    canon, _ = canonicalize(net, spec=spec)
    canon2, _ = canonicalize(moved, spec=spec)
    assert_same_weights(canon, canon2, 1e-4)
    g = align(net, moved, x, "weights", spec=spec)
    assert_same_weights(spec.act(g, moved), net, 1e-4)
    # a second, independently trained network gets closer after alignment
    other = train(build(), X, y, steps, seed=1)
    _, report = align(net, other, x, "weights", spec=spec, return_report=True)
    assert report.distance_after < report.distance_before
    np.testing.assert_array_less(report.distance_after, report.distance_before)


def test_scale_choice_for_discrete_groups_hand_derived():
    import math

    import sympy

    from groupcalc import Scalings
    from torch_bridge.symmetry._frames import _choose

    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    norms, keys, dead = t([3.0, 0.2]), t([1.0, -1.0]), torch.tensor([False, False])
    g2 = Scalings("discrete", sympy.Integer(2))
    # 2^round(-log2 3) = 2^-2; 2^round(-log2 0.2) = 2^2; no negative elements: keys ignored
    np.testing.assert_allclose(_choose(norms, keys, g2, dead).numpy(), [0.25, 4.0])
    # S generated by r = -sqrt(2): r^m with m even for a positive key, odd for a negative one;
    # m0 = -log(norm)/log(sqrt 2) = -3.17 -> m = -4 ; 4.64 -> m = 5
    gr = Scalings("discrete", sympy.Integer(2), -sympy.sqrt(2))
    np.testing.assert_allclose(_choose(norms, keys, gr, dead).numpy(), [0.25, -(math.sqrt(2) ** 5)])
    # R*: unit norm with the sign of the key; dead units keep 1
    rstar = Scalings("all", None, -1)
    np.testing.assert_allclose(_choose(norms, keys, rstar, torch.tensor([False, True])).numpy(), [1 / 3, 1.0])


# Transformers and the groups beyond P.D --------------------------------------------------------

def _transformer(name):
    import _transformer_models as T

    from torch_bridge.symmetry import fold_norm_gains

    if name == "llama_folded":
        m, args, kw = T.llama_blocks(norm="module")
        m = fold_norm_gains(m.double(), args)
    elif name == "linear_chain":
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
        args, kw = (torch.randn(7, 6, dtype=torch.float64),), {}
    else:
        m, args, kw = getattr(T, name)()
        m = m.double()
    args = tuple(a.double() if a.is_floating_point() else a for a in args)
    key = ("T", name)
    if key not in _SPECS:
        _SPECS[key] = symmetry_spec(m, args, kw or None)
    return m, args, kw or None, _SPECS[key]


TRANSFORMERS = ["nanogpt", "llama_blocks", "llama_folded", "hf_gpt2", "linear_chain", "grouped_conv_groupnorm",
                "mlp_mixer", "tied_head"]


def _out_scale(net, args, kw):
    with torch.no_grad():
        y = net(*args, **(kw or {}))
    y = getattr(y, "logits", y)
    return max(1.0, float(y.abs().max()))


def _kinds(spec):
    from torch_bridge.symmetry._site_groups import Block

    return {type(s.group.inner if isinstance(s.group, Block) else s.group).__name__ for s in spec.sites}


def test_the_transformer_models_cover_every_group_kind():
    kinds = set()
    for name in ("nanogpt", "llama_folded", "linear_chain"):
        kinds |= _kinds(_transformer(name)[3])
    # (rotary heads carry ComplexDiagonal since issue 10's commutant; Scalar sites, the rotary
    # fallback, are covered in tests/test_rules_attention.py)
    assert {"GeneralLinear", "Orthogonal", "Monomial", "ComplexDiagonal"} <= kinds


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_canonical_form_is_orbit_invariant(name):
    net, args, kw, spec = _transformer(name)
    canon, g = canonicalize(net, spec=spec)
    assert_same_weights(spec.act(g, net), canon, 1e-12)
    assert verify_equivalence(net, canon, args, kw) < 1e-9 * _out_scale(net, args, kw)
    from torch_bridge.symmetry._canonical import canonical_report

    assert canonical_report(net, spec)["ambiguous"] == 0
    for seed in (1, 2):
        other = spec.act(spec.sample(torch.Generator().manual_seed(seed)), net)
        assert weight_distance(other, net) > 1e-2
        canon2, _ = canonicalize(other, spec=spec)
        assert_same_weights(canon, canon2, 1e-9)


@pytest.mark.filterwarnings("ignore::torch_bridge.symmetry.UnderdeterminedAlignmentWarning")  # tiny inputs
@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_transformer_alignment_recovers_a_planted_element(name, method):
    net, args, kw, spec = _transformer(name)
    k = spec.sample(torch.Generator().manual_seed(11))
    planted = spec.act(k, net)
    g, report = align(net, planted, args, method, spec=spec, example_kwargs=kw, return_report=True)
    assert report.distance_before > 1e-1
    assert report.distance_after < 1e-9 * report.distance_before
    # g undoes k on every site, dense ones included: g k = identity
    e = spec.compose(g, k)
    for name_, el in e.items():
        assert float((el.matrix() - torch.eye(el.n, dtype=el.dtype)).abs().max()) < 1e-8, name_


def test_canonical_query_key_heads_are_balanced_and_ordered():
    # docs/canonical_forms.md section 5: per head, [Wq | bq] and [Wk | bk] have the same
    # diagonal Gram Sigma (descending), and heads are sorted by Sigma
    net, args, kw, spec = _transformer("nanogpt")
    canon, _ = canonicalize(net, spec=spec)
    E, H = 32, 4
    d = E // H
    W = torch.cat([canon.h[0].attn.c_attn.weight, canon.h[0].attn.c_attn.bias[:, None]], 1).detach()
    first = []
    for h in range(H):
        q, kk = W[h * d:(h + 1) * d], W[E + h * d:E + (h + 1) * d]
        Gq, Gk = q @ q.T, kk @ kk.T
        torch.testing.assert_close(Gq, Gk, atol=1e-9, rtol=0)
        torch.testing.assert_close(Gq, torch.diag(torch.diagonal(Gq)), atol=1e-9, rtol=0)
        assert torch.all(torch.diagonal(Gq)[:-1] >= torch.diagonal(Gq)[1:])
        first.append(float(Gq[0, 0]))
    assert first == sorted(first, reverse=True)


def test_canonical_orthogonal_residual_stream_is_an_eigenframe():
    # docs/canonical_forms.md section 3: the residual stream's features when it is framed (the
    # token embedding's rows along the units, and the untied head's columns, which O(n) moves
    # the same way) are orthogonal with descending norms
    net, args, kw, spec = _transformer("llama_folded")
    site = spec.sites[0]
    assert type(site.group).__name__ == "Orthogonal"
    canon, g = canonicalize(net, spec=spec)
    F = torch.cat([canon.tok_embeddings.weight.detach().T, canon.output.weight.detach().T], 1)
    G = F @ F.T
    torch.testing.assert_close(G, torch.diag(torch.diagonal(G)), atol=1e-9, rtol=0)
    assert torch.all(torch.diagonal(G)[:-1] >= torch.diagonal(G)[1:])
    assert torch.all(F.sum(1) > 0)
    assert site.group.contains(g[site.name])


@pytest.mark.filterwarnings("ignore::torch_bridge.symmetry.UnderdeterminedAlignmentWarning")  # tiny inputs
def test_transformer_alignment_of_independent_networks_reduces_distance():
    a, args, kw, spec = _transformer("nanogpt")
    import _transformer_models as T

    b = T.nanogpt(seed=5)[0].double()
    for method in ("weights", "activations"):
        g, report = align(a, b, args, method, spec=spec, return_report=True)
        moved = spec.act(g, b)
        assert report.distance_after < report.distance_before
        assert report.distance_after == pytest.approx(weight_distance(a, moved))
        assert spec.contains(g)
        assert verify_equivalence(b, moved, args) < 1e-9 * _out_scale(b, args, None)


def test_float32_canonical_forms():
    net, x, spec = setup("mlp_tanh")
    net32 = net.float()
    spec32 = symmetry_spec(net32, x.float())
    canon, _ = canonicalize(net32, spec=spec32)
    other = spec32.act(spec32.sample(torch.Generator().manual_seed(1)), net32)
    canon2, _ = canonicalize(other, spec=spec32)
    assert next(canon2.parameters()).dtype == torch.float32
    assert_same_weights(canon, canon2, 1e-4)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_transformer_orbit_invariance_and_recovery_property(seed):
    net, args, kw, spec = _transformer("nanogpt")
    k = spec.sample(torch.Generator().manual_seed(seed))
    other = spec.act(k, net)
    canon, _ = canonicalize(net, spec=spec)
    canon2, _ = canonicalize(other, spec=spec)
    assert_same_weights(canon, canon2, 1e-9)
    g = align(net, other, args, "weights", spec=spec)
    e = spec.compose(g, k)
    assert all(float((el.matrix() - torch.eye(el.n, dtype=el.dtype)).abs().max()) < 1e-8 for el in e.values())
