"""CKA over minibatches (Nguyen, Raghu and Kornblith 2021) and the layer x layer CKA matrix
of two models, streamed batch by batch.

For each batch ``b`` of ``n_b`` samples the centred Gram matrices of both sides are formed
(:func:`center_gram`), and the three HSIC terms are accumulated as averages weighted by
``n_b``; CKA is ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` of the averages. Memory holds
one batch of features and, for the matrix, one ``n_b x n_b`` matrix per layer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ._features import (DEAD_RTOL, ChannelStats, SimilarityWarning, as_features, check_layout, compute_dtype,
                        channel_exponents, row_batches, safe_scale, scales_channels, times_channel_powers,
                        times_power_of_two)
from ._hsic import center_gram, check_estimator, hsic_normaliser, min_samples
from ._invariance import Invariance, resolve_group
from ._kernels import linear_gram, max_gram
from ._prep import check_tol, normalised_channels, whitener

__all__ = ["BatchedCKA", "minibatch_cka", "BATCH_MEASURES"]

#: Measures that can be averaged over minibatches (their kernels need no data-dependent
#: bandwidth; G-CKA's channel statistics come from a first pass over all batches).
BATCH_MEASURES = ("linear_cka", "g_cka")


def check_batch_measure(measure) -> str:
    if measure not in BATCH_MEASURES:
        raise ValueError(f"Argument 'measure' must be one of {', '.join(BATCH_MEASURES)}, not {measure!r}.")
    return measure


def check_finite_terms(what: str, *values) -> None:
    """Every batch shares the power of two of the first one (:meth:`GramMaker.features`); a
    later batch far larger than the first can overflow. Say so rather than return NaN."""
    if not all(math.isfinite(float(v)) for v in values):
        raise ValueError(f"{what}: the HSIC terms overflowed (a batch is far larger in magnitude than the first "
                         "one, whose power of two scales all of them); rescale the features.")


def warn_dropped(what: str, dropped: int, need: int) -> None:
    if dropped:
        warnings.warn(f"{what}: {dropped} batch(es) with fewer than {need} samples were left out.",
                      SimilarityWarning, stacklevel=3)


@dataclass(frozen=True)
class BatchedCKA:
    """CKA estimated from minibatches.

    Attributes
    ----------
    value : float
        The ratio of the batch-size-weighted averages of the per-batch HSIC terms.
    stderr : float
        Jackknife standard error over batches (leave one batch out; NaN for one batch).
        With the unbiased estimator it bounds the typical difference from the full-batch
        value on the same samples (docs/similarity.md, "CKA in minibatches").
    measure, estimator : str
    samples, batches : int
        What was used; ``dropped`` batches were too small for the estimator (N < 4 for the
        unbiased one) and are left out (a warning says so).
    """

    value: float
    stderr: float
    measure: str
    estimator: str
    samples: int
    batches: int
    dropped: int = 0

    def __float__(self) -> float:
        return self.value


class GramMaker:
    """Centred per-batch Gram matrices of one side (one layer), with the statistics of a
    first pass where the kernel needs them (G-CKA's channel means and norms, or the channel
    covariance for general-linear groups)."""

    def __init__(self, measure: str, inv: Invariance | None, estimator: str, dead_rtol: float, layout, name: str):
        self.measure, self.inv, self.estimator = measure, inv, estimator
        self.dead_rtol, self.layout, self.name = dead_rtol, layout, name
        self.exponent = None  # one power of two for every batch, from the first batch
        self._channel_e = None  # or one per channel (groups with per-channel scalings)
        self._sum = self._sq = self._outer = None
        self._count = 0
        self.stats = self.W = None

    @property
    def needs_stats(self) -> bool:
        return self.measure == "g_cka"

    def features(self, raw) -> torch.Tensor:
        F = as_features(raw, self.name, self.layout)
        if scales_channels(self.inv):
            # The group scales each channel: one power of two per channel, from the first batch.
            if self.exponent is None:
                self._channel_e = channel_exponents(F)
                self.exponent = 0 if self._channel_e is None else self._channel_e
            return times_channel_powers(F, self._channel_e)
        if self.exponent is None:
            _, self.exponent = safe_scale(F)
        return times_power_of_two(F, -self.exponent)

    def observe(self, raw) -> None:
        """First pass: accumulate float64 channel sums (and outer products for GL groups)."""
        F = self.features(raw)
        n, c, p = F.shape
        if self._sum is None:
            self._sum = torch.zeros(c, dtype=torch.float64, device=F.device)
            self._sq = torch.zeros(c, dtype=torch.float64, device=F.device)
            if self.inv.kind == "general_linear":
                self._outer = torch.zeros((c, c), dtype=torch.float64, device=F.device)
        if F.shape[1] != self._sum.shape[0]:
            raise ValueError(f"Argument {self.name!r}: batches have {self._sum.shape[0]} and {c} channels.")
        for sl in row_batches(n, c * p):
            b = F[sl].to(torch.float64)
            self._sum += b.sum(dim=(0, 2))
            self._sq += b.square().sum(dim=(0, 2))
            if self._outer is not None:
                m = b.permute(1, 0, 2).reshape(c, -1)
                self._outer += m @ m.T
        self._count += n * p

    def finish(self) -> None:
        if self._sum is None:
            raise ValueError(f"Argument {self.name!r}: there were no batches.")
        mean = self._sum / self._count
        sq = (self._sq - self._count * mean.square()).clamp(min=0)
        raw = self._sq.sqrt()
        norm = sq.sqrt()
        live = (norm > self.dead_rtol * raw) & (raw > 0)
        if not bool(live.any()):
            raise ValueError(f"Argument {self.name!r}: every one of its channels is constant (dead); there is nothing to compare.")
        self.stats = ChannelStats(mean, norm, live)
        if self._outer is not None:
            lv = live
            C = self._outer[lv][:, lv] - self._count * torch.outer(mean[lv], mean[lv])
            self.W = whitener(C)

    def gram(self, raw) -> torch.Tensor:
        """The centred float64 Gram matrix of one batch."""
        F = self.features(raw)
        dtype = compute_dtype(F)
        if self.measure == "linear_cka":
            G = F.reshape(F.shape[0], -1).to(dtype)
            G = G - G.mean(dim=0, keepdim=True)     # HSIC ignores shifts; centring first keeps digits
            K = linear_gram(G)
        elif self.inv.kind == "general_linear":
            st = self.stats
            b = F[:, st.live].to(torch.float64) - st.mean[st.live][None, :, None]
            Z = torch.einsum("ncp,cr->nrp", b, self.W).reshape(F.shape[0], -1)
            K = linear_gram(Z)
        else:
            Z = normalised_channels(F, self.name, self.inv, True, self.dead_rtol, dtype, self.exponent, self.stats)
            K = max_gram(Z)
        return center_gram(K, self.estimator)


class Accumulator:
    """Batch-size-weighted sums of per-batch HSIC terms, kept per batch for the jackknife."""

    def __init__(self):
        self.terms: list[tuple[int, float, float, float]] = []

    def add(self, n: int, Kc: torch.Tensor, Lc: torch.Tensor, estimator: str) -> None:
        d = hsic_normaliser(n, estimator)
        row = (n, float((Kc * Kc).sum()) / d, float((Lc * Lc).sum()) / d, float((Kc * Lc).sum()) / d)
        check_finite_terms("minibatch_cka", *row[1:])
        self.terms.append(row)

    @staticmethod
    def _ratio(rows) -> float:
        w = sum(r[0] for r in rows)
        kk = sum(r[0] * r[1] for r in rows) / w
        ll = sum(r[0] * r[2] for r in rows) / w
        kl = sum(r[0] * r[3] for r in rows) / w
        if not kk > 0 or not ll > 0:
            return float("nan")
        return kl / math.sqrt(kk * ll)

    def result(self, what: str) -> tuple[float, float]:
        if not self.terms:
            raise ValueError(f"{what}: no batch had enough samples.")
        value = self._ratio(self.terms)
        if math.isnan(value):
            kk = sum(r[1] for r in self.terms)
            side = "X" if not kk > 0 else "Y"
            raise ValueError(f"{what}: the kernel matrices of {side} have no variation between samples: CKA is undefined.")
        k = len(self.terms)
        if k < 2:
            return value, float("nan")
        loo = [self._ratio(self.terms[:i] + self.terms[i + 1:]) for i in range(k)]
        mean = sum(loo) / k
        return value, math.sqrt((k - 1) / k * sum((v - mean) ** 2 for v in loo))


def check_reiterable(data, name: str, measure: str) -> None:
    if iter(data) is data:
        raise ValueError(
            f"Argument {name!r}: {measure} in minibatches takes two passes over the data (channel statistics, "
            "then kernels); give a list, a tensor or a DataLoader, not a one-shot iterator."
        )


def minibatch_cka(pairs, measure: str = "linear_cka", *, group="relu", side: str = "post",
                  estimator: str = "unbiased", dead_rtol: float = DEAD_RTOL, layout=None) -> BatchedCKA:
    """CKA from minibatches of paired features (Nguyen, Raghu and Kornblith 2021, sec. 3.1).

    Each batch ``(X_b, Y_b)`` (the same ``n_b`` inputs through both networks) gives the three
    HSIC terms of its own Gram matrices; they are averaged over batches with weights ``n_b``
    and CKA is formed from the averages. With the unbiased estimator every batch's terms are
    unbiased for the population HSIC terms, so the value estimates the same population CKA
    as the full-batch :func:`linear_cka` / :func:`g_cka`, using only within-batch pairs of
    samples; memory is one batch (docs/similarity.md gives the error against the full-batch
    value). With ``estimator="biased"`` the average keeps the O(1/n_b) bias of each batch.

    Parameters
    ----------
    pairs : iterable of (X_b, Y_b)
        Arrays or tensors of shape ``(n_b, C, ...)`` and ``(n_b, C', ...)``. For ``g_cka`` it
        is read twice (channel means and norms over all batches first, as the full-batch
        measure normalises with them), so it must be a list, tuple or re-iterable loader.
    measure : {"linear_cka", "g_cka"}
    group, side, dead_rtol
        As in :func:`g_cka` (``g_cka`` only).
    estimator : {"unbiased", "biased"}
    layout : None, "channels_first" or "channels_last"

    Returns
    -------
    BatchedCKA
        ``float(result)`` is the value; ``result.stderr`` its jackknife error over batches.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(400, 6))
    >>> r = minibatch_cka([(X[i:i + 100], 2 * X[i:i + 100]) for i in range(0, 400, 100)])
    >>> round(r.value, 6), r.batches
    (1.0, 4)
    """
    measure = check_batch_measure(measure)
    estimator = check_estimator(estimator)
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    layout = check_layout(layout)
    inv = resolve_group(group, side) if measure == "g_cka" else None
    gx = GramMaker(measure, inv, estimator, dead_rtol, layout, "X")
    gy = GramMaker(measure, inv, estimator, dead_rtol, layout, "Y")

    def split(item):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"Argument 'pairs' must yield (X_b, Y_b) pairs, not {type(item).__name__}.")
        for b, name in zip(item, ("X_b", "Y_b")):
            if not isinstance(b, (np.ndarray, torch.Tensor)) or b.ndim < 1:
                raise TypeError(f"Argument 'pairs' must yield (X_b, Y_b) pairs of arrays or tensors, "
                                f"but {name} is {type(b).__name__}.")
        return item

    if gx.needs_stats:
        check_reiterable(pairs, "pairs", measure)
        for item in pairs:
            xb, yb = split(item)
            gx.observe(xb)
            gy.observe(yb)
        gx.finish()
        gy.finish()
    acc, dropped, need = Accumulator(), 0, min_samples(estimator)
    for item in pairs:
        xb, yb = split(item)
        n = int(xb.shape[0])
        if int(yb.shape[0]) != n:
            raise ValueError(f"minibatch_cka: a batch has N={n} samples in X but N={int(yb.shape[0])} in Y.")
        if n < need:
            dropped += 1
            continue
        acc.add(n, gx.gram(xb), gy.gram(yb), estimator)
    warn_dropped("minibatch_cka", dropped, need)
    value, err = acc.result("minibatch_cka")
    return BatchedCKA(float(min(1.0, max(-1.0, value))), err, measure, estimator,
                      sum(t[0] for t in acc.terms), len(acc.terms), dropped)
