"""The public kernel API: :func:`gram` (the Gram matrices the CKA measures use),
:func:`hsic`, :func:`kernel_cka` and :func:`center_gram`, so that a user can build CKA with
a kernel of their own or inspect the matrices behind a value."""

from __future__ import annotations

import math

import numpy as np
import torch

from ._features import (DEAD_RTOL, as_features, channel_exponents, check_layout, compute_dtype, safe_scale, scales_channels,
                        times_channel_powers, times_power_of_two)
from ._hsic import center_gram as _center, check_estimator, cka_value, hsic_terms
from ._invariance import resolve_group
from ._kernels import linear_gram
from ._prep import check_positive, check_tol

__all__ = ["KERNELS", "gram", "hsic", "kernel_cka", "center_gram"]

KERNELS = ("linear", "rbf", "laplace", "max")


def gram(X, kernel: str = "linear", *, group="relu", side: str = "post", threshold: float = 1.0,
         dead_rtol: float = DEAD_RTOL, layout=None) -> torch.Tensor:
    """The ``N x N`` Gram matrix that a CKA measure builds from features ``X``.

    Parameters
    ----------
    X : array or tensor, shape (N, C) or (N, C, H, W)
    kernel : {"linear", "rbf", "laplace", "max"}
        ``"linear"``: ``<x_i, x_j>`` of the flattened features as given (HSIC centres);
        ``"rbf"``: the kernel of :func:`rbf_cka`; ``"laplace"``: of :func:`laplace_cka`;
        ``"max"``: G-CKA's max kernel (channels centred and normalised by ``group``).
    group, side, dead_rtol
        For ``"max"`` and ``"laplace"``, as in :func:`g_cka`.
    threshold : float
        Bandwidth multiple for ``"rbf"`` and ``"laplace"``.

    Returns
    -------
    torch.Tensor
        Symmetric, in the compute dtype (float64 for numpy float64 input; float64 too when a
        kernel that keeps the features' units had to undo a rescaling of extreme inputs, see
        docs/similarity.md 8.7), on ``X``'s device.
        ``kernel_cka(gram(X, k), gram(Y, k))`` is the corresponding measure.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(20, 3))
    >>> bool(np.allclose(gram(X).numpy(), X @ X.T))
    True
    """
    if kernel not in KERNELS:
        raise ValueError(f"Argument 'kernel' must be one of {', '.join(KERNELS)}, not {kernel!r}.")
    threshold = check_positive(threshold, "threshold")
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    F = as_features(X, "X", check_layout(layout))
    inv = resolve_group(group, side) if kernel in ("laplace", "max") else None
    if scales_channels(inv):
        ce = channel_exponents(F)  # one power of two per channel, as g_cka and laplace_cka do
        F, e = times_channel_powers(F, ce), (0 if ce is None else ce)
    else:
        F, e = safe_scale(F)
    dtype = compute_dtype(F)
    from ._cka import laplace_gram, max_gram_of, rbf_gram

    if kernel == "linear":
        Fl = F.reshape(F.shape[0], -1).to(dtype)
        return _in_units(linear_gram(Fl), e)
    if kernel == "rbf":
        return rbf_gram(F, threshold, dtype)
    if kernel == "laplace":
        return laplace_gram(F, "X", inv, threshold, dead_rtol, dtype, e)
    K, _ = max_gram_of(F, "X", inv, dead_rtol, dtype, e, upper_only=False)
    if inv.kind == "monomial" and inv.positive == "trivial":
        K = _in_units(K, e)  # without scalings the kernel keeps the features' units
    return K


def _in_units(K: torch.Tensor, e: int) -> torch.Tensor:
    """A Gram matrix of features stored as ``true * 2**-e`` back in the true units: float64
    (``2**(2e)`` times a float32 matrix under- or overflows float32), or an error when even
    float64 cannot hold it."""
    if e == 0:
        return K
    K = times_power_of_two(K.to(torch.float64), 2 * e)
    if not bool(torch.isfinite(K).all()):
        raise ValueError(f"Argument 'X': its Gram matrix does not fit float64 (features of magnitude about 2**{e}); "
                         "rescale X, or use a kernel that normalises it.")
    return K


def _matrix(K, name: str) -> torch.Tensor:
    if isinstance(K, np.ndarray):
        K = torch.from_numpy(np.ascontiguousarray(K))
    if not isinstance(K, torch.Tensor):
        raise TypeError(f"Argument {name!r} must be a square matrix (numpy array or tensor), not {type(K).__name__}.")
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"Argument {name!r} must be a square N x N matrix, not shape {tuple(K.shape)}.")
    if not bool(torch.isfinite(K).all()):
        raise ValueError(f"Argument {name!r} contains NaN or infinite entries.")
    return K.detach().to(torch.float64)


def _terms(K, L, estimator):
    """The HSIC terms of ``K 2**-ek`` and ``L 2**-el`` (rescaled so that their products
    neither under- nor overflow), and ``(ek, el)``."""
    estimator = check_estimator(estimator)
    K, L = _matrix(K, "K"), _matrix(L, "L")
    if K.shape != L.shape:
        raise ValueError(f"Arguments 'K' and 'L' must have the same shape, not {tuple(K.shape)} and {tuple(L.shape)}.")
    if L.device != K.device:
        L = L.to(K.device)
    (K, ek), (L, el) = safe_scale(K), safe_scale(L)
    return hsic_terms(K.clone(), L.clone(), estimator=estimator), (ek, el)  # hsic_terms zeroes diagonals in place


def hsic(K, L, estimator: str = "unbiased") -> float:
    """HSIC of two ``N x N`` kernel matrices of the same samples.

    ``"unbiased"``: Song et al.'s U-statistic HSIC_1 (N >= 4; the diagonals are not used);
    ``"biased"``: ``tr(K H L H) / (N-1)^2`` with ``H = I - 11^T / N`` (Gretton et al. 2005).
    Computed in float64.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(10, 2)); K = X @ X.T
    >>> H = np.eye(10) - 1 / 10
    >>> bool(np.isclose(hsic(K, K, "biased"), np.trace(K @ H @ K @ H) / 81))
    True
    """
    (_, _, kl), (ek, el) = _terms(K, L, estimator)
    try:
        return math.ldexp(kl, ek + el)
    except OverflowError:
        raise ValueError("hsic: the value overflows float64; rescale K or L.") from None


def kernel_cka(K, L, estimator: str = "unbiased") -> float:
    """CKA of two kernel matrices: ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``, in [-1, 1]."""
    return cka_value(*_terms(K, L, estimator)[0], "kernel_cka")  # CKA ignores the scale of each side


def center_gram(K, estimator: str = "unbiased") -> torch.Tensor:
    """The centred float64 matrix whose Frobenius inner products give HSIC.

    ``"unbiased"``: the U-centred matrix (Szekely and Rizzo 2014; zero diagonal), with
    ``hsic(K, L) = <U(K), U(L)> / (N (N-3))``; ``"biased"``: ``H K H``, with
    ``hsic(K, L, "biased") = <HKH, HLH> / (N-1)^2``. Centring each matrix once and taking
    inner products is how many layers are compared at once (:func:`layer_similarity`).
    """
    estimator = check_estimator(estimator)
    K = _matrix(K, "K")
    if estimator == "unbiased" and K.shape[0] < 4:
        raise ValueError(f"the unbiased HSIC estimator needs N >= 4 samples, got N={K.shape[0]}")
    return _center(K, estimator)
