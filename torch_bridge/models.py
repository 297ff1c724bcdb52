"""Reference networks of the paper's appendix D (figures 26-28), built from plain ``torch.nn``
modules so that ``torch.fx`` can trace them.

* :func:`myrtle` -- the 5-layer Myrtle CNN, with or without batch norm (fig. 26).
* :func:`resnet20` -- the CIFAR ResNet20 (16, 32, 64 channels; parameter-free "option A"
  shortcuts that subsample and zero-pad channels, fig. 27).
* :func:`resnet18` -- the CIFAR-sized ResNet18 (64, 128, 256, 512 channels; 1x1 convolution
  + batch norm projection shortcuts, fig. 28).
* :func:`mlp` -- plain multilayer perceptrons.

With the default widths the parameter counts are those printed in the figures (1,558,026 and
1,555,200 for the Myrtle CNN with and without batch norm, 269,722 for ResNet20, 11,173,962 for
ResNet18). The last pooling is adaptive, so every model also runs on the 8x8x1 images of
scikit-learn's digits (``in_channels=1``); on 32x32 inputs it is the pooling of the paper.

``activation`` is a catalogue name (``"relu"``, ``"leaky_relu"``, ``"gaussian"``, ...), a pair
``(name, {parameter: value})``, or a callable returning a fresh ``nn.Module``. Names torch has
become the torch module (``nn.ReLU``, ``nn.LeakyReLU(negative_slope)``, ...); the others become
:class:`CatalogueActivation`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CatalogueActivation", "make_activation", "myrtle", "resnet20", "resnet18", "mlp", "BasicBlock", "ChannelPadShortcut",
           "randomize_batchnorm", "vit", "ViT", "ViTBlock"]


# Activation modules ---------------------------------------------------------------------------

def _torch_expr(name: str, params: dict) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A torch implementation of catalogue entry ``name`` (None when there is none here)."""
    p = params
    table = {
        "identity": lambda z: z,
        "relu": F.relu,
        "leaky_relu": lambda z: F.leaky_relu(z, p["negative_slope"]),
        "elu": lambda z: F.elu(z, p["alpha"]),
        "selu": F.selu,
        "celu": lambda z: F.celu(z, p["alpha"]),
        "gelu": F.gelu,
        "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"),
        "silu": F.silu,
        "swish": lambda z: z * torch.sigmoid(p["beta"] * z),
        "mish": F.mish,
        "softplus": lambda z: F.softplus(z, beta=p["beta"]),
        "sigmoid": torch.sigmoid,
        "logsigmoid": F.logsigmoid,
        "tanh": torch.tanh,
        "hardtanh": lambda z: F.hardtanh(z, p["min_val"], p["max_val"]),
        "relu6": F.relu6,
        "hardsigmoid": F.hardsigmoid,
        "hardswish": F.hardswish,
        "softsign": F.softsign,
        "tanhshrink": F.tanhshrink,
        "softshrink": lambda z: F.softshrink(z, p["lambd"]),
        "hardshrink": lambda z: F.hardshrink(z, p["lambd"]),
        "gaussian": lambda z: torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi),
        "polynomial": lambda z: z ** int(p["degree"]),
        "abs": torch.abs,
        "sin": torch.sin,
        "cos": torch.cos,
        "exp": torch.exp,
        "squared_relu": lambda z: F.relu(z) ** 2,
    }
    return table.get(name)


def _sympy_to_torch(expr, params: dict):
    """Compile a catalogue formula to a torch function (for user-registered entries)."""
    import sympy

    import activations

    expr = expr.subs({sympy.Symbol(k, real=True): v for k, v in params.items()})

    def _max(*args):
        out = args[0]
        for a in args[1:]:
            out = torch.maximum(torch.as_tensor(out), torch.as_tensor(a))
        return out

    def _min(*args):
        out = args[0]
        for a in args[1:]:
            out = torch.minimum(torch.as_tensor(out), torch.as_tensor(a))
        return out

    mapping = {
        "exp": torch.exp, "log": torch.log, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh,
        "sinh": torch.sinh, "cosh": torch.cosh, "atan": torch.atan, "erf": torch.erf, "sqrt": torch.sqrt,
        "Abs": torch.abs, "Max": _max, "Min": _min, "sign": torch.sign, "Heaviside": lambda z, h0=0.5: torch.heaviside(z, torch.full_like(z, h0)),
        "pi": math.pi, "E": math.e,
    }
    if expr.has(sympy.Piecewise):
        raise ValueError(f"cannot compile the piecewise formula {expr} to torch; pass an nn.Module factory as 'activation'")
    fn = sympy.lambdify(activations.x, expr, modules=[mapping])

    def wrapped(z):
        out = fn(z)
        return out if isinstance(out, torch.Tensor) else torch.full_like(z, float(out))

    return wrapped


class CatalogueActivation(nn.Module):
    """An elementwise activation given by a catalogue entry, as an ``nn.Module``.

    Used for catalogue activations torch has no module for (``gaussian``, ``sin``,
    ``squared_relu``, ...). ``name`` and ``params`` are kept as attributes, so the symmetry
    machinery reads the activation off the module.

    Parameters
    ----------
    name : str
        A catalogue name (see ``activations.names()``).
    **params
        Values of the entry's parameters; missing ones take their defaults.
    """

    def __init__(self, name: str, **params):
        super().__init__()
        import activations

        entry = activations.get(name)
        bound = entry.bind(**params)
        self.name = entry.name
        self.params = {k: float(v) for k, v in bound.items()}
        fn = _torch_expr(entry.name, self.params)
        self._fn = fn if fn is not None else _sympy_to_torch(entry.expr, self.params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name!r}" + (f", {args}" if args else "")


def _torch_module(name: str, params: dict) -> nn.Module | None:
    p = params
    table = {
        "identity": lambda: nn.Identity(),
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(p["negative_slope"]),
        "elu": lambda: nn.ELU(p["alpha"]),
        "selu": lambda: nn.SELU(),
        "celu": lambda: nn.CELU(p["alpha"]),
        "gelu": lambda: nn.GELU(),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "silu": lambda: nn.SiLU(),
        "mish": lambda: nn.Mish(),
        "softplus": lambda: nn.Softplus(beta=p["beta"]),
        "sigmoid": lambda: nn.Sigmoid(),
        "logsigmoid": lambda: nn.LogSigmoid(),
        "tanh": lambda: nn.Tanh(),
        "hardtanh": lambda: nn.Hardtanh(p["min_val"], p["max_val"]),
        "relu6": lambda: nn.ReLU6(),
        "hardsigmoid": lambda: nn.Hardsigmoid(),
        "hardswish": lambda: nn.Hardswish(),
        "softsign": lambda: nn.Softsign(),
        "tanhshrink": lambda: nn.Tanhshrink(),
        "softshrink": lambda: nn.Softshrink(p["lambd"]),
        "hardshrink": lambda: nn.Hardshrink(p["lambd"]),
    }
    make = table.get(name)
    return None if make is None else make()


def make_activation(activation) -> nn.Module:
    """A fresh activation module from a catalogue name, ``(name, params)`` or a factory.

    >>> make_activation("leaky_relu")
    LeakyReLU(negative_slope=0.01)
    >>> make_activation(("gaussian", {}))
    CatalogueActivation('gaussian')
    """
    if isinstance(activation, nn.Module):
        raise TypeError("Argument 'activation' must be a name or a factory returning a fresh module, not a module instance "
                        "(one instance would be shared by every layer).")
    if isinstance(activation, str):
        name, params = activation, {}
    elif isinstance(activation, tuple) and len(activation) == 2 and isinstance(activation[0], str):
        name, params = activation[0], dict(activation[1])
    elif callable(activation):
        module = activation()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Argument 'activation' must return an nn.Module when called, not {type(module).__name__}.")
        return module
    else:
        raise TypeError(f"Argument 'activation' must be a catalogue name, a (name, params) pair or a module factory, not {activation!r}.")
    import activations

    try:
        entry = activations.get(name)
    except KeyError as e:
        raise ValueError(f"Argument 'activation': {e.args[0]}") from None
    bound = {k: float(v) for k, v in entry.bind(**params).items()}
    module = _torch_module(entry.name, bound)
    return module if module is not None else CatalogueActivation(entry.name, **bound)


def _channels(width, base: int) -> int:
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise TypeError(f"Argument 'width' must be a float multiplier or an int number of base channels, not {width!r}.")
    if isinstance(width, int):
        if width < 1:
            raise ValueError(f"Argument 'width' (base channels) must be at least 1, not {width}.")
        return width
    if not width > 0:
        raise ValueError(f"Argument 'width' (multiplier) must be positive, not {width}.")
    return max(1, int(round(base * width)))


# Myrtle CNN ---------------------------------------------------------------------------------

def myrtle(width=1.0, batch_norm: bool = True, activation="relu", num_classes: int = 10, in_channels: int = 3) -> nn.Sequential:
    """The Myrtle CNN of fig. 26 (a: ``batch_norm=True``; b: ``batch_norm=False``).

    conv(c) - [bn] - act - conv(2c) - [bn] - act - maxpool2 - conv(4c) - [bn] - act - maxpool2 -
    conv(8c) - [bn] - act - maxpool2 - global maxpool - flatten - linear, with c = 64 at width
    1.0. As in the figure, without batch norm only the first convolution has a bias and the
    final linear layer has none.

    Parameters
    ----------
    width : float or int
        A float multiplies the base channel count 64; an int *is* the base channel count.
    batch_norm : bool
    activation : str, (str, dict) or callable
        See :func:`make_activation`.
    num_classes, in_channels : int

    Examples
    --------
    >>> sum(p.numel() for p in myrtle().parameters())
    1558026
    >>> sum(p.numel() for p in myrtle(batch_norm=False).parameters())
    1555200
    >>> myrtle(width=8, in_channels=1)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    c = _channels(width, 64)
    widths = [c, 2 * c, 4 * c, 8 * c]
    layers: list[nn.Module] = []
    prev = in_channels
    for i, w in enumerate(widths):
        layers.append(nn.Conv2d(prev, w, 3, padding=1, bias=batch_norm or i == 0))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(make_activation(activation))
        if i > 0:
            layers.append(nn.MaxPool2d(2))
        prev = w
    # fig. 26 ends with MaxPool2d(4) on 4x4 maps; the adaptive form is the same there and
    # also handles the 1x1 maps that 8x8 inputs reach.
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes, bias=batch_norm)]
    return nn.Sequential(*layers)


# ResNets ------------------------------------------------------------------------------------

class ChannelPadShortcut(nn.Module):
    """The parameter-free "option A" shortcut of the CIFAR ResNets (He et al. 2016): subsample
    by ``stride`` and zero-pad the channels on both sides up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        extra = out_channels - in_channels
        self.stride = stride
        self.before = extra // 2
        self.after = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """conv3x3 - bn - act - conv3x3 - bn, plus the shortcut, then act (figs. 27b, 28b)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Sequential()
        elif shortcut == "pad":
            self.shortcut = ChannelPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
        self.act2 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv3x3 - bn - act, stages of :class:`BasicBlock`, global average pool, linear."""

    def __init__(self, widths, blocks, activation, num_classes: int, in_channels: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = make_activation(activation)
        stages = []
        prev = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layer = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layer.append(BasicBlock(prev, w, stride, activation, shortcut))
                prev = w
            stages.append(nn.Sequential(*layer))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet20(width=1.0, activation="relu", num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """The CIFAR ResNet20 of fig. 27: 3 stages of 3 basic blocks with 16, 32, 64 channels
    (times ``width``), zero-padding shortcuts.

    ``width``: a float multiplies the base channel count 16; an int is the base channel count.

    >>> sum(p.numel() for p in resnet20().parameters())
    269722
    """
    c = _channels(width, 16)
    return ResNet([c, 2 * c, 4 * c], [3, 3, 3], activation, num_classes, in_channels, shortcut="pad")


def resnet18(width=1.0, activation="relu", num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """The CIFAR-sized ResNet18 of fig. 28: 4 stages of 2 basic blocks with 64, 128, 256, 512
    channels (times ``width``), 1x1 convolution + batch norm projection shortcuts.

    ``width``: a float multiplies the base channel count 64; an int is the base channel count.

    >>> sum(p.numel() for p in resnet18().parameters())
    11173962
    """
    c = _channels(width, 64)
    return ResNet([c, 2 * c, 4 * c, 8 * c], [2, 2, 2, 2], activation, num_classes, in_channels, shortcut="conv")


def mlp(sizes, activation="relu", bias: bool = True) -> nn.Sequential:
    """flatten - linear - act - ... - linear, with layer sizes ``sizes = [in, hidden..., out]``.

    >>> mlp([64, 32, 10], activation="tanh")
    Sequential(
      (0): Flatten(start_dim=1, end_dim=-1)
      (1): Linear(in_features=64, out_features=32, bias=True)
      (2): Tanh()
      (3): Linear(in_features=32, out_features=10, bias=True)
    )
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError(f"Argument 'sizes' must be at least two positive ints [in, ..., out], not {sizes!r}.")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def randomize_batchnorm(model: nn.Module, seed: int = 0, mean_scale: float = 1.0) -> nn.Module:
    """Give every batch norm random affine parameters and running statistics, in place.

    Fresh batch norms (weight 1, bias 0, mean 0, variance 1) hide errors in how a symmetry
    acts on them; checks of equivalence should run on randomised ones. Returns ``model`` in
    eval mode.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g) * mean_scale)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


# A small vision transformer -------------------------------------------------------------------

class ViTBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))`` (hand-written
    multi-head attention: fused qkv linear, softmax(q k^T / sqrt(d)) v, output projection)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, activation):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Argument 'heads' ({heads}) must divide the width ({dim}).")
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, e = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(e, dim=-1)
        q, k, v = (z.reshape(b, t, h, e // h).transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(e // h), dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, e))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    """Patch embedding (a ``patch`` x ``patch`` convolution with that stride) plus learned
    positions, ``depth`` :class:`ViTBlock` s, a final LayerNorm, mean over tokens, linear head.

    ``residual_sites``: the names of the blocks, whose outputs are the residual stream
    between blocks (where the transformer stitching experiment stitches, appendix D.4)."""

    def __init__(self, dim: int, depth: int, heads: int, patch: int, image_size: int, in_channels: int,
                 num_classes: int, activation, mlp_ratio: int = 2):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"Argument 'patch' ({patch}) must divide the image size ({image_size}).")
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp_ratio * dim, activation) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.residual_sites = tuple(f"blocks.{i}" for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        x = self.blocks(x)
        return self.head(self.ln(x).mean(1))


def vit(width: int = 32, depth: int = 2, heads: int = 2, patch: int = 2, image_size: int = 8, in_channels: int = 3,
        num_classes: int = 10, activation="gelu") -> ViT:
    """A small vision transformer (:class:`ViT`); on 8x8 digits, 2x2 patches give 16 tokens.

    >>> vit(width=16, in_channels=1)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    return ViT(int(width), depth, heads, patch, image_size, in_channels, num_classes, activation)
