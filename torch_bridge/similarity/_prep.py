"""Shared preparation of feature pairs: validation, channel statistics, normalisation,
streamed channel cross-correlations and whitening."""

from __future__ import annotations

import math

import torch

from ._features import (ChannelStats, as_features, canonical_scale, channel_exponents, channel_stats, check_layout,
                        check_pair, compute_dtype, row_batches, safe_scale, scales_channels, times_channel_powers)
from ._invariance import Invariance

__all__ = [
    "channel_covariances", "check_positive", "check_tol", "flat", "live_stats", "median",
    "normalised_channels", "prepare", "whitened_features", "whitener",
]

#: Relative eigenvalue cut-off below which a direction of the channel covariance is
#: treated as absent (rank deficiency) when whitening for general-linear groups.
WHITEN_RTOL = 1e-10


def check_tol(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < 1):
        raise ValueError(f"Argument {name!r} must be a number in [0, 1), not {value!r}.")
    return float(value)


def check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"Argument {name!r} must be a positive number, not {value!r}.")
    return float(value)


def live_stats(X: torch.Tensor, name: str, center: bool, dead_rtol: float) -> ChannelStats:
    st = channel_stats(X, center, dead_rtol)
    if not bool(st.live.any()):
        what = "constant" if center else "zero"
        raise ValueError(
            f"Argument {name!r}: every one of its {X.shape[1]} channels is {what} (dead); there is nothing to compare."
        )
    return st


def normalised_channels(X, name, inv: Invariance, center: bool, dead_rtol: float, dtype, exponent: int = 0,
                        stats: ChannelStats | None = None) -> torch.Tensor:
    """Live channels, centred if asked and divided by their canonical scale, as ``(C, N, P)``.

    ``exponent``: ``X`` holds the true features times ``2**-exponent`` (:func:`prepare`).
    ``stats``: channel statistics to use instead of those of ``X`` (minibatches use the
    statistics of the whole data set)."""
    st = live_stats(X, name, center, dead_rtol) if stats is None else stats
    live = st.live
    mean = st.mean[live][None, :, None]
    inv_scale = (1.0 / canonical_scale(st.norm, inv, exponent)[live])[None, :, None]
    # Statistics are float64. They are applied in the compute dtype when the factors fit it
    # comfortably, else in float64 (1 / scale of a channel far smaller than the largest one
    # need not fit float32 even when the normalised values do).
    work = dtype
    if dtype != torch.float64:
        lo, hi = float(inv_scale.abs().min()), float(inv_scale.abs().max())
        if not (2.0**-100 < lo and hi < 2.0**100):
            work = torch.float64
    mean, inv_scale = mean.to(work), inv_scale.to(work)
    n, _, p = X.shape
    c = int(live.sum())
    Z = torch.empty((c, n, p), dtype=dtype, device=X.device)
    all_live = bool(live.all())
    for sl in row_batches(n, X.shape[1] * p):
        b = X[sl] if all_live else X[sl][:, live]
        Z[:, sl] = ((b.to(work) - mean) * inv_scale).to(dtype).permute(1, 0, 2)
    return Z


def channel_covariances(X, Y, center: bool, dead_rtol: float, with_auto: bool):
    """Streamed float64 ``Cxy = sum_{n,p} x_c y_c'`` over live channels (centred if asked),
    and ``Cxx``, ``Cyy`` when ``with_auto``; plus the two ChannelStats."""
    sx = live_stats(X, "X", center, dead_rtol)
    sy = live_stats(Y, "Y", center, dead_rtol)
    lx, ly = sx.live, sy.live
    mx, my = sx.mean[lx][None, :, None], sy.mean[ly][None, :, None]
    dtype = compute_dtype(X, Y)
    cx, cy = int(lx.sum()), int(ly.sum())
    dev = X.device
    Cxy = torch.zeros((cx, cy), dtype=torch.float64, device=dev)
    Cxx = torch.zeros((cx, cx), dtype=torch.float64, device=dev) if with_auto else None
    Cyy = torch.zeros((cy, cy), dtype=torch.float64, device=dev) if with_auto else None
    n, _, p = X.shape
    for sl in row_batches(n, (X.shape[1] + Y.shape[1]) * p):
        xb = (X[sl][:, lx].to(torch.float64) - mx).to(dtype).permute(1, 0, 2).reshape(cx, -1)
        yb = (Y[sl][:, ly].to(torch.float64) - my).to(dtype).permute(1, 0, 2).reshape(cy, -1)
        Cxy += (xb @ yb.T).to(torch.float64)
        if with_auto:
            Cxx += (xb @ xb.T).to(torch.float64)
            Cyy += (yb @ yb.T).to(torch.float64)
    return Cxy, Cxx, Cyy, sx, sy


def whitener(C: torch.Tensor) -> torch.Tensor:
    """``W`` (c x r) with ``W^T C W = I_r`` on the range of the PSD matrix ``C``."""
    vals, vecs = torch.linalg.eigh(C)
    keep = vals > WHITEN_RTOL * vals.max().clamp(min=0)
    if not bool(keep.any()):
        raise ValueError("the channel covariance is zero: nothing to compare")
    return vecs[:, keep] / vals[keep].sqrt()[None, :]


def whitened_features(X, name, center, dead_rtol) -> torch.Tensor:
    """Channels of ``X`` linearly transformed (the same map at every position) so that their
    covariance over samples and positions is the identity on its range: ``(r, N, P)``."""
    st = live_stats(X, name, center, dead_rtol)
    live = st.live
    mean = st.mean[live][None, :, None]
    n, _, p = X.shape
    c = int(live.sum())
    C = torch.zeros((c, c), dtype=torch.float64, device=X.device)
    for sl in row_batches(n, X.shape[1] * p):
        b = (X[sl][:, live].to(torch.float64) - mean).permute(1, 0, 2).reshape(c, -1)
        C += b @ b.T
    W = whitener(C)
    dtype = X.dtype
    Z = torch.empty((W.shape[1], n, p), dtype=dtype, device=X.device)
    for sl in row_batches(n, X.shape[1] * p):
        b = X[sl][:, live].to(torch.float64) - mean
        Z[:, sl] = torch.einsum("ncp,cr->rnp", b, W).to(dtype)
    return Z


def flat(Z: torch.Tensor) -> torch.Tensor:
    """``(C, N, P)`` channel-major features as an ``(N, C*P)`` matrix."""
    return Z.permute(1, 0, 2).reshape(Z.shape[1], -1)


def prepare(X, Y, min_samples=4, layout=None, inv=None, **kw):
    """Validated ``(N, C, P)`` tensors rescaled by powers of two, and the exponents:
    ``(X', Y', ex, ey)`` with ``X = X' 2**ex`` (see :func:`safe_scale`).

    When the group ``inv`` scales each channel (:func:`scales_channels`), each channel is
    rescaled by its own power of two instead and ``ex``, ``ey`` are ``(C,)`` tensors of
    exponents (or 0 when no channel needed it), as :func:`canonical_scale` takes them."""
    layout = check_layout(layout)
    X = as_features(X, "X", layout)
    Y = as_features(Y, "Y", layout)
    check_pair(X, Y, min_samples=min_samples, **kw)
    if scales_channels(inv):
        ex, ey = channel_exponents(X), channel_exponents(Y)
        return (times_channel_powers(X, ex), times_channel_powers(Y, ey),
                0 if ex is None else ex, 0 if ey is None else ey)
    X, ex = safe_scale(X)
    Y, ey = safe_scale(Y)
    return X, Y, ex, ey


def median(D: torch.Tensor) -> float:
    """The median of all entries, as numpy defines it (mean of the two middle values for an
    even count), by selection rather than a full sort."""
    values = D.reshape(-1)
    k = values.numel()
    lower = float(torch.kthvalue(values, (k + 1) // 2).values)
    if k % 2:
        return lower
    return 0.5 * (lower + float(torch.kthvalue(values, k // 2 + 1).values))
