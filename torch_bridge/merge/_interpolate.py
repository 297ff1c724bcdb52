"""Interpolation of two models' weights and re-estimation of batch-norm statistics."""

from __future__ import annotations

import copy
import math
import numbers

import torch
from torch import nn

from ._stats import BATCH_NORMS, ChannelStats, _Stop, as_passes, batches, eval_mode, execution_order, run

__all__ = ["interpolate", "average", "reestimate_batchnorm"]


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(float(alpha)):
        raise ValueError(f"Argument 'alpha' must be a finite real number, not {alpha!r}.")
    return float(alpha)


def _check_same(models, names=("model_a", "model_b")) -> list:
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"Argument {names[min(i, len(names) - 1)]!r} must be an nn.Module, not {type(m).__name__}.")
    states = [m.state_dict() for m in models]
    ref = states[0]
    for i, s in enumerate(states[1:], 1):
        name = names[min(i, len(names) - 1)]
        if s.keys() != ref.keys():
            extra = sorted(set(s) ^ set(ref))[:3]
            raise ValueError(f"Argument {name!r} does not have the architecture of {names[0]!r} "
                             f"(tensors {extra} are in one state dict only).")
        for k, v in ref.items():
            if s[k].shape != v.shape:
                raise ValueError(f"Argument {name!r} does not have the architecture of {names[0]!r} (tensor {k!r} "
                                 f"has shape {tuple(s[k].shape)}, not {tuple(v.shape)}).")
    return states


def _combine(states, weights, key, place):
    """The weighted combination of one state-dict entry (``weights`` sum to 1)."""
    vals = [s[key] for s in states]
    ref = vals[0]
    if ref.is_floating_point() or ref.is_complex():
        if len(vals) == 2:
            # torch.lerp is exact at both ends: alpha = 0 gives a, alpha = 1 gives b
            return torch.lerp(ref, vals[1].to(ref), float(weights[1]))
        out = torch.zeros_like(ref, dtype=torch.float64 if ref.dtype != torch.float64 else ref.dtype)
        for w, v in zip(weights, vals):
            out += w * v.to(ref.device, torch.float64)
        return out.to(ref.dtype)
    if all(torch.equal(v.to(ref.device), ref) for v in vals[1:]):
        return ref.clone()
    if key.endswith("num_batches_tracked"):
        # a counter, not a coordinate: its weighted mean, rounded (exact at the ends)
        total = sum(w * float(v) for w, v in zip(weights, vals))
        return torch.full_like(ref, int(round(total)))
    for w, v in zip(weights, vals):
        if w == 1.0:
            return v.to(ref.device).clone()
    raise ValueError(f"Cannot interpolate the integer tensor {key!r}: it differs between "
                     f"{' and '.join(repr(p) for p in place)}; integer buffers must agree.")


def _combined_model(models, weights, place) -> nn.Module:
    states = _check_same(models, place)
    new = copy.deepcopy(models[0])
    merged = {k: _combine(states, weights, k, place) for k in states[0]}
    new.load_state_dict(merged)
    return new


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float, *, buffers: str = "interpolate",
                data=None, **reestimate_options) -> nn.Module:
    """The model with weights :math:`(1-\\alpha)\\,\\theta_a + \\alpha\\,\\theta_b` (a new model).

    Parameters
    ----------
    model_a, model_b : nn.Module
        Two models of the same architecture (same state-dict keys and shapes). The result is a
        copy of ``model_a`` (its device, dtypes and training mode); ``model_b``'s tensors are
        converted to them.
    alpha : float
        0 gives ``model_a`` exactly, 1 gives ``model_b`` exactly (``torch.lerp``); values
        outside [0, 1] extrapolate.
    buffers : {"interpolate", "reestimate"}
        Floating-point buffers (batch-norm running statistics) are interpolated like the
        weights; with ``"reestimate"`` every batch norm's statistics are then recomputed on
        ``data`` (:func:`reestimate_batchnorm`). Integer buffers must agree between the models,
        except ``num_batches_tracked`` (a counter: its interpolation, rounded).
    data : DataLoader or iterable of (x, y) batches, optional
        Required with ``buffers="reestimate"``.
    **reestimate_options
        Passed to :func:`reestimate_batchnorm` (``mode``, ``max_batches``).

    Examples
    --------
    >>> from torch_bridge.models import mlp
    >>> a, b = mlp([4, 8, 3]), mlp([4, 8, 3])
    >>> m = interpolate(a, b, 0.25)
    >>> bool(torch.allclose(m[1].weight, 0.75 * a[1].weight + 0.25 * b[1].weight))
    True
    >>> torch.equal(interpolate(a, b, 1.0)[1].weight, b[1].weight)
    True
    """
    alpha = _check_alpha(alpha)
    if buffers not in ("interpolate", "reestimate"):
        raise ValueError(f"Argument 'buffers' must be 'interpolate' or 'reestimate', not {buffers!r}.")
    if buffers == "reestimate" and data is None:
        raise ValueError("Argument 'data' is required with buffers='reestimate'.")
    new = _combined_model([model_a, model_b], [1.0 - alpha, alpha], ("model_a", "model_b"))
    if buffers == "reestimate":
        new = reestimate_batchnorm(new, data, **reestimate_options)
    return new


def average(models, weights=None) -> nn.Module:
    """The weighted average of several models' state dicts (a new model; equal weights by
    default). Integer buffers follow :func:`interpolate`'s rule."""
    models = list(models)
    if len(models) < 1:
        raise ValueError("Argument 'models' must hold at least one model.")
    if weights is None:
        weights = [1.0 / len(models)] * len(models)
    weights = [float(w) for w in weights]
    if len(weights) != len(models) or not math.isclose(sum(weights), 1.0, rel_tol=1e-9):
        raise ValueError(f"Argument 'weights' must hold one weight per model summing to 1, not {weights!r}.")
    names = tuple(f"models[{i}]" for i in range(len(models)))
    return _combined_model(models, weights, names)


def reestimate_batchnorm(model: nn.Module, data, *, mode: str = "train", max_batches: int | None = None) -> nn.Module:
    """A copy of ``model`` whose batch norms' running statistics are those of its inputs on ``data``.

    Each batch norm (with ``track_running_stats``) gets ``running_mean`` = the mean and
    ``running_var`` = the unbiased variance of its input channels pooled over every sample
    (and position) of ``data``, in float64, and ``num_batches_tracked`` = the number of
    batches. Nothing else changes; ``model`` itself is untouched.

    Parameters
    ----------
    model : nn.Module
    data : DataLoader or iterable of (x, y) batches (or of input tensors)
    mode : {"train", "eval"}
        ``"train"``: one pass in which every batch norm normalises with its batch's statistics,
        as in training (the usual recipe, e.g. PyTorch's ``update_bn``, but with exact pooled
        statistics instead of a running average of batch means). ``"eval"``: one pass per
        batch norm, in the order they run, each with the batch norms before it already
        re-estimated and in eval mode: the statistics the eval-mode network actually sees.
    max_batches : int, optional
        Use only the first batches of ``data``.

    Returns
    -------
    nn.Module
        The new model, in ``model``'s training mode.
    """
    if mode not in ("train", "eval"):
        raise ValueError(f"Argument 'mode' must be 'train' or 'eval', not {mode!r}.")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"Argument 'max_batches' must be a positive integer or None, not {max_batches!r}.")
    data = as_passes(data)
    if max_batches is not None:
        data = _first(data, max_batches)
    new = copy.deepcopy(model)
    bns = [(n, m) for n, m in new.named_modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    if not bns:
        return new
    if mode == "train":
        stats = {n: ChannelStats() for n, _ in bns}
        hooks = [m.register_forward_pre_hook(_recorder(stats[n])) for n, m in bns]
        try:
            with eval_mode(new):
                for _, m in bns:
                    m.train()
                count = run(new, data)
        finally:
            for h in hooks:
                h.remove()
        for n, m in bns:
            _set_stats(m, stats[n], count)
        return new
    x0 = next(batches(data, new))[0]
    order = [n for n, _, _, _ in execution_order(new, x0, lambda m: isinstance(m, BATCH_NORMS))]
    mods = dict(bns)
    for n in order:
        if n in mods:
            set_from_data(new, n, data)
    return new


def set_from_data(model: nn.Module, name: str, data) -> None:
    """Set batch norm ``name``'s running statistics from its inputs on ``data``, the model in
    eval mode (in place, on a private copy)."""
    m = model.get_submodule(name)
    st = ChannelStats()
    rec = _recorder(st)

    def hook(mod, inputs):
        rec(mod, inputs)
        raise _Stop

    h = m.register_forward_pre_hook(hook)
    try:
        with eval_mode(model):
            count = run(model, data, until_stop=True)
    finally:
        h.remove()
    _set_stats(m, st, count)


def _recorder(st: ChannelStats):
    def hook(mod, inputs):
        x = inputs[0]
        st.update(x, 1 if x.dim() > 1 else 0)

    return hook


def _set_stats(m: nn.Module, st: ChannelStats, count: int) -> None:
    if st.mean is None:
        raise ValueError("Argument 'data' never reached a batch norm of the model.")
    with torch.no_grad():
        m.running_mean.copy_(st.mean.to(m.running_mean))
        m.running_var.copy_(st.var(unbiased=True).to(m.running_var))
        if m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(count)


def _first(data, k):
    out = []
    for i, item in enumerate(data):
        if i >= k:
            break
        out.append(item)
    return out
