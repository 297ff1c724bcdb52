"""Gathering hidden features of a torch model with forward hooks."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

__all__ = ["collect_features", "stream_features", "resolve_layers", "batches"]


def resolve_layers(model: nn.Module, layers) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if isinstance(layers, type) and issubclass(layers, nn.Module):
        found = {name: m for name, m in named.items() if isinstance(m, layers) and name}
        if not found:
            raise ValueError(f"Argument 'layers': the model has no module of type {layers.__name__}.")
        return found
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise TypeError(f"Argument 'layers' must be module names, modules or a module type, not {type(layers).__name__}.")
    out = {}
    by_id = {id(m): name for name, m in named.items()}
    for item in layers:
        if isinstance(item, str):
            if item not in named:
                import difflib

                close = difflib.get_close_matches(item, list(named), n=3)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"Argument 'layers': the model has no module named {item!r}.{hint}")
            out[item] = named[item]
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise ValueError(f"Argument 'layers': module {item!r} is not part of the model.")
            out[by_id[id(item)]] = item
        else:
            raise TypeError(f"Argument 'layers' must hold module names or modules, not {type(item).__name__}.")
    if not out:
        raise ValueError("Argument 'layers' is empty.")
    return out


def batches(inputs_or_loader, batch_size: int):
    if isinstance(inputs_or_loader, np.ndarray):
        inputs_or_loader = torch.from_numpy(inputs_or_loader)
    if isinstance(inputs_or_loader, torch.Tensor):
        for s in range(0, inputs_or_loader.shape[0], batch_size):
            yield inputs_or_loader[s:s + batch_size]
        return
    for item in inputs_or_loader:
        # DataLoaders yield (inputs, targets); keep the inputs.
        yield item[0] if isinstance(item, (tuple, list)) else item


#: Module types whose outputs of 3 or more dimensions put channels last ((N, T, C) tokens).
_CHANNELS_LAST = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.MultiheadAttention, nn.Bilinear)


def feature_info(name: str, module: nn.Module, example: torch.Tensor):
    """What is known about the features of ``module`` (see :mod:`._provenance`)."""
    from ..symmetry import module_activation
    from ._provenance import FeatureInfo

    src = type(module).__name__
    ref = module_activation(module)
    if ref is not None and ref.name == "identity":
        ref = None  # nn.Identity passes features through: it says nothing about a group
    last = example.ndim >= 3 and (isinstance(module, _CHANNELS_LAST) or src == "Conv1D")  # HF's Conv1D is a linear map
    return FeatureInfo(name, src, ref, "channels_last" if last else None)


def _check_model(model, batch_size):
    if not isinstance(model, nn.Module):
        raise TypeError(f"Argument 'model' must be a torch.nn.Module, not {type(model).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Argument 'batch_size' must be a positive integer, not {batch_size!r}.")


def stream_features(model: nn.Module, inputs_or_loader, layers, *, batch_size: int = 256, device=None,
                    store_device="cpu", dtype=None):
    """Like :func:`collect_features`, one batch at a time: yields ``{layer name: tensor}``
    for every batch, so that memory holds one batch of features (the hooks are removed
    and the model's mode restored when the generator finishes or is closed)."""
    _check_model(model, batch_size)
    mods = resolve_layers(model, layers)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    store: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    active = [False]  # hooks record only during this generator's own forward passes

    def make_hook(name):
        def hook(_module, _inp, out):
            if not active[0]:
                return
            if isinstance(out, (tuple, list)):
                out = out[0]
            calls[name] = calls.get(name, 0) + 1
            if calls[name] > 1:
                raise ValueError(
                    f"module {name!r} runs more than once per forward pass (a shared module?); its "
                    "features are ambiguous: give each use its own module"
                )
            t = out.detach().to(store_device)
            store[name] = t.to(dtype) if dtype is not None else t

        return hook

    # Every module's own mode (a model may keep some parts, frozen batch norm, in eval mode).
    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(make_hook(name)) for name, m in mods.items()]
    try:
        model.eval()
        for batch in batches(inputs_or_loader, batch_size):
            calls.clear()
            store.clear()
            active[0] = True
            try:
                with torch.no_grad():
                    model(batch.to(device))
            finally:
                active[0] = False
            missing = [n for n in mods if n not in store]
            if missing:
                raise ValueError(f"Argument 'layers': module(s) {missing} never ran during the forward pass.")
            yield {name: store[name] for name in mods}
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training


def collect_features(model: nn.Module, inputs_or_loader, layers, *, batch_size: int = 256,
                     device=None, store_device="cpu", dtype=None) -> dict[str, torch.Tensor]:
    """Outputs of chosen modules of ``model`` over a dataset, concatenated over batches.

    Forward hooks copy each chosen module's output (detached, moved to ``store_device``)
    and nothing else; the model runs in eval mode under ``torch.no_grad()`` and its mode
    and hooks are restored afterwards, even on error.

    The returned tensors remember their module: the group measures warn when given a
    ``group`` that differs from the module's activation (GELU features with the default
    ``group="relu"``), and features of modules that put channels last (``nn.Linear``,
    ``nn.LayerNorm``, ... on ``(N, T, C)`` tokens) are read with ``layout="channels_last"``
    unless a layout is given. A slice or copy of a tensor does not carry this record.

    Parameters
    ----------
    model : torch.nn.Module
    inputs_or_loader : tensor, numpy array or iterable of batches
        A tensor is split into batches of ``batch_size``; an iterable (a DataLoader) yields
        batches or ``(inputs, targets)`` pairs.
    layers : str, module, list of those, or a module type
        Module names as in ``model.named_modules()``, the modules themselves, or a type
        (``torch.nn.ReLU``: every module of that type).
    device : torch.device or None
        Where the inputs are sent (default: the device of the model's first parameter).
    store_device : torch.device or str
        Where features are kept (default CPU, so a GPU run does not hold the dataset).
    dtype : torch.dtype or None
        Store features in this dtype (for example ``torch.float16`` to halve memory).

    Returns
    -------
    dict
        Layer name -> tensor of shape ``(N, ...)``, in the order of ``layers``.

    Raises
    ------
    ValueError
        Unknown layer names, or a hooked module that runs more than once per forward pass
        (a shared ``nn.ReLU`` instance: its features would be ambiguous).
    """
    _check_model(model, batch_size)
    mods = resolve_layers(model, layers)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in mods}
    for feats in stream_features(model, inputs_or_loader, mods.values(), batch_size=batch_size, device=device,
                                 store_device=store_device, dtype=dtype):
        for name, t in zip(mods, feats.values()):
            parts[name].append(t)
    empty = [n for n, v in parts.items() if not v]
    if empty:
        raise ValueError(f"Argument 'layers': module(s) {empty} never ran during the forward pass, or there was no input.")
    from ._provenance import register

    out = {}
    for name, v in parts.items():
        out[name] = torch.cat(v, dim=0)
        register(out[name], feature_info(name, mods[name], out[name]))
    return out
