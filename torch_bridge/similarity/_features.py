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

__all__ = ["as_features", "check_pair", "ChannelStats", "channel_stats", "row_batches", "LAYOUTS",
           "SimilarityWarning", "check_layout", "safe_scale", "times_power_of_two", "scales_channels",
           "channel_exponents", "times_channel_powers"]

#: Elements of one batch of rows when streaming over samples (about 32 MB in float64).
BATCH_ELEMENTS = 1 << 22
#: Default relative tolerance under which a centred channel counts as constant (dead).
DEAD_RTOL = 1e-6
#: Inputs whose largest magnitude lies outside [2**-SAFE_EXPONENT, 2**SAFE_EXPONENT] are
#: rescaled by a power of two before anything is squared (exact, and every measure is
#: invariant under it; see :func:`safe_scale`).
SAFE_EXPONENT = 16

#: Accepted ``layout`` names -> where the channel axis is.
LAYOUTS = {
    "channels_first": "channels_first", "NC": "channels_first", "NCHW": "channels_first",
    "NCL": "channels_first", "NCT": "channels_first",
    "channels_last": "channels_last", "NHWC": "channels_last", "NTC": "channels_last",
    "NLC": "channels_last", "NWC": "channels_last",
}


class SimilarityWarning(UserWarning):
    """A similarity computation that runs but may not mean what the caller thinks
    (ambiguous layout, a group that does not match the features' activation, dropped batches)."""


def check_layout(layout):
    """The canonical layout name (``"channels_first"`` or ``"channels_last"``), or None."""
    if layout is None:
        return None
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(
            f"Argument 'layout' must be one of {', '.join(map(repr, LAYOUTS))} or None, not {layout!r}."
        )
    return LAYOUTS[layout]


def safe_scale(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(t * 2**-e, e)`` with the largest magnitude of the result in [1/2, 1), or ``(t, 0)``
    when ``t`` is already within [2**-SAFE_EXPONENT, 2**SAFE_EXPONENT] (no copy).

    A power of two is exact in binary floating point (up to subnormal underflow of entries
    below 2**-1074 of the largest, float64, or 2**-149, float32), so the rescaled features
    are the same numbers in other units. Squaring 1e-30 in float32 or 1e200 in float64
    under- or overflows; the rescaled values do not.
    """
    lo, hi = torch.aminmax(t)
    m = max(abs(float(lo)), abs(float(hi)))
    if m == 0:
        return t, 0
    e = math.frexp(m)[1]
    if -SAFE_EXPONENT <= e <= SAFE_EXPONENT:
        return t, 0
    return times_power_of_two(t, -e), e


def scales_channels(inv) -> bool:
    """Whether the group ``inv`` scales each channel separately (positive scalings
    ``(0, oo)`` or powers of a step, or general linear), so that each channel may be stored
    with its own power of two (:func:`channel_exponents`): the measure divides every channel
    by a scale of its own, computed from its true norm (:func:`canonical_scale` takes the
    per-channel exponents). Groups without scalings compare the channels' sizes, and a
    channel far below the largest is negligible there: one global power serves them."""
    return inv is not None and (inv.kind == "general_linear" or inv.positive != "trivial")


def channel_exponents(t: torch.Tensor) -> torch.Tensor | None:
    """Per-channel exponents ``e_c`` (int64, shape ``(C,)``) with the largest magnitude of
    channel ``c`` of the ``(N, C, P)`` tensor in ``[2**(e_c - 1), 2**e_c)``, or None when every
    channel lies within ``[2**-SAFE_EXPONENT, 2**SAFE_EXPONENT]`` (nothing to do).

    One global power of two cannot help features whose channels differ by more than the
    dtype's range allows (float32 channels of 1e-25 and 1e20: the product of the large one
    with itself overflows, and dividing everything by it sends the small one below 2**-149);
    for groups with per-channel scalings each channel gets its own power of two."""
    m = torch.maximum(t.amax(dim=(0, 2)), -t.amin(dim=(0, 2))).to(torch.float64)
    e = torch.frexp(m).exponent.to(torch.int64)
    e = torch.where(m > 0, e, torch.zeros_like(e))
    if bool(((e >= -SAFE_EXPONENT) & (e <= SAFE_EXPONENT)).all()):
        return None
    return e


def times_channel_powers(t: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
    """``t * 2**-e_c`` channel by channel (exact), in two halves so that each factor is a
    normal number of ``t``'s dtype."""
    if e is None:
        return t
    half = torch.div(e, 2, rounding_mode="floor")
    out = t
    for k in (half, e - half):
        f = torch.ldexp(torch.ones(k.shape, dtype=torch.float64, device=t.device), -k.to(t.device))
        out = out * f.to(t.dtype)[None, :, None]
    return out


def times_power_of_two(t: torch.Tensor, k: int) -> torch.Tensor:
    """``t * 2**k`` (a new tensor unless k == 0); 2**k itself may not be representable in
    ``t``'s dtype, so it is applied in steps of at most 2**60."""
    out = t
    while k:
        step = max(-60, min(60, k))
        out = out * (2.0 ** step)
        k -= step
    return out


def as_features(x, name: str, layout=None) -> torch.Tensor:
    """A ``(N, C, P)`` floating tensor from a numpy array or torch tensor.

    float16/bfloat16 become float32, integers and booleans float64; the device is kept.
    ``layout`` (canonical, from :func:`check_layout`): ``"channels_last"`` moves the last
    axis to the channel position (``(N, T, C)`` tokens or ``(N, H, W, C)`` maps); None reads
    channels at axis 1 and warns when a 3-D array looks token-major (``(N, T, C)`` with
    ``T > C``), unless the array came from :func:`collect_features` on a module whose
    layout is known.
    """
    from ._provenance import lookup

    info = lookup(x)
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
    if layout is None and info is not None:
        layout = info.layout
    if layout is None and t.ndim == 3 and t.shape[1] > t.shape[2]:
        import warnings

        warnings.warn(
            f"Argument {name!r} of shape {tuple(t.shape)} is read as (N, C={t.shape[1]}, L={t.shape[2]}) with "
            "channels at axis 1; if it holds token features (N, T, C), pass layout='channels_last' "
            "(layout='channels_first' silences this warning).",
            SimilarityWarning, stacklevel=4,
        )
    if layout == "channels_last" and t.ndim > 2:
        t = t.movedim(-1, 1)
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
        why = ("the unbiased HSIC estimator needs N >= 4 samples (it divides by N(N-3))" if min_samples == 4
               else f"this measure needs N >= {min_samples} samples")
        raise ValueError(f"{what}{why}, got N={X.shape[0]}.")
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


def canonical_scale(norm: torch.Tensor, inv: Invariance, exponent=0, reference: int | None = None) -> torch.Tensor:
    """The divisor of each channel that removes the scalings of ``inv`` (float64).

    ``norm`` is measured on features stored as ``true * 2**-exponent`` (:func:`safe_scale`;
    ``exponent`` an int, or a tensor of one exponent per channel, :func:`channel_exponents`,
    for groups that scale channels); the divisor is in the same units. ``reference`` (for groups without scalings, whose
    measures compare the scales of X and Y) is the common exponent both sides are brought
    to: the divisor is ``2**(reference - exponent)``.

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
        if isinstance(exponent, torch.Tensor):
            raise ValueError("canonical_scale: groups without scalings take one exponent for all channels")
        ref = exponent if reference is None else reference
        # Beyond 2**1000 the smaller side is 0 next to the other in float64 anyway.
        return torch.full_like(norm, math.ldexp(1.0, min(ref - exponent, 1000)))
    base = math.log(abs(inv.step))
    if isinstance(exponent, torch.Tensor):
        exponent = exponent.to(device=norm.device, dtype=torch.float64)  # not float32 by promotion
    # k from the true norm (log(norm) + exponent log 2); the divisor step**k in stored units.
    k = torch.floor((torch.log(safe) + exponent * math.log(2.0)) / base + 0.5)
    magnitude = torch.exp(k * base - exponent * math.log(2.0))
    if inv.step < 0:
        magnitude = torch.where(torch.remainder(k, 2) == 1, -magnitude, magnitude)
    return magnitude
