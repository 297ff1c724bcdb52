"""Unit tests of torch_bridge.experiments: data, augmentation, training/zoo, sites, stitching
layers, statistics and the CLI's errors. End-to-end runs are in test_experiments_e2e.py."""

from __future__ import annotations

import io
import math
import pickle
import tarfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_bridge import models  # noqa: E402
from torch_bridge.experiments import (  # noqa: E402
    ModelSpec,
    Stitch,
    StitchConstraint,
    TrainConfig,
    augment,
    find_sites,
    get_model,
    load_dataset,
    make_config,
    mean_ci,
    random_orthogonal,
    sinkhorn,
    train_model,
)
from torch_bridge.experiments._cli import main  # noqa: E402
from torch_bridge.experiments._sites import capture_site, channel_map, site_hook  # noqa: E402




# --------------------------------------------------------------------------- data
def test_digits_is_embedded_and_split():
    d = load_dataset("digits")
    assert d.x_train.shape[1:] == (8, 8, 1) and d.x_train.dtype == np.uint8
    assert len(d.y_train) + len(d.y_test) == 1797
    assert set(np.unique(d.y_train)) == set(range(10))
    assert not d.flips and d.shift == 1


def _png(arr):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_tarball_is_read_with_labels_and_cached(tmp_path):
    from torch_bridge.experiments._data import CIFAR10_CLASSES

    rng = np.random.default_rng(0)
    tar_path = tmp_path / "tiny.tar.gz"
    expected = {}
    with tarfile.open(tar_path, "w:gz") as tar:
        for split in ("train", "test"):
            for label, cls in enumerate(CIFAR10_CLASSES):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                data = _png(arr)
                info = tarfile.TarInfo(f"root/{split}/{cls}/0000.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                expected[(split, label)] = arr
    d = load_dataset("cifar10", tar_path, cache_dir=tmp_path / "cache")
    assert d.x_train.shape == (10, 32, 32, 3) and d.x_test.shape == (10, 32, 32, 3)
    for i, label in enumerate(d.y_train):
        np.testing.assert_array_equal(d.x_train[i], expected[("train", int(label))])
    for i, label in enumerate(d.y_test):
        np.testing.assert_array_equal(d.x_test[i], expected[("test", int(label))])
    cached = list((tmp_path / "cache" / "datasets").glob("*/x_train.npy"))
    assert len(cached) == 1
    again = load_dataset("cifar10", tar_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.x_train, d.x_train)


def test_pickled_batches_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    raw = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, 3))
        raw[name] = (data, labels)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}))
    d = load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    assert d.x_train.shape == (15, 32, 32, 3)
    data, labels = raw["test_batch"]
    # the pickled rows are channel-major (R plane, G plane, B plane)
    np.testing.assert_array_equal(d.x_test[1, 4, 7], data[1].reshape(3, 32, 32)[:, 4, 7])
    assert list(d.y_test) == labels


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="data_dir"):
        load_dataset("cifar10", tmp_path / "nope")


# --------------------------------------------------------------------------- augmentation
def test_augment_translates_with_mean_padding_and_flips():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, 6, 5)
    y = augment(x, shift=2, flips=True, generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        matches = []
        for flip in (False, True):
            src = padded[i].flip(2) if flip else padded[i]
            for dy in range(5):
                for dx in range(5):
                    if torch.equal(src[:, dy:dy + 6, dx:dx + 5], y[i]):
                        matches.append((flip, dy, dx))
        assert matches, f"image {i} is not a flipped/translated copy"
    # all translations and both flips occur over a batch of 64 (with overwhelming probability)
    assert not torch.equal(y, x)


def test_augment_without_shift_or_flip_is_identity():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(augment(x, 0, False), x)


# --------------------------------------------------------------------------- statistics
def test_mean_ci_student_t():
    m, ci, n = mean_ci([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.302653 (tables); sd = 1; half-width = 4.302653 / sqrt(3)
    assert (m, n) == (2.0, 3)
    assert ci == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert mean_ci([5.0]) == (5.0, None, 1)  # one value: no interval, not a zero-width one


# --------------------------------------------------------------------------- sites and hooks
def test_sites_of_reference_models():
    sites = find_sites(models.myrtle(width=4), torch.zeros(2, 3, 32, 32))
    assert [s.channels for s in sites] == [4, 8, 16, 32]
    assert sites[0].before == ("0", "1")  # conv and batch norm feed the first activation
    r20 = find_sites(models.resnet20(width=4), torch.zeros(2, 3, 32, 32))
    assert len(r20) == 1 + 2 * 9


def test_group_transform_is_undone_by_phi_inverse_prop_3_4():
    """Pre-activation A z and phi(A)^-1 after the activation leave the function unchanged
    for A in G_ReLU (P D with D > 0, phi(A) = A), but not for a rotation."""
    torch.manual_seed(0)
    net = models.myrtle(width=3, batch_norm=False).eval()
    x = torch.randn(5, 3, 32, 32)
    site = find_sites(net, x)[1]
    n = site.channels
    rng = np.random.default_rng(0)
    P = np.eye(n)[rng.permutation(n)]
    D = np.diag(np.exp(rng.normal(size=n)))
    for A, same in ((P @ D, True), (random_orthogonal(n, rng), False)):
        At = torch.as_tensor(A, dtype=torch.float32)
        Ainv = torch.linalg.inv(At)
        with site_hook(net, site, pre=lambda z: channel_map(At, z), post=lambda h: channel_map(Ainv, h)):
            out = net(x)
        assert torch.allclose(out, net(x), atol=1e-4) is same


def test_capture_site_returns_the_activation_output():
    torch.manual_seed(0)
    net = models.myrtle(width=2).eval()
    x = torch.randn(3, 3, 32, 32)
    site = find_sites(net, x)[0]
    expected = net[2](net[1](net[0](x)))
    assert torch.allclose(capture_site(net, site, x), expected)


# --------------------------------------------------------------------------- stitching layers
def test_sinkhorn_gives_doubly_stochastic_and_fixes_permutations():
    A = torch.rand(7, 7, generator=torch.Generator().manual_seed(0)) + 0.01
    B = sinkhorn(A, 200)
    assert torch.allclose(B.sum(0), torch.ones(7), atol=1e-5)
    assert torch.allclose(B.sum(1), torch.ones(7), atol=1e-5)
    P = torch.eye(5)[[3, 0, 4, 1, 2]]
    assert torch.allclose(sinkhorn(P, 16), P)


def test_group_stitch_rounds_to_monomial_matrix():
    c = StitchConstraint("monomial", -1.0, 1.0, (-1.0, 1.0))
    s = Stitch("group", 4, c)
    perm = [2, 0, 3, 1]
    with torch.no_grad():
        s.P.copy_(0.7 * torch.eye(4)[perm] + 0.3 / 4)
        s.lam.copy_(torch.tensor([0.4, -0.2, 2.0, -3.0]))
    s.project(16)
    assert float(s.lam.detach().min()) >= -1 and float(s.lam.detach().max()) <= 1
    s.round()
    M = s.matrix().detach()
    expected = torch.eye(4)[perm] * torch.tensor([1.0, -1.0, 1.0, -1.0])[None, :]
    assert torch.equal(M, expected)


def test_low_rank_stitch_has_the_rank():
    s = Stitch("rank2", 6)
    assert int(torch.linalg.matrix_rank(s.matrix().detach())) == 2
    with pytest.raises(ValueError, match="rank"):
        Stitch("rank9", 6)


def test_stitch_constraints_follow_the_engine():
    from torch_bridge.experiments import stitch_constraint

    relu = stitch_constraint("relu")  # P D, D > 0: lambda >= 0, not rounded
    assert (relu.kind, relu.lo, relu.values) == ("monomial", 0.0, None)
    tanh = stitch_constraint("tanh")  # odd: signed permutations
    assert tanh.kind == "monomial" and tanh.values == (-1.0, 1.0)
    assert stitch_constraint("identity").kind == "full"


# --------------------------------------------------------------------------- training and zoo
def test_zoo_trains_once_and_reuses(tmp_path):
    d = load_dataset("digits").subsample(200, 50)
    spec = ModelSpec("digits_tiny", "myrtle", 2, "relu", True, 0, TrainConfig(epochs=1, batch_size=64))
    m1, r1 = get_model(spec, d, zoo_dir=tmp_path, device=torch.device("cpu"), progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    # no temporary, partial or lock file left behind
    assert files == [f"{spec.key}.pt", f"{spec.key}.sha256", "training.log"]
    m2, r2 = get_model(spec, d, zoo_dir=tmp_path, device=torch.device("cpu"), progress=False)
    assert r1 == r2
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


class _Interrupt(Exception):
    pass


def test_interrupted_training_resumes_from_the_last_epoch(tmp_path):
    d = load_dataset("digits").subsample(128, 20)
    cfg = TrainConfig(epochs=3, batch_size=64, holdout=0.25)
    steps = -(-96 // 64)  # 96 fitting images per epoch
    ckpt = tmp_path / "partial.pt"

    def counting_model(limit=None):
        torch.manual_seed(0)
        net = models.myrtle(width=2, in_channels=1)
        calls = {"train": 0}

        def hook(mod, args):
            if mod.training:
                calls["train"] += 1
                if limit is not None and calls["train"] > limit:
                    raise _Interrupt
        net.register_forward_pre_hook(hook)
        return net, calls

    net, calls = counting_model(limit=steps + 1)  # dies in the middle of epoch 2
    with pytest.raises(_Interrupt):
        train_model(net, d, cfg, seed=0, device=torch.device("cpu"), checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    net2, calls2 = counting_model()
    info = train_model(net2, d, cfg, seed=0, device=torch.device("cpu"), checkpoint=ckpt, progress=False)
    assert calls2["train"] == 2 * steps  # epochs 2 and 3 only
    assert info["epochs"] == 3 and not ckpt.exists()


# --------------------------------------------------------------------------- configuration and CLI
def test_presets_and_overrides():
    cfg = make_config("stitch", "cpu", width=4, epochs=2)
    assert cfg.dataset == "cifar10" and cfg.width == 4 and cfg.train.epochs == 2
    with pytest.raises(ValueError, match="preset"):
        make_config("stitch", "huge")
    with pytest.raises(ValueError, match="models"):
        make_config("stitch", "smoke", models=1)


@pytest.mark.parametrize("argv, needle", [
    (["stitch", "--activation", "rleu"], "relu"),
    (["bogus"], "invalid choice"),
    (["sanity", "--dataset", "cifar10"], "--data-dir"),
    (["sanity", "--width", "0"], "width"),
    (["stitch", "--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "data_dir"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    code = main(argv + ["--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_tanh_group_stitch_ends_as_a_signed_permutation(tmp_path):
    """For tanh the engine derives S = {1, -1}: the trained and rounded group stitch must be a
    signed permutation matrix (one entry +-1 per row and column, zeros elsewhere)."""
    from torch_bridge.experiments import stitch_constraint
    from torch_bridge.experiments._setup import setup
    from torch_bridge.experiments._stitch import Stitch, train_stitch

    cfg = make_config("stitch", "smoke", activation="tanh", n_train=200, n_test=50, bn_images=100,
                      cache_dir=str(tmp_path), progress=False)
    ctx = setup(cfg)
    torch.manual_seed(0)
    a, b = (models.myrtle(width=3, activation="tanh", in_channels=1).eval() for _ in range(2))
    for m in (a, b):
        for p in m.parameters():
            p.requires_grad_(False)
    site = find_sites(a, torch.zeros(2, 1, 8, 8))[1]
    seen = {}
    original = Stitch.round

    def spy(self):
        original(self)
        seen["M"] = self.matrix().detach()

    Stitch.round = spy
    try:
        acc, info = train_stitch(a, b, site, "group", ctx, seed=0, constraint=stitch_constraint("tanh"))
    finally:
        Stitch.round = original
    M = seen["M"]
    assert set(M.abs().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(M.abs().sum(0), torch.ones(site.channels))
    assert torch.equal(M.abs().sum(1), torch.ones(site.channels))
    assert 0 <= acc <= 1 and info["steps"] > 0


# --------------------------------------------------------------------------- device paths (testable on CPU)
def test_resume_brings_the_generator_state_back_to_a_cpu_byte_tensor(tmp_path):
    """``torch.load(map_location=device)`` moves the saved generator state along with the
    weights (to the GPU on CUDA); a CPU generator accepts only a CPU ByteTensor, so the state
    is converted back. On CPU: a state of another dtype stands in for one on another device."""
    from torch_bridge.experiments._train import restore_generator

    gen = torch.Generator().manual_seed(7)
    torch.rand(3, generator=gen)
    state = gen.get_state()
    expected = torch.rand(5, generator=gen)
    fresh = torch.Generator()
    with pytest.raises((TypeError, RuntimeError)):
        fresh.set_state(state.to(torch.int64))  # what a moved state does to set_state directly
    restore_generator(fresh, state.to(torch.int64))
    assert torch.equal(torch.rand(5, generator=fresh), expected)


def test_streamed_layer_features_equal_the_all_layers_pass_on_the_model_device():
    from torch_bridge.experiments._data import Normalizer
    from torch_bridge.experiments._sweep import layer_features, site_features

    d = load_dataset("digits").subsample(100, 40)
    torch.manual_seed(0)
    net = models.myrtle(width=3, in_channels=1).eval()
    norm = Normalizer(d, torch.device("cpu"))
    sites = find_sites(net, norm(torch.from_numpy(d.x_test[:2])))
    every = site_features(net, sites, d.x_test, d.y_test, norm, batch_size=16)
    for k, s in enumerate(sites):
        one = layer_features(net, s, d.x_test, d.y_test, norm, batch_size=16)
        assert one.device == norm.device and torch.equal(one, every[k])


def test_device_strings():
    from torch_bridge.experiments import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="cuda:N"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        for dev in ("cuda", "cuda:0", "cuda:3"):
            with pytest.raises(ValueError, match="no CUDA device"):
                resolve_device(dev)


def test_exp_activation_is_flagged(tmp_path):
    """``--activation exp`` trains degenerate models: the results carry a warning (near chance
    or every penalty equal) instead of a table of penalties presented as findings."""
    from torch_bridge.experiments import run_experiment

    cfg = make_config("stitch", "smoke", activation="exp", width=2, epochs=1, n_train=300, n_test=100,
                      methods=("full",), bn_images=100, out=str(tmp_path / "o"), cache_dir=str(tmp_path / "c"),
                      progress=False)
    res = run_experiment(cfg, write=False)
    assert any("near chance" in w or "every penalty is equal" in w for w in res["warnings"])


def test_every_experiment_comes_from_the_registry():
    from torch_bridge.experiments import _config, _registry

    assert _registry.names() == _config.EXPERIMENTS
    for name in _registry.names():
        kind = _registry.get(name)
        assert kind.name == name and kind.job_kind and callable(kind.plan) and callable(kind.merge)
