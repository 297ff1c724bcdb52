"""Batches, per-channel statistics and the order in which modules run.

Shared by batch-norm re-estimation, REPAIR, the barrier and the merge of many models.
``data`` is anything iterable giving ``(x, y)`` pairs (a DataLoader, a list of tuples) or
bare input tensors; a one-shot iterator is read once and kept, so that several passes
over it see the same batches (a second pass over an exhausted generator would silently
see nothing).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = []

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Layers whose output channels REPAIR rescales and shifts: kind -> (dimension of the output
#: holding the channels, "last" or 1; dimension of the weight holding them).
PRODUCERS = {nn.Linear: ("last", 0), nn.Conv1d: (1, 0), nn.Conv2d: (1, 0), nn.Conv3d: (1, 0)}


def producer_layout(module: nn.Module):
    """``(output channel dim, weight channel dim)`` of a layer REPAIR can correct, else None."""
    for kind, layout in PRODUCERS.items():
        if isinstance(module, kind):
            return layout
    if type(module).__name__ == "Conv1D" and type(module).__module__.startswith("transformers"):
        return ("last", 1)  # Hugging Face's Conv1D: y = x W + b with W of shape (in, out)
    return None


class _Stop(Exception):
    """Raised inside a hook to end a forward pass once the wanted statistics are read."""


def as_passes(data, argument: str = "data"):
    """``data`` as something that can be iterated over several times."""
    if data is None:
        raise ValueError(f"Argument {argument!r} is required here (a DataLoader or an iterable of (x, y) batches).")
    if isinstance(data, torch.Tensor):
        return [data]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data) \
            and data[0].dim() > 0 and data[1].dim() == 1 and len(data[0]) == len(data[1]) and data[1].dtype == torch.long:
        return [tuple(data)]  # one (x, y) batch given directly
    try:
        it = iter(data)
    except TypeError:
        raise TypeError(f"Argument {argument!r} must be a DataLoader or an iterable of (x, y) batches, "
                        f"not {type(data).__name__}.") from None
    if it is data:  # a generator or another one-shot iterator
        return list(it)
    return data


def model_place(model: nn.Module):
    """(device, floating dtype) of a model's first floating-point tensor."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def batches(data, model: nn.Module, argument: str = "data", need_labels: bool = False):
    """Yield ``(x, y)`` (``y`` may be None) with ``x`` on the model's device and, when
    floating point, in its dtype."""
    device, dtype = model_place(model)
    n = 0
    for item in data:
        if isinstance(item, torch.Tensor):
            x, y = item, None
        elif isinstance(item, (tuple, list)) and len(item) >= 1 and isinstance(item[0], torch.Tensor):
            x = item[0]
            y = item[1] if len(item) > 1 else None
        else:
            raise TypeError(f"Argument {argument!r} must yield (x, y) batches or input tensors, "
                            f"not {type(item).__name__}.")
        if need_labels and not isinstance(y, torch.Tensor):
            raise ValueError(f"Argument {argument!r} must yield (x, y) batches with labels y for the loss and accuracy.")
        x = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
        yield x, (y.to(device) if isinstance(y, torch.Tensor) else None)
        n += 1
    if n == 0:
        raise ValueError(f"Argument {argument!r} yielded no batches.")


def first_inputs(data, model: nn.Module, argument: str = "data") -> torch.Tensor:
    for x, _ in batches(data, model, argument):
        return x
    raise ValueError(f"Argument {argument!r} yielded no batches.")  # pragma: no cover - batches() raises


class ChannelStats:
    """Running per-channel mean and second central moment in float64 (Chan et al.'s pairwise
    update, so large means do not cancel the variance)."""

    def __init__(self):
        self.n = 0
        self.mean = None
        self.m2 = None

    def update(self, z: torch.Tensor, dim: int) -> None:
        z = z.detach().movedim(dim, 0).reshape(z.shape[dim], -1).double()
        k = z.shape[1]
        if k == 0:
            return
        mb = z.mean(1)
        m2b = ((z - mb[:, None]) ** 2).sum(1)
        if self.mean is None:
            self.n, self.mean, self.m2 = k, mb, m2b
            return
        n = self.n + k
        delta = mb - self.mean
        self.mean = self.mean + delta * (k / n)
        self.m2 = self.m2 + m2b + delta * delta * (self.n * k / n)
        self.n = n

    def var(self, unbiased: bool = False) -> torch.Tensor:
        d = self.n - 1 if unbiased else self.n
        return self.m2 / max(d, 1)

    def std(self) -> torch.Tensor:
        return self.var().sqrt()


def channel_dim(module: nn.Module, y: torch.Tensor) -> int:
    """The channel dimension of a module's output (linear layers: last; conv and batch norm: 1)."""
    layout = producer_layout(module)
    if layout is not None and layout[0] == "last":
        return y.dim() - 1
    return 1 if y.dim() > 1 else 0


class eval_mode:
    """Context: the model in eval mode, every module's training flag restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, t in self.modes:
            m.training = t
        return False


def run(model: nn.Module, data, argument: str = "data", until_stop: bool = False) -> int:
    """Forward every batch (no grad); a hook raising :class:`_Stop` ends that batch early."""
    n = 0
    with torch.no_grad():
        for x, _ in batches(data, model, argument):
            try:
                model(x)
            except _Stop:
                if not until_stop:
                    raise
            n += 1
    return n


def execution_order(model: nn.Module, x: torch.Tensor, select) -> list:
    """Names of the modules with ``select(module)`` in the order a forward pass on ``x`` first calls them,
    with, for each, whether its output is (part of) the model's output and whether it feeds
    a batch norm directly: ``[(name, module, is_output, feeds_bn)]``."""
    mods = dict(model.named_modules())
    order, out_ids, bn_in = [], {}, set()
    hooks, keep = [], []  # tensors kept alive so that no id() is reused during the pass
    for name, m in mods.items():
        if select(m):
            def hook(mod, _i, y, name=name):
                if name not in out_ids:
                    order.append(name)
                    out_ids[name] = id(y)
                    keep.append(y)
            hooks.append(m.register_forward_hook(hook))
        if isinstance(m, BATCH_NORMS):
            def pre(mod, inputs):
                if inputs and isinstance(inputs[0], torch.Tensor):
                    bn_in.add(id(inputs[0]))
                    keep.append(inputs[0])
            hooks.append(m.register_forward_pre_hook(pre))
    try:
        with eval_mode(model), torch.no_grad():
            y = model(x)
    finally:
        for h in hooks:
            h.remove()
    outs = {id(t) for t in _leaves(y)}
    return [(n, mods[n], out_ids[n] in outs, out_ids[n] in bn_in) for n in order]


def _leaves(y):
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _leaves(v)]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _leaves(v)]
    return [getattr(y, k) for k in ("logits",) if isinstance(getattr(y, k, None), torch.Tensor)]
