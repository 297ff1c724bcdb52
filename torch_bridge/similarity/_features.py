"""Turning user arrays into validated feature tensors, and per-channel normalisation.

Features are ``(N, C)`` or ``(N, C, *spatial)`` (``(N, C, H, W)`` for images): axis 0
indexes samples, axis 1 channels (the coordinates the intertwiner group acts on), and the
remaining axes are positions, which are never mixed with channels (appendix D.7). Inside
the package they are held as ``(N, C, P)`` torch tensors with ``P`` the number of positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ._invariance import Invariance

__all__ = ["as_features", "check_pair", "ChannelStats", "channel_stats", "row_batches"]

#: Elements of one batch of rows when streaming over samples (about 32 MB in float64).
BATCH_ELEMENTS = 1 << 22
#: Default relative tolerance under which a centred channel counts as constant (dead).
DEAD_RTOL = 1e-6


def as_features(x, name: str) -> torch.Tensor:
    """A ``(N, C, P)`` floating tensor from a numpy array or torch tensor.

    float16/bfloat16 become float32, integers and booleans float64; the device is kept.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise TypeError(f"Argument {name!r} must hold real numbers, not numpy dtype {x.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise TypeError(f"Argument {name!r} must hold real numbers, not dtype {t.dtype}.")
    else:
        raise TypeError(f"Argument {name!r} must be a numpy array or a torch tensor, not {type(x).__name__}.")
    if t.ndim < 2:
        raise ValueError(
            f"Argument {name!r} must have shape (N, C) or (N, C, H, W) (samples, channels, positions), "
            f"not {tuple(t.shape)}."
        )
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    n, c = t.shape[0], t.shape[1]
    if n == 0 or c == 0 or t.numel() == 0:
        raise ValueError(f"Argument {name!r} is empty (shape {tuple(t.shape)}).")
    t = t.reshape(n, c, -1)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"Argument {name!r} contains {bad} NaN or infinite value(s); similarity is undefined.")
    return t


def check_pair(X: torch.Tensor, Y: torch.Tensor, min_samples: int = 1, same_positions: bool = False,
               same_channels: bool = False, measure: str = "") -> None:
    """Errors that name what differs between the two feature arrays."""
    what = f"{measure}: " if measure else ""
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{what}X has N={X.shape[0]} samples but Y has N={Y.shape[0]}; rows must be the same inputs.")
    if X.shape[0] < min_samples:
        raise ValueError(
            f"{what}the unbiased HSIC estimator needs N >= {min_samples} samples (it divides by N(N-3)), "
            f"got N={X.shape[0]}."
        )
    if X.device != Y.device:
        raise ValueError(f"{what}X is on {X.device} but Y is on {Y.device}; put both on one device.")
    if same_positions and X.shape[2] != Y.shape[2]:
        raise ValueError(
            f"{what}X has {X.shape[2]} positions per channel but Y has {Y.shape[2]}; this measure pairs "
            "positions, so spatial shapes must match."
        )
    if same_channels and X.shape[1] != Y.shape[1]:
        raise ValueError(f"{what}X has {X.shape[1]} channels but Y has {Y.shape[1]}.")


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (the dtype of the big products)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def row_batches(n: int, per_row: int, elements: int | None = None):
    """Slices of about ``elements`` (default :data:`BATCH_ELEMENTS`) entries over ``n`` rows
    of ``per_row`` entries each."""
    step = max(1, (BATCH_ELEMENTS if elements is None else elements) // max(per_row, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel float64 statistics of a ``(N, C, P)`` tensor.

    ``mean`` is subtracted before everything when the measure is centred (zeros otherwise);
    ``norm`` is the l2 norm of the (centred) channel over samples and positions; ``live``
    marks channels that are not constant (dead).
    """

    mean: torch.Tensor
    norm: torch.Tensor
    live: torch.Tensor


def channel_stats(X: torch.Tensor, center: bool, dead_rtol: float = DEAD_RTOL) -> ChannelStats:
    """Means and norms per channel, streamed over rows with float64 accumulation.

    A channel is dead when it is identically zero, or, for centred measures, when its
    centred norm is at most ``dead_rtol`` times its uncentred norm (a constant channel; the
    tolerance absorbs the rounding of the mean).
    """
    n, c, p = X.shape
    dev = X.device
    total = torch.zeros(c, dtype=torch.float64, device=dev)
    raw = torch.zeros(c, dtype=torch.float64, device=dev)
    for sl in row_batches(n, c * p):
        b = X[sl].to(torch.float64)
        total += b.sum(dim=(0, 2))
        raw += b.square().sum(dim=(0, 2))
    count = n * p
    if center:
        mean = total / count
        # One pass: sum (x - m)^2 = sum x^2 - count m^2 in float64. The rounding of this
        # difference is ~1e-16 of sum x^2, far below the dead-channel threshold dead_rtol^2.
        sq = (raw - count * mean.square()).clamp(min=0)
    else:
        mean = torch.zeros(c, dtype=torch.float64, device=dev)
        sq = raw
    raw = raw.sqrt()
    norm = sq.sqrt()
    live = (norm > dead_rtol * raw) & (raw > 0) if center else raw > 0
    return ChannelStats(mean, norm, live)


def canonical_scale(norm: torch.Tensor, inv: Invariance) -> torch.Tensor:
    """The divisor of each channel that removes the scalings of ``inv`` (float64).

    * positive scalings ``(0, oo)``: the channel's norm (every live channel gets norm 1);
    * no scalings: 1 (the measure keeps the scale, it is part of what is compared);
    * scalings by powers of ``step``: ``step**k`` with ``k = round(log|step| norm)``, the
      unique element of the group that brings the norm into ``[|step|**-1/2, |step|**1/2)``.
      (A negative ``step`` also fixes the sign that goes with each power.)
    """
    if inv.kind != "monomial":
        raise ValueError("canonical_scale is for monomial groups")
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    if inv.positive == "all":
        return safe
    if inv.positive == "trivial":
        return torch.ones_like(norm)
    base = math.log(abs(inv.step))
    k = torch.floor(torch.log(safe) / base + 0.5)
    return torch.pow(torch.full_like(norm, inv.step), k)
