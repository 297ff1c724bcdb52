"""`groupcalc barrier` and `groupcalc merge` end to end on checkpoints of our reference models:
two digits MLPs trained a few steps here, and two tiny ResNet20s on the shared CIFAR-10."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torch_bridge.experiments import TrainConfig, evaluate, load_dataset, train_model  # noqa: E402
from torch_bridge.experiments._data import Normalizer  # noqa: E402
from torch_bridge.merge._cli import barrier_main, merge_main  # noqa: E402
from torch_bridge.models import mlp, resnet20  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
ACCURACY: list = []  # test accuracy of the checkpoints, by the experiments' own evaluation
MLP_KW = json.dumps({"sizes": [64, 32, 32, 10], "activation": "tanh"})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("ckpt")
    data = load_dataset("digits")
    paths, accs = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = mlp([64, 32, 32, 10], activation="tanh")
        train_model(net, data, TrainConfig(epochs=3, batch_size=32), seed=seed, device=torch.device("cpu"),
                    progress=False)
        p = folder / f"mlp{seed}.pt"
        torch.save(net.state_dict(), p)
        paths.append(str(p))
        accs.append(evaluate(net, data.x_test, data.y_test, Normalizer(data, torch.device("cpu"))))
    ACCURACY[:] = accs
    return paths


def _run(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_barrier_json_and_plot(checkpoints, tmp_path, capsys):
    png = tmp_path / "curve.png"
    code, out, err = _run(barrier_main, [*checkpoints, "--model", "mlp", "--model-kwargs", MLP_KW, "--align", "weights",
                                         "--alphas", "5", "--json", "--plot", str(png)], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert len(d["loss"]) == len(d["accuracy"]) == 5
    assert isinstance(d["barrier"], float) and d["barrier"] >= 0
    assert d["distance_after"] < d["distance_before"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the endpoints are the checkpoints (model b after alignment computes the same function)
    assert d["accuracy"][0] == pytest.approx(ACCURACY[0], abs=1e-9)
    assert d["accuracy"][-1] == pytest.approx(ACCURACY[1], abs=1e-9)
    assert min(ACCURACY) > 0.3  # trained: well above chance (0.1)


def test_barrier_text_with_repair(checkpoints, capsys):
    code, out, err = _run(barrier_main, [*checkpoints, "--model", "mlp", "--model-kwargs", MLP_KW, "--repair",
                                         "--alphas", "3"], capsys)
    assert code == 0, err
    assert "loss barrier" in out and "REPAIR" in out


def test_barrier_activation_matching_warnings_are_lines(checkpoints, capsys):
    code, out, err = _run(barrier_main, [*checkpoints, "--model", "mlp", "--model-kwargs", MLP_KW, "--align",
                                         "activations", "--alphas", "3", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["align"] == "activations" and d["distance_after"] is not None
    assert d["feature_distance_after"] < d["feature_distance_before"]
    assert all(ln.startswith("groupcalc barrier: warning:") for ln in err.strip().splitlines() if ln.strip())


def test_merge_writes_a_weights_only_checkpoint(checkpoints, tmp_path, capsys):
    out_file = tmp_path / "merged.pt"
    code, out, err = _run(merge_main, [*checkpoints, "--model", "mlp", "--model-kwargs", MLP_KW, "--out", str(out_file),
                                       "--iterations", "2", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    sd = torch.load(out_file, weights_only=True)
    net = mlp([64, 32, 32, 10], activation="tanh")
    net.load_state_dict(sd)  # fits the architecture
    a = torch.load(checkpoints[0], weights_only=True)
    assert not torch.equal(sd["1.weight"], a["1.weight"])
    assert 0 <= d["merged_accuracy"] <= 1 and len(d["accuracy"]) == 2


def test_user_factory_from_the_current_directory(checkpoints, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models_h2a.py").write_text(
        "from torch_bridge.models import mlp\n\n"
        "def make_net(width=32):\n    return mlp([64, width, width, 10], activation='tanh')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    code, out, err = _run(barrier_main, [*checkpoints, "--model", "my_models_h2a:make_net", "--alphas", "2", "--json"],
                          capsys)
    sys.modules.pop("my_models_h2a", None)
    assert code == 0, err
    assert json.loads(out)["barrier"] == 0.0  # two points: the endpoints only


def _bad(tmp_path, checkpoints):
    other = tmp_path / "other.pt"
    torch.save(mlp([64, 16, 10]).state_dict(), other)
    narrow = tmp_path / "narrow.pt"
    torch.save(mlp([48, 16, 10]).state_dict(), narrow)
    keys = tmp_path / "keys.pt"
    torch.save({"w": torch.zeros(3)}, keys)
    code_ckpt = tmp_path / "module.pt"
    torch.save(mlp([64, 32, 32, 10]), code_ckpt)  # a pickled module: weights_only refuses it
    a = checkpoints[0]
    base = ["--model", "mlp", "--model-kwargs", MLP_KW]
    return {
        "missing file": [a, str(tmp_path / "nope.pt"), *base],
        "wrong shapes": [a, str(other), "--model", "mlp", "--model-kwargs", MLP_KW],
        "wrong keys": [a, str(keys), *base],
        "pickled code": [a, str(code_ckpt), *base],
        "bad factory": [a, a, "--model", "no_such_module_h2a:make"],
        "bad attribute": [a, a, "--model", "torch_bridge.models:mpl"],
        "bad name": [a, a, "--model", "resnet21"],
        "bad kwargs": [a, a, "--model", "mlp", "--model-kwargs", "{sizes"],
        "unknown dataset": [a, a, *base, "--dataset", "imagenet"],
        "cifar without dir": [a, a, *base, "--dataset", "cifar10"],
        "data dir with digits": [a, a, *base, "--dataset", "digits", "--data-dir", str(tmp_path)],
        "too few alphas": [a, a, *base, "--alphas", "1"],
        "empty cifar dir": [a, a, *base, "--data-dir", str(tmp_path)],  # --data-dir implies cifar10
        "wrong input size": [str(narrow), str(narrow), "--model", "mlp", "--model-kwargs",
                             json.dumps({"sizes": [48, 16, 10]})],
    }


@pytest.mark.parametrize("case", ["missing file", "wrong shapes", "wrong keys", "pickled code", "bad factory",
                                  "bad attribute", "bad name", "bad kwargs", "unknown dataset", "cifar without dir",
                                  "data dir with digits", "too few alphas", "empty cifar dir", "wrong input size"])
def test_bad_input_is_one_line_and_exit_2(case, checkpoints, tmp_path, capsys):
    argv = _bad(tmp_path, checkpoints)[case]
    code, out, err = _run(barrier_main, argv, capsys)
    assert code == 2, (case, err)
    # one error line, last (the CIFAR-10 decoder may have drawn a progress bar before it)
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "decoding CIFAR-10" not in ln]
    assert len(lines) == 1 and lines[0].startswith("groupcalc barrier: error:"), err
    assert "Traceback" not in err


def test_merge_bad_input(checkpoints, tmp_path, capsys):
    code, _, err = _run(merge_main, [checkpoints[0], "--model", "mlp", "--model-kwargs", MLP_KW, "--out",
                                     str(tmp_path / "m.pt")], capsys)
    assert code == 2 and "two" in err
    code, _, err = _run(merge_main, [*checkpoints, "--model", "mlp", "--model-kwargs", MLP_KW, "--out",
                                     str(tmp_path / "no" / "m.pt")], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_commands_are_registered():
    import tomllib

    from torch_bridge import cli

    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["groupcalc.commands"]
    assert eps["barrier"] == "torch_bridge.cli:barrier_command" and eps["merge"] == "torch_bridge.cli:merge_command"
    assert cli.barrier_command(["--help"]) == 0


@pytest.mark.cifar
def test_barrier_and_merge_on_cifar10(tmp_path, capsys, shared_cache):
    if not CIFAR.exists():
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR}")
    torch.set_num_threads(1)
    cache = shared_cache  # CIFAR-10 decoded once per test run
    data = load_dataset("cifar10", CIFAR, cache).subsample(n_train=300, n_test=100, seed=0)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = resnet20(width=2)
        train_model(net, data, TrainConfig(epochs=1, batch_size=50), seed=seed, device=torch.device("cpu"),
                    progress=False)
        p = tmp_path / f"r{seed}.pt"
        torch.save(net.state_dict(), p)
        paths.append(str(p))
    common = ["--model", "resnet20", "--model-kwargs", '{"width": 2}', "--dataset", "cifar10", "--data-dir", str(CIFAR),
              "--cache-dir", str(cache), "--samples", "100", "--stat-samples", "100"]
    code, out, err = _run(barrier_main, [*paths, *common, "--align", "weights", "--repair", "--alphas", "3", "--json"],
                          capsys)
    assert code == 0, err
    d = json.loads(out)
    assert len(d["loss"]) == 3 and d["barrier"] >= 0 and d["distance_after"] <= d["distance_before"]
    code, out, err = _run(merge_main, [*paths, *common, "--out", str(tmp_path / "m.pt"), "--iterations", "1",
                                       "--reestimate"], capsys)
    assert code == 0, err
    resnet20(width=2).load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
