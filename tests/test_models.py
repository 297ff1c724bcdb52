"""The reference networks of the paper's appendix D (figures 26-28)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx
from torch import nn

import activations
from torch_bridge.models import CatalogueActivation, make_activation, mlp, myrtle, resnet18, resnet20




def n_params(net):
    return sum(p.numel() for p in net.parameters())


# Parameter counts printed by torchinfo in figs. 26a, 26b, 27a, 27b, 28a, 28b of the paper.
@pytest.mark.parametrize("build, expected", [
    (lambda: myrtle(), 1_558_026),
    (lambda: myrtle(batch_norm=False), 1_555_200),
    (lambda: resnet20(), 269_722),
    (lambda: resnet18(), 11_173_962),
])
def test_parameter_counts_match_the_figures(build, expected):
    assert n_params(build()) == expected


def test_first_basic_blocks_match_the_figures():
    # fig. 27b: 4,672 parameters in ResNet20's first block; fig. 28b: 73,984 in ResNet18's
    assert n_params(resnet20().layers[0][0]) == 4_672
    assert n_params(resnet18().layers[0][0]) == 73_984
    # the downsampling blocks of fig. 27a (option A shortcut: no parameters) and 28a
    assert n_params(resnet20().layers[1][0]) == 13_952
    assert n_params(resnet18().layers[1][0]) == 230_144


def test_myrtle_layer_sequence_follows_fig_26a():
    kinds = [type(m).__name__ for m in myrtle()]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
                     "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
                     "AdaptiveMaxPool2d", "Flatten", "Linear"]


@pytest.mark.parametrize("build", [
    lambda **k: myrtle(width=4, **k), lambda **k: myrtle(width=4, batch_norm=False, **k),
    lambda **k: resnet20(width=4, **k), lambda **k: resnet18(width=4, **k),
])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 8, 8)])
def test_models_run_on_cifar_and_digits_shapes_and_trace(build, shape):
    net = build(in_channels=shape[1], num_classes=7)
    x = torch.randn(shape)
    assert net(x).shape == (2, 7)
    gm = fx.symbolic_trace(net)
    torch.testing.assert_close(gm(x), net(x))


def test_width_float_multiplies_int_sets_base_channels():
    assert myrtle(width=0.5)[0].out_channels == 32
    assert myrtle(width=5)[0].out_channels == 5
    assert resnet20(width=2.0).conv1.out_channels == 32
    assert resnet18(width=3).layers[3][0].conv1.out_channels == 24
    with pytest.raises(ValueError, match="width"):
        myrtle(width=0)
    with pytest.raises(TypeError, match="width"):
        resnet20(width="wide")


def test_mlp_structure_and_errors():
    net = mlp([64, 32, 16, 10], activation="tanh")
    assert [type(m).__name__ for m in net] == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    with pytest.raises(ValueError, match="sizes"):
        mlp([5])


def test_activation_forms():
    assert isinstance(make_activation("relu"), nn.ReLU)
    lr = make_activation(("leaky_relu", {"negative_slope": 0.3}))
    assert isinstance(lr, nn.LeakyReLU) and lr.negative_slope == 0.3
    assert make_activation("gelu_tanh").approximate == "tanh"
    assert isinstance(make_activation(lambda: nn.SiLU()), nn.SiLU)
    with pytest.raises(TypeError, match="activation"):
        make_activation(nn.ReLU())
    with pytest.raises(ValueError, match="did you mean"):
        make_activation("rleu")
    # a different module per layer
    net = myrtle(width=2, activation="tanh")
    acts = [m for m in net if isinstance(m, nn.Tanh)]
    assert len({id(a) for a in acts}) == 4


@pytest.mark.parametrize("name", activations.names())
def test_every_catalogue_activation_matches_its_numpy_version(name):
    """Torch modules built for catalogue names agree with the catalogue's own numpy code."""
    entry = activations.get(name)
    module = make_activation(name)
    x = np.linspace(-4, 4, 81)
    with torch.no_grad():
        got = module(torch.as_tensor(x, dtype=torch.float64)).numpy()
    want = entry(x, **entry.defaults) if entry.parameters else entry(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_catalogue_activation_from_formula_of_registered_entry():
    activations.register("test_models_cubic_sin", "x**3 + sin(x)", replace=True)
    try:
        m = CatalogueActivation("test_models_cubic_sin")
        x = torch.linspace(-2, 2, 9, dtype=torch.float64)
        torch.testing.assert_close(m(x), x**3 + torch.sin(x))
    finally:
        activations.unregister("test_models_cubic_sin")
