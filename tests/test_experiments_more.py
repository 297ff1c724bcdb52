"""The experiments of appendix D (issue 12 part 4), end to end with ``--preset smoke`` on the
embedded digits (and the shared CIFAR-10, marked ``cifar``): ResNet stitching and similarity
with the inside-residual-block sites marked, the LeakyReLU slope sweep, l1 stitching against
sparsity (eq. D.1), alpha cross-validation, SoftSort stitching and transformer stitching.

Expected values are derived by hand: which ResNet sites are inside a residual block (from the
block diagrams, figs. 27b and 28b), the group of LeakyReLU per slope (table 1 of the paper:
slope 1 is linear, so GL_n; slope -1 is |x|, whose scalings include -1; every other slope
gives G_ReLU), the sparsity of a rounded group stitch (1 - 1/C, appendix D.6), and the group
of a pre-LN transformer's residual stream (+-P: layer norms are odd but pass no per-unit scaling).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch_bridge import models  # noqa: E402
from torch_bridge.experiments import find_sites, make_config, run_experiment  # noqa: E402
from torch_bridge.experiments._activation import activation_text, parse_activation  # noqa: E402
from torch_bridge.experiments._appendix_d import cv_split  # noqa: E402
from torch_bridge.experiments._cli import main  # noqa: E402
from torch_bridge.experiments._stitch import Stitch, sparsity, stitch_constraint  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
RESNET_LAYERS = ("act1", "layers.0.0.act1", "layers.0.0.act2")


@pytest.fixture(scope="module")
def cache(shared_cache):
    # one data cache and zoo for the run (tests/conftest.py): the similarity sweep reuses the
    # models the stitching run trained, and CIFAR-10 is decoded once
    return shared_cache


def _cfg(experiment, tmp_path, cache, name=None, **kw):
    return make_config(experiment, "smoke", out=str(tmp_path / (name or experiment)), cache_dir=str(cache),
                       progress=False, **kw)


def _written(res, out):
    """results.json, the CSV (with units in its header) and the PNG figures agree with ``res``."""
    doc = json.loads((Path(out) / "results.json").read_text())
    assert doc["rows"] and len(doc["rows"]) == len(res["rows"])
    with open(Path(out) / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res["rows"])
    assert "penalty [accuracy points]" in rows[0]
    assert res["figures"]
    for fig in res["figures"]:
        assert Path(fig).read_bytes()[:4] == b"\x89PNG"
    return doc


# sites inside residual blocks (remark 3.6) ------------------------------------------------

@pytest.mark.parametrize("arch,blocks", [("resnet20", 9), ("resnet18", 8)])
def test_inside_residual_sites_of_resnets(arch, blocks):
    net = getattr(models, arch)(width=4, in_channels=1)
    sites = find_sites(net, torch.zeros(2, 1, 8, 8))
    # the stem activation, then act1 (inside: before the addition) and act2 (after it) per block
    assert len(sites) == 1 + 2 * blocks
    inside = {s.name for s in sites if s.inside_residual}
    assert inside == {s.name for s in sites if s.name.endswith(".act1")}
    assert len(inside) == blocks and not sites[0].inside_residual
    assert not any(s.inside_residual for s in find_sites(models.myrtle(width=4, in_channels=1),
                                                          torch.zeros(2, 1, 8, 8)))


@pytest.mark.parametrize("site_name", ["layers.0.1.act1", "layers.0.1.act2"])
def test_stitched_resnet_is_eq_e54(site_name):
    """The stitched network, composed by hand from the two models' modules: every layer up to
    the site is the front model's, the shortcut of the site's block included (eq. E.54)."""
    from torch_bridge.experiments._stitch import _Stitched

    torch.manual_seed(0)
    front, back = (models.randomize_batchnorm(models.resnet20(width=4, in_channels=1), seed=s) for s in (1, 2))
    x = torch.randn(5, 1, 8, 8)
    site = next(s for s in find_sites(front, x) if s.name == site_name)
    assert site.inside_residual == site_name.endswith("act1")
    stitch = Stitch("full", site.channels)
    with torch.no_grad():
        stitch.weight.copy_(torch.eye(site.channels))
        with _Stitched(front, back, site, stitch) as stitched:
            got = stitched(x)
        z = front.layers[0][0](front.act1(front.bn1(front.conv1(x))))  # front up to block 0.1
        bf, bb = front.layers[0][1], back.layers[0][1]
        if site.inside_residual:
            h = bf.act1(bf.bn1(bf.conv1(z)))
            out = bb.act2(bb.bn2(bb.conv2(h)) + bb.shortcut(z))  # back's tail of the block, front's shortcut
        else:
            out = bf(z)
        out = back.layers[2](back.layers[1](back.layers[0][2](out)))
        want = back.fc(back.flatten(back.pool(out)))
    torch.testing.assert_close(got, want)


def test_resnet20_stitch_marks_inside_residual_layers(tmp_path, cache):
    cfg = _cfg("stitch", tmp_path, cache, arch="resnet20", width=4, layers=RESNET_LAYERS,
               methods=("full", "group"))
    res = run_experiment(cfg)
    _written(res, cfg.out)
    assert [s["layer"] for s in res["sites"]] == list(RESNET_LAYERS)
    assert [s["inside_residual"] for s in res["sites"]] == [False, True, False]
    for r in res["rows"]:
        assert r["inside_residual"] == (r["layer"] == "layers.0.0.act1")
        assert r["penalty"] == pytest.approx(r["acc_models_mean"] - r["acc_stitched"])
    assert res["accuracy"]["test_acc_mean"] > 30  # accuracy points; chance is 10


def test_resnet18_similarity_marks_inside_residual_layers(tmp_path, cache):
    cfg = _cfg("similarity", tmp_path, cache, arch="resnet18", width=4, layers=RESNET_LAYERS,
               measures=("g_cka", "linear_cka"), similarity_images=100)
    res = run_experiment(cfg)
    assert {r["layer"]: r["inside_residual"] for r in res["rows"]} == dict(zip(RESNET_LAYERS, (False, True, False)))
    assert all(-1e-6 <= r["value"] <= 1 + 1e-6 for r in res["rows"])
    assert any(p.endswith("cka_matrices.png") for p in res["figures"])


def test_unknown_layer_is_bad_input(tmp_path, cache, capsys):
    code = main(["stitch", "--layers", "act9", "--arch", "resnet20", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(cache), "--no-progress"])
    assert code == 2
    assert "act9" in capsys.readouterr().err


# activations with parameter values -------------------------------------------------------

def test_activation_text_round_trips_and_refuses_expressions():
    for text in ("relu", "leaky_relu(negative_slope=-1.0)", "leaky_relu(negative_slope=1e-4)"):
        name, params = parse_activation(text)
        assert parse_activation(activation_text(name, params)) == (name, params)
    for bad in ("leaky_relu(negative_slope=__import__('os'))", "leaky_relu(1)", "x*tanh(x)", "relu(a=1, a=2)"):
        with pytest.raises(ValueError, match="Argument 'activation'"):
            parse_activation(bad)
    with pytest.raises(ValueError, match="Argument 'activation'"):
        make_config("stitch", activation="leaky_relu(negative_slope=x)")


def test_job_keys_of_earlier_runs_are_unchanged_by_the_new_fields():
    basis = make_config("stitch").job_basis()
    for f in ("layers", "slopes", "l1_strengths", "cv_alphas", "cv_fraction", "cv_epochs", "softsort_tau"):
        assert f not in basis
    assert make_config("stitch", layers=("2",)).job_basis()["layers"] == ("2",)


# the LeakyReLU slope sweep (table 3, figure 8) ----------------------------------------------

def test_leaky_sweep_smoke_digits(tmp_path, cache):
    cfg = _cfg("leaky_sweep", tmp_path, cache, layers=("2", "13"))
    assert cfg.slopes == (-1.0, 0.01, 1.0) and cfg.methods == ("full", "group")  # the sweep's smoke preset
    res = run_experiment(cfg)
    _written(res, cfg.out)
    groups = {g["slope"]: g for g in res["groups"]}
    # table 1 by hand: slope 1 is the identity (GL_n); slope -1 is |x| (scalings include -1, and
    # phi(-1) = |-1| = 1, so the stitch itself is P D with D > 0); other slopes give G_ReLU
    assert groups[1.0]["kind"] == "general_linear" and groups[1.0]["stitch"]["kind"] == "full"
    assert groups[-1.0]["kind"] == "monomial" and groups[-1.0]["sign_flips"]
    assert groups[0.01]["kind"] == "monomial" and not groups[0.01]["sign_flips"]
    for g in (groups[-1.0], groups[0.01]):
        assert g["stitch"]["kind"] == "monomial" and g["stitch"]["lo"] == 0.0
    assert {(r["slope"], r["method"], r["layer"]) for r in res["rows"]} == {
        (s, m, l) for s in (-1.0, 0.01, 1.0) for m in ("full", "group") for l in ("2", "13")}
    table3 = {a["slope"]: a for a in res["accuracy_by_slope"]}
    assert set(table3) == {-1.0, 0.01, 1.0} and all(a["n"] == 2 for a in table3.values())
    # each slope trains its own models: six zoo models, keys naming the slope
    assert len({m["key"] for m in res["models"]}) == 6
    assert all("negative_slope" in m["key"] for m in res["models"])


# l1 stitching against sparsity (D.6) and alpha cross-validation (D.5) ------------------------

def test_sparsity_of_eq_d1_by_hand():
    w = torch.tensor([[1.0, 0.0005], [-0.002, 0.0]])
    assert sparsity(w, 1e-3) == 0.5  # |0.0005| and |0| are <= 1e-3
    assert sparsity(torch.eye(8)[torch.randperm(8)] * 3.0, 1e-3) == 1 - 1 / 8


def test_l1_sparsity_smoke_digits(tmp_path, cache):
    cfg = _cfg("l1_sparsity", tmp_path, cache, layers=("2", "9"))
    res = run_experiment(cfg)
    _written(res, cfg.out)
    assert res["units"]["sparsity"].startswith("fraction")
    series = {r["series"] for r in res["rows"]}
    assert series == {"l1 0.001", "l1 0.1", "group"}
    for r in res["rows"]:
        assert 0.0 <= r["sparsity"] <= 1.0
        if r["method"] == "group":  # a rounded P D: exactly one non-zero entry per row
            assert r["sparsity"] == pytest.approx(1 - 1 / r["channels"])
    for s in res["summary"]:
        assert "sparsity_mean" in s


def test_cv_split_is_a_partition():
    tr, va = cv_split(1000, 0.2, 3)
    assert len(va) == 200 and len(tr) == 800
    assert not set(tr) & set(va) and set(tr) | set(va) == set(range(1000))


def test_alpha_cv_smoke_digits(tmp_path, cache):
    cfg = _cfg("alpha_cv", tmp_path, cache, layers=("5",))
    res = run_experiment(cfg)
    _written(res, cfg.out)
    assert {r["alpha"] for r in res["rows"]} == {0.01, 1.0}
    for (pair, layer) in {(r["pair"], r["layer"]) for r in res["rows"]}:
        rows = [r for r in res["rows"] if r["pair"] == pair and r["layer"] == layer]
        chosen = [r for r in rows if r["selected"]]
        assert len(chosen) == 1 and chosen[0]["acc_val"] == max(r["acc_val"] for r in rows)
    cv = [s for s in res["summary"] if s["series"] == "cross-validated alpha"]
    assert len(cv) == 1 and cv[0]["mean"] == pytest.approx(
        next(r["penalty"] for r in res["rows"] if r["selected"]))


def test_alpha_cv_refuses_a_group_without_permutations(tmp_path, cache):
    with pytest.raises(ValueError, match="not monomial"):
        _cfg("alpha_cv", tmp_path, cache, activation="identity")


# SoftSort stitching (D.2.2) ---------------------------------------------------------------

def test_softsort_relaxation_and_rounding():
    c = 6
    st = Stitch("softsort", c, stitch_constraint("relu"), generator=torch.Generator().manual_seed(0))
    assert st.tau == pytest.approx(1 / c)  # the paper's tau = 1 / n_l
    P = st.softsort_p().detach()
    assert torch.allclose(P.sum(1), torch.ones(c))  # softmax over rows
    # row k peaks at the k-th largest entry of s: the relaxation of argsort (descending)
    order = torch.argsort(st.s.detach(), descending=True)
    assert torch.equal(P.argmax(1), order)
    with torch.no_grad():
        st.lam.copy_(torch.log(torch.arange(1.0, c + 1)))  # D = diag(e^lambda) = diag(1..c)
    st.round()
    expected = torch.zeros(c, c)
    expected[torch.arange(c), order] = 1.0
    assert torch.allclose(st.matrix().detach(), expected * torch.arange(1.0, c + 1)[None, :])


def test_softsort_stitch_smoke_digits(tmp_path, cache):
    cfg = _cfg("stitch", tmp_path, cache, name="softsort", methods=("softsort", "group"), layers=("5",))
    res = run_experiment(cfg)
    _written(res, cfg.out)
    assert {r["method"] for r in res["rows"]} == {"softsort", "group"}
    for r in res["rows"]:
        assert r["sparsity"] == pytest.approx(1 - 1 / r["channels"])  # both round to P D
        assert 0 <= r["acc_stitched"] <= 100


# transformer stitching after each block (D.4) --------------------------------------------

def test_vit_sites_are_the_residual_stream_after_each_block():
    from torch_bridge.experiments._sites import channel_map

    net = models.vit(width=16, depth=3, in_channels=1)
    sites = find_sites(net, torch.zeros(2, 1, 8, 8), modules=net.residual_sites)
    assert [s.name for s in sites] == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(s.channels == 16 and s.shape == (16, 16) and s.channel_axis == -1 for s in sites)  # 16 tokens
    m, x = torch.randn(16, 16), torch.randn(2, 16, 16)
    torch.testing.assert_close(channel_map(m, x, -1), torch.einsum("oc,ntc->nto", m, x))


def test_transformer_stitch_smoke_digits(tmp_path, cache):
    cfg = _cfg("transformer_stitch", tmp_path, cache)
    assert cfg.arch == "vit" and cfg.activation == "gelu"
    res = run_experiment(cfg)
    _written(res, cfg.out)
    # the residual stream of a pre-LN transformer, by hand: LN(P x) = P LN(x) and LN(-x) = -LN(x),
    # but no per-unit scaling passes the layer norms: {c P : c = +-1}, one sign for all units
    g = res["group"]
    assert g["kind"] == "monomial" and g["shared"] and tuple(g["values"]) == (-1.0, 1.0)
    assert "ScaledPermutation" in g["description"]
    assert {r["layer"] for r in res["rows"]} == {"blocks.0", "blocks.1"}
    assert {r["method"] for r in res["rows"]} == {"full", "rank1", "group"}
    for r in res["rows"]:
        if r["method"] == "group":  # +-P: one non-zero entry per row
            assert r["sparsity"] == pytest.approx(1 - 1 / r["channels"])
    assert res["accuracy"]["test_acc_mean"] > 50  # accuracy points; chance is 10


def test_transformer_stitch_needs_a_transformer(tmp_path, cache):
    with pytest.raises(ValueError, match="'vit'"):
        _cfg("transformer_stitch", tmp_path, cache, arch="myrtle")
    for experiment in ("similarity", "sanity", "l1_sparsity", "alpha_cv"):  # they act on activation sites
        with pytest.raises(ValueError, match="'vit'"):
            _cfg(experiment, tmp_path, cache, arch="vit")


# the shared CIFAR-10 ---------------------------------------------------------------------

@pytest.mark.cifar
@pytest.mark.parametrize("experiment,extra", [
    ("stitch", dict(arch="resnet20", layers=RESNET_LAYERS, methods=("full", "group", "softsort"))),
    ("leaky_sweep", dict(layers=("2",), slopes=(-1.0, 1.0))),
    ("l1_sparsity", dict(layers=("2",))),
    ("alpha_cv", dict(layers=("2",))),
    ("transformer_stitch", dict(layers=("blocks.1",), width=16, epochs=2)),
])
def test_smoke_cifar10(experiment, extra, tmp_path, cache):
    if not CIFAR.exists():
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR}")
    cfg = _cfg(experiment, tmp_path, cache, dataset="cifar10", data_dir=str(CIFAR), **extra)
    assert cfg.n_train == 600  # the smoke preset subsamples CIFAR-10
    res = run_experiment(cfg)
    _written(res, cfg.out)
    if experiment == "stitch":
        assert any(s["inside_residual"] for s in res["sites"])
    # smoke-sized models on CIFAR-10 are near chance: said in the results
    low = [m for m in res["models"] if m["test_acc"] < 20]
    assert bool(low) == any("near chance" in w for w in res["warnings"])
