"""Unbiased HSIC (Song et al. 2012; Nguyen, Raghu and Kornblith 2021, eq. 3) and CKA from Gram matrices.

For N x N kernel matrices with their diagonals set to zero (K~, L~),

.. math::

    \\mathrm{HSIC}_1(K, L) = \\frac{1}{N(N-3)} \\Big[ \\mathrm{tr}(\\tilde K \\tilde L)
        + \\frac{1^T \\tilde K 1 \\; 1^T \\tilde L 1}{(N-1)(N-2)}
        - \\frac{2}{N-2} 1^T \\tilde K \\tilde L 1 \\Big].

It equals the Frobenius inner product of the U-centred matrices divided by N(N-3), so
HSIC_1(K, K) >= 0 for every symmetric K (positive definite or not) and Cauchy-Schwarz gives
|CKA| <= 1; it does not give CKA >= 0: the unbiased estimator of a zero dependence is
negative about half of the time.
"""

from __future__ import annotations

import torch

__all__ = ["hsic_terms", "cka_from_grams"]

#: Rows of an N x N matrix converted to float64 at once.
_ROWS = 1 << 21


def hsic_terms(K: torch.Tensor, L: torch.Tensor, upper: bool = False) -> tuple[float, float, float]:
    """``(HSIC_1(K, K), HSIC_1(L, L), HSIC_1(K, L))`` in float64, row block by row block.

    Diagonals are ignored. With ``upper`` only the strictly upper triangles of the symmetric
    matrices ``K`` and ``L`` are read (the rest may hold anything); otherwise the diagonals
    are overwritten with zeros in place.
    """
    n = K.shape[0]
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs N >= 4 samples, got N={n}")
    if not upper:
        K.fill_diagonal_(0)
        L.fill_diagonal_(0)
    kk = ll = kl = 0.0
    rk = torch.zeros(n, dtype=torch.float64, device=K.device)
    rl = torch.zeros(n, dtype=torch.float64, device=K.device)
    step = max(1, _ROWS // n)
    for s in range(0, n, step):
        e = min(n, s + step)
        if upper:
            # Rows s:e, columns s: (the strictly lower part of this slab is zeroed by triu).
            k = torch.triu(K[s:e, s:].to(torch.float64), diagonal=1)
            m = torch.triu(L[s:e, s:].to(torch.float64), diagonal=1)
            rk[s:] += k.sum(dim=0)
            rl[s:] += m.sum(dim=0)
        else:
            k = K[s:e].to(torch.float64)
            m = L[s:e].to(torch.float64)
        kk += float(torch.sum(k * k))
        ll += float(torch.sum(m * m))
        kl += float(torch.sum(k * m))
        rk[s:e] += k.sum(dim=1)
        rl[s:e] += m.sum(dim=1)
    if upper:
        kk, ll, kl = 2 * kk, 2 * ll, 2 * kl
    sk, sl = float(rk.sum()), float(rl.sum())

    def h(trace, a, b, ra, rb):
        return (trace + a * b / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(ra @ rb)) / (n * (n - 3))

    return h(kk, sk, sk, rk, rk), h(ll, sl, sl, rl, rl), h(kl, sk, sl, rk, rl)


def cka_value(hkk: float, hll: float, hkl: float, what: str = "") -> float:
    """hkl / sqrt(hkk hll), with an error when one side has no variation at all."""
    if not hkk > 0 or not hll > 0:
        side = "X" if not hkk > 0 else "Y"
        raise ValueError(
            f"{what + ': ' if what else ''}the kernel matrix of {side} has no variation between samples "
            "(HSIC_1 = 0): CKA is undefined."
        )
    v = hkl / (hkk * hll) ** 0.5
    # Rounding can push an exact 1 slightly past it; the estimator itself is bounded by 1.
    return float(min(1.0, max(-1.0, v)))


def cka_from_grams(K: torch.Tensor, L: torch.Tensor, what: str = "", upper: bool = False) -> float:
    return cka_value(*hsic_terms(K, L, upper=upper), what=what)
