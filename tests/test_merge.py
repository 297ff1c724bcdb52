"""torch_bridge.merge: interpolation, batch-norm re-estimation, REPAIR, barriers, merging many.

Expectations come from hand computations (numpy statistics of hooked activations, the
interpolation formula) or from the group action (a symmetry-transformed copy computes the
same function), never from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from torch_bridge.merge import (RepairWarning, average, barrier, evaluate, interpolate, merge_many,  # noqa: E402
                                reestimate_batchnorm, repair, repair_targets)
from torch_bridge.models import mlp, randomize_batchnorm, resnet20  # noqa: E402
from torch_bridge.symmetry import symmetry_spec, verify_equivalence  # noqa: E402


def _trained_mlp(activation="tanh", seed=0, steps=150, width=24):
    """A small MLP fitted to a fixed random teacher (its loss far below log(classes))."""
    torch.manual_seed(seed)
    net = mlp([16, width, width, 5], activation=activation)
    teacher = torch.Generator().manual_seed(123)
    W = torch.randn(16, 5, generator=teacher)
    x = torch.randn(512, 16, generator=teacher)
    y = (x @ W).argmax(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), [(x[i:i + 128], y[i:i + 128]) for i in range(0, 512, 128)]


# interpolate ------------------------------------------------------------------------------

def _bn_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4))
    randomize_batchnorm(net, seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.num_batches_tracked.fill_(10 + 7 * seed)
    return net


def test_interpolate_endpoints_are_the_models():
    a, b = _bn_net(0), _bn_net(1)
    for alpha, ref in ((0.0, a), (1.0, b)):
        m = interpolate(a, b, alpha)
        for k, v in ref.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k


def test_interpolate_is_the_convex_combination():
    a, b = _bn_net(0), _bn_net(1)
    m = interpolate(a, b, 0.3)
    sa, sb, sm = a.state_dict(), b.state_dict(), m.state_dict()
    for k in sa:
        if sa[k].is_floating_point():
            assert torch.allclose(sm[k], 0.7 * sa[k] + 0.3 * sb[k], atol=1e-6), k
    # the counter: 0.7 * 10 + 0.3 * 17 = 12.1 -> 12
    assert int(sm["1.num_batches_tracked"]) == 12
    assert a.state_dict()["0.weight"].data_ptr() != sm["0.weight"].data_ptr()  # a new model


def test_interpolate_refuses_bad_input():
    a = mlp([4, 8, 3])
    with pytest.raises(ValueError, match="alpha"):
        interpolate(a, a, float("nan"))
    with pytest.raises(ValueError, match="buffers"):
        interpolate(a, a, 0.5, buffers="mean")
    with pytest.raises(ValueError, match="data"):
        interpolate(a, a, 0.5, buffers="reestimate")
    with pytest.raises(ValueError, match="shape"):
        interpolate(a, mlp([4, 9, 3]), 0.5)


def test_interpolate_follows_dtype():
    a, b = mlp([4, 8, 3]).double(), mlp([4, 8, 3]).double()
    m = interpolate(a, b, 0.5)
    assert m[1].weight.dtype == torch.float64
    loss, acc = evaluate(m, [(torch.randn(6, 4), torch.randint(0, 3, (6,)))])  # float32 data is cast
    assert np.isfinite(loss) and 0 <= acc <= 1


def test_average_of_three():
    ms = [mlp([4, 8, 3]) for _ in range(3)]
    avg = average(ms)
    expect = sum(m[1].weight for m in ms) / 3
    assert torch.allclose(avg[1].weight, expect, atol=1e-6)


# batch-norm re-estimation -----------------------------------------------------------------

def _np_stats(z):
    z = np.asarray(z, dtype=np.float64)
    return z.mean(0), z.var(0, ddof=1)


def test_reestimate_eval_mode_matches_hand_statistics():
    net = _bn_net(0)
    data = [(torch.randn(n, 6, generator=torch.Generator().manual_seed(n)), torch.zeros(n, dtype=torch.long))
            for n in (10, 7, 5)]
    new = reestimate_batchnorm(net, data, mode="eval")
    X = np.concatenate([x.numpy() for x, _ in data]).astype(np.float64)
    W0, b0 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    z1 = X @ W0.T + b0
    m1, v1 = _np_stats(z1)
    np.testing.assert_allclose(new[1].running_mean.numpy(), m1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new[1].running_var.numpy(), v1, rtol=1e-5, atol=1e-6)
    # the second batch norm sees the first one normalising with the new (eval) statistics
    g1, be1 = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()
    h = np.maximum(g1 * (z1 - m1) / np.sqrt(v1 + net[1].eps) + be1, 0)
    W3, b3 = net[3].weight.detach().double().numpy(), net[3].bias.detach().double().numpy()
    m2, v2 = _np_stats(h @ W3.T + b3)
    np.testing.assert_allclose(new[4].running_mean.numpy(), m2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new[4].running_var.numpy(), v2, rtol=1e-4, atol=1e-5)
    assert int(new[1].num_batches_tracked) == 3
    # the argument is untouched and keeps its mode
    assert not torch.allclose(net[1].running_mean, new[1].running_mean)
    assert not net.training and not new.training


def test_reestimate_train_mode_matches_hand_statistics():
    net = _bn_net(1)
    data = [torch.randn(n, 6, generator=torch.Generator().manual_seed(n)) for n in (12, 9)]  # bare inputs
    new = reestimate_batchnorm(net, data)  # mode="train"
    W0, b0 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    g1, be1 = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()
    W3, b3 = net[3].weight.detach().double().numpy(), net[3].bias.detach().double().numpy()
    Z1, Z2 = [], []
    for x in data:
        z1 = x.double().numpy() @ W0.T + b0
        Z1.append(z1)
        # in training mode a batch norm normalises with its batch's biased variance
        h = np.maximum(g1 * (z1 - z1.mean(0)) / np.sqrt(z1.var(0) + net[1].eps) + be1, 0)
        Z2.append(h @ W3.T + b3)
    for bn, Z in ((new[1], Z1), (new[4], Z2)):
        m, v = _np_stats(np.concatenate(Z))
        np.testing.assert_allclose(bn.running_mean.numpy(), m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), v, rtol=1e-4, atol=1e-5)


def test_reestimate_reads_a_generator_once():
    net = _bn_net(0)
    batches = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    a = reestimate_batchnorm(net, (b for b in batches), mode="eval")  # one-shot: kept for every pass
    b = reestimate_batchnorm(net, batches, mode="eval")
    assert torch.equal(a[4].running_var, b[4].running_var)


# REPAIR -----------------------------------------------------------------------------------

def _outputs(model, names, data):
    out = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, y, n=n: out[n].append(y.detach().double()))
             for n in names]
    with torch.no_grad():
        for x, _ in data:
            model(x)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v).numpy() for n, v in out.items()}


@pytest.mark.parametrize("alpha", [0.5, 0.25])
def test_repair_restores_interpolated_statistics(alpha):
    a, data = _trained_mlp(seed=0)
    b, _ = _trained_mlp(seed=1)
    merged = interpolate(a, b, alpha)
    assert repair_targets(merged, data[0][0]) == ["1", "3"]  # the hidden layers, not the logits
    fixed = repair(a, b, merged, data, alpha=alpha, eps=0.0)
    names = ["1", "3"]
    za, zb, zm, zf = (_outputs(m, names, data) for m in (a, b, merged, fixed))
    for n in names:
        mu_t = (1 - alpha) * za[n].mean(0) + alpha * zb[n].mean(0)
        sd_t = (1 - alpha) * za[n].std(0) + alpha * zb[n].std(0)
        np.testing.assert_allclose(zf[n].mean(0), mu_t, atol=1e-5)
        np.testing.assert_allclose(zf[n].std(0), sd_t, rtol=1e-5, atol=1e-6)
        # interpolation had shrunk the variance (the collapse REPAIR undoes)
        assert zm[n].std(0).mean() < sd_t.mean()
    assert torch.equal(fixed[5].weight, merged[5].weight)  # the output layer is left alone
    assert not torch.equal(fixed[1].weight, merged[1].weight)
    assert torch.equal(merged[1].weight, interpolate(a, b, alpha)[1].weight)  # the argument is untouched


def test_repair_on_batch_norm_resets_its_statistics():
    torch.manual_seed(0)
    a = randomize_batchnorm(resnet20(width=2, in_channels=1), 0)
    b = randomize_batchnorm(resnet20(width=2, in_channels=1), 1)
    data = [(torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(i)), torch.zeros(8, dtype=torch.long))
            for i in range(2)]
    merged = interpolate(a, b, 0.5)
    fixed = repair(a, b, merged, data)
    targets = repair_targets(merged, data[0][0])
    assert all(isinstance(fixed.get_submodule(t), nn.BatchNorm2d) for t in targets)  # convs feed batch norms
    assert len(targets) == 19
    # measured: every batch norm's running statistics are those of its inputs in eval mode
    ins = {}
    hooks = [fixed.get_submodule(t).register_forward_pre_hook(lambda m, i, t=t: ins.setdefault(t, []).append(i[0].double()))
             for t in targets]
    with torch.no_grad():
        for x, _ in data:
            fixed(x)
    for h in hooks:
        h.remove()
    for t in targets:
        z = torch.cat(ins[t]).transpose(0, 1).reshape(len(fixed.get_submodule(t).running_mean), -1)
        bn = fixed.get_submodule(t)
        assert torch.allclose(bn.running_mean.double(), z.mean(1), atol=1e-5), t
        assert torch.allclose(bn.running_var.double(), z.var(1), rtol=1e-4, atol=1e-6), t


def test_repair_warns_when_it_cannot_shift():
    a = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 2))
    b = nn.Sequential(nn.Linear(4, 6, bias=False), nn.Tanh(), nn.Linear(6, 2))
    data = [(torch.randn(20, 4) + 3.0, torch.zeros(20, dtype=torch.long))]
    with pytest.warns(RepairWarning, match="no bias"):
        repair(a, b, interpolate(a, b, 0.5), data)


# barrier ----------------------------------------------------------------------------------

def test_barrier_of_a_model_with_itself_is_zero():
    a, data = _trained_mlp()
    r = barrier(a, a, data, alphas=11)
    assert abs(r.barrier) < 1e-12 and abs(r.accuracy_barrier) < 1e-12
    assert len(r.alphas) == len(r.loss) == len(r.accuracy) == 11
    assert r.alphas[0] == 0.0 and r.alphas[-1] == 1.0
    assert barrier(a, a, data, alphas=5, repair=True).barrier < 1e-4


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("method", ["weights", "activations"])
def test_barrier_of_a_transformed_copy_vanishes_after_alignment(activation, method):
    a, data = _trained_mlp(activation)
    spec = symmetry_spec(a, data[0][0])
    b = spec.act(spec.sample(torch.Generator().manual_seed(3)), a)
    assert verify_equivalence(a, b, data[0][0]) < 1e-5  # the same function
    raw = barrier(a, b, data, alphas=5)
    # independently: the midpoint of a network and a shuffled (sign-flipped) copy is not that network
    loss_a = evaluate(a, data)[0]
    assert raw.barrier > 0.1 and raw.loss[2] > loss_a + 0.1
    al = barrier(a, b, data, alphas=5, align=method)
    assert al.barrier < 1e-4, al
    assert al.distance_after < 1e-3 * al.distance_before


def test_barrier_result_is_immutable_and_jsonable():
    import dataclasses
    import json

    a, data = _trained_mlp()
    r = barrier(a, a, data, alphas=[0.0, 0.5, 1.0], metric="accuracy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.barrier = 1.0
    d = json.loads(json.dumps(r.to_json()))
    assert {"alphas", "loss", "accuracy", "barrier", "distance_before", "distance_after"} <= set(d)
    assert r.metric == "accuracy" and r.barrier == r.accuracy_barrier


def test_barrier_refuses_bad_input():
    a, data = _trained_mlp(steps=1)
    for kw, word in ((dict(alphas=1), "alphas"), (dict(metric="error"), "metric"), (dict(align="yes"), "align"),
                     (dict(buffers="x"), "buffers")):
        with pytest.raises(ValueError, match=word):
            barrier(a, a, data, **kw)
    with pytest.raises(ValueError, match="labels"):
        barrier(a, a, [x for x, _ in data], alphas=3)
    with pytest.raises(ValueError, match="no batches"):
        barrier(a, a, [], alphas=3)


# merge_many -------------------------------------------------------------------------------

def test_merge_many_of_transformed_copies_is_the_model():
    a, data = _trained_mlp()
    spec = symmetry_spec(a, data[0][0])
    copies = [spec.act(spec.sample(torch.Generator().manual_seed(s)), a) for s in (1, 2)]
    merged = merge_many([a, *copies], data, iterations=2)
    assert verify_equivalence(a, merged, data[0][0]) < 1e-4
    # without alignment the average of the copies is another function
    assert verify_equivalence(a, merge_many([a, *copies], align=None), data[0][0]) > 0.05


def test_merge_many_refuses_bad_input():
    a = mlp([4, 8, 3])
    with pytest.raises(ValueError, match="two"):
        merge_many([a])
    with pytest.raises(ValueError, match="iterations"):
        merge_many([a, a], iterations=0)
    with pytest.raises(ValueError, match="data"):
        merge_many([a, a])


def test_repair_on_a_transformer_corrects_hugging_face_conv1d():
    transformers = pytest.importorskip("transformers")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = dict(vocab_size=20, n_positions=8, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0,
               attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0)
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg)).eval())
    a, b = models
    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 20, (16, 8), generator=g), torch.randint(0, 20, (16, 8), generator=g)) for _ in range(2)]
    merged = interpolate(a, b, 0.5)
    targets = repair_targets(merged, data[0][0])
    assert "transformer.h.0.mlp.c_fc" in targets and "lm_head" not in targets
    fixed = repair(a, b, merged, data, eps=0.0)
    names = ["transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_attn"]
    za, zb, zf = (_outputs(m, names, data) for m in (a, b, fixed))
    for n in names:
        za_, zb_, zf_ = (z.reshape(-1, z.shape[-1]) for z in (za[n], zb[n], zf[n]))
        np.testing.assert_allclose(zf_.mean(0), (za_.mean(0) + zb_.mean(0)) / 2, atol=1e-5)
        np.testing.assert_allclose(zf_.std(0), (za_.std(0) + zb_.std(0)) / 2, rtol=1e-4, atol=1e-6)
    r = barrier(a, b, data, alphas=3)  # token-level loss and accuracy over (N, T, V) logits
    assert len(r.loss) == 3 and 0 <= r.accuracy[0] <= 1


def test_integer_buffers_must_agree():
    a, b = mlp([4, 8, 3]), mlp([4, 8, 3])
    a.register_buffer("mask", torch.tensor([1, 0, 1]))
    b.register_buffer("mask", torch.tensor([0, 0, 1]))
    assert torch.equal(interpolate(a, b, 1.0).mask, b.mask)  # an endpoint is the model
    with pytest.raises(ValueError, match="'mask'.*'model_a' and 'model_b'"):
        interpolate(a, b, 0.5)
