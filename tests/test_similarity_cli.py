"""`groupcalc similarity` (torch_bridge.similarity._cli.main) and collect_features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from torch_bridge.similarity import collect_features, g_cka, g_procrustes
from torch_bridge.similarity._cli import main


@pytest.fixture()
def saved(tmp_path):
    rng = np.random.default_rng(0)
    X = np.maximum(rng.normal(size=(40, 4, 3, 3)), 0)
    Y = X[:, [2, 0, 3, 1]] * np.array([1.0, 2.0, 0.5, 3.0])[None, :, None, None]
    np.save(tmp_path / "a.npy", X)
    torch.save(torch.from_numpy(Y), tmp_path / "b.pt")
    torch.save({"features": torch.from_numpy(Y), "epoch": 3}, tmp_path / "d.pt")
    return tmp_path, X, Y


def test_json_output_has_every_measure(saved, capsys):
    d, X, Y = saved
    assert main([str(d / "a.npy"), str(d / "b.pt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shapes"] == {"a": [40, 4, 3, 3], "b": [40, 4, 3, 3]}
    assert set(out["measures"]) == {"g_cka", "g_procrustes", "laplace_cka", "linear_cka", "rbf_cka",
                                    "orthogonal_procrustes", "subspace_match"}
    assert out["measures"]["g_cka"] == pytest.approx(g_cka(X, Y, "relu"))
    assert out["measures"]["g_procrustes"] == pytest.approx(1.0, abs=1e-9)
    assert "permutations of channels and positive scalings" in out["invariance"]


def test_text_output_one_measure_and_dict_files(saved, capsys):
    d, X, Y = saved
    assert main([str(d / "a.npy"), str(d / "d.pt"), "--measure", "g_procrustes", "--group", "tanh"]) == 0
    text = capsys.readouterr().out
    value = float(text.strip().splitlines()[-1].split()[-1])
    assert value == pytest.approx(g_procrustes(X, Y, "tanh"), abs=1e-6)


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.npy", "b.pt"], "no such file"),
        (["a.npy", "b.pt", "--measure", "gcka"], "did you mean g_cka"),
        (["a.npy", "short.npy"], "N=40 samples but Y has N=5"),
        (["a.npy", "bad.txt"], "expected a .npy or .pt file"),
        (["a.npy", "b.pt", "--side", "middle"], "invalid choice"),
        (["a.npy", "nan.npy", "--measure", "g_cka"], "contains 1 NaN"),
    ],
)
def test_bad_input_exits_2_with_one_line(saved, capsys, args, message):
    d, X, _ = saved
    np.save(d / "short.npy", X[:5])
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    np.save(d / "nan.npy", nan)
    (d / "bad.txt").write_text("1 2 3")
    argv = [str(d / a) if a.endswith((".npy", ".pt", ".txt")) else a for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_ambiguous_dict_needs_key(saved, capsys, tmp_path):
    d, X, Y = saved
    torch.save({"x": torch.from_numpy(Y), "y": torch.from_numpy(Y)}, tmp_path / "two.pt")
    assert main([str(d / "a.npy"), str(tmp_path / "two.pt")]) == 2
    assert "--key" in capsys.readouterr().err
    assert main([str(d / "a.npy"), str(tmp_path / "two.pt"), "--key", "x", "--measure", "linear_cka"]) == 0


# ----------------------------------------------------------------------------- collect_features
class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def test_collect_features_matches_a_manual_forward():
    torch.manual_seed(0)
    model = Small().train()
    x = torch.randn(10, 3, 5, 5)
    feats = collect_features(model, x, ["act", "fc"], batch_size=3)
    with torch.no_grad():
        h = torch.relu(model.conv(x))
        out = model.fc(h.mean(dim=(2, 3)))
    assert list(feats) == ["act", "fc"]
    torch.testing.assert_close(feats["act"], h)
    torch.testing.assert_close(feats["fc"], out, rtol=1e-5, atol=1e-6)
    assert model.training  # mode restored
    assert not model.act._forward_hooks  # hooks removed


def test_collect_features_from_a_loader_and_by_type():
    torch.manual_seed(1)
    model = Small()
    data = torch.utils.data.TensorDataset(torch.randn(9, 3, 4, 4), torch.zeros(9))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    feats = collect_features(model, loader, nn.ReLU, dtype=torch.float64)
    assert list(feats) == ["act"] and feats["act"].shape == (9, 4, 4, 4) and feats["act"].dtype == torch.float64


def test_collect_features_errors():
    model = Small()
    with pytest.raises(ValueError, match="no module named 'acts'.*'act'"):
        collect_features(model, torch.randn(2, 3, 4, 4), ["acts"])
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Linear(3, 3), shared, nn.Linear(3, 3), shared)
    with pytest.raises(ValueError, match="more than once per forward"):
        collect_features(twice, torch.randn(4, 3), [shared])
    assert not shared._forward_hooks
