"""Kernel (Gram) matrices built blockwise: the max kernel of appendix D.7.2, the Laplace
(l1) kernel of eq. (5.6), the Gaussian (RBF) kernel and the linear kernel.

All take channel-major features ``Z`` of shape ``(C, N, P)`` (channel, sample, position)
and return an ``N x N`` matrix in ``Z``'s dtype and device. Memory is the ``N x N`` result
plus one work buffer of :data:`BLOCK_ELEMENTS` entries: never ``N x N x C``.

The max kernel
--------------
``K_ij = max_c <z_i^c, z_j^c>`` where ``z_i^c`` is sample ``i``'s map of channel ``c`` (the
inner product runs over positions). For a block of rows ``I``, a block of columns ``J`` and a
block of channels ``B`` the per-channel Gram blocks are one batched matrix product
``(|B|, |I|, P) x (|B|, P, |J|)``; their maximum over ``B`` is folded into a running maximum.
Only blocks with ``J >= I`` are computed (the kernel is symmetric), so the work is about
``N^2 C P`` multiply-adds, half of the full ``2 N^2 C P`` flops of the row-by-row construction.
"""

from __future__ import annotations

import torch

__all__ = ["max_gram", "laplace_distances", "linear_gram", "sq_distances", "BLOCK_ELEMENTS"]

#: Entries of the (channels x rows x columns) work buffer: 1M floats = 4 MB in float32,
#: small enough to stay in cache between the product and the maximum.
BLOCK_ELEMENTS = 1 << 20


def _blocks(n: int, c: int, elements: int = BLOCK_ELEMENTS) -> tuple[int, int, int]:
    """Row block, column block and channel block sizes for an ``n x n`` result."""
    bj = min(n, 512)
    bi = min(n, 256)
    cb = max(1, min(c, elements // (bi * bj)))
    return bi, bj, cb


def _row_block(Z, Zt, K, i0, i1, bj, cb, reduce, buf, red, mirror=True):
    """Columns ``j >= i0`` of rows ``i0:i1`` of the kernel, and (``mirror``) their mirror image."""
    c, n, _ = Z.shape
    for j0 in range(i0, n, bj):
        j1 = min(n, j0 + bj)
        acc = K[i0:i1, j0:j1]
        for c0 in range(0, c, cb):
            c1 = min(c, c0 + cb)
            b = buf[: c1 - c0, : i1 - i0, : j1 - j0]
            torch.bmm(Z[c0:c1, i0:i1], Zt[c0:c1, :, j0:j1], out=b)
            r = red[: i1 - i0, : j1 - j0]
            if reduce == "max":
                torch.amax(b, dim=0, out=r)
            else:
                torch.sum(b, dim=0, out=r)
            if c0 == 0:
                acc.copy_(r)
            elif reduce == "max":
                torch.maximum(acc, r, out=acc)
            else:
                acc.add_(r)
        # Mirror what lies right of the row block's own columns (bj >= bi, so a column
        # block starting after i0 starts at or after i1).
        lo = max(j0, i1)
        if mirror and lo < j1:
            K[lo:j1, i0:i1] = acc[:, lo - j0:].transpose(0, 1)


def _symmetric_blockwise(Z: torch.Tensor, reduce: str, workers: int | None = None, mirror: bool = True) -> torch.Tensor:
    c, n, p = Z.shape
    bi, bj, cb = _blocks(n, c)
    K = torch.empty((n, n), dtype=Z.dtype, device=Z.device)
    Zt = Z.transpose(1, 2)
    starts = list(range(0, n, bi))

    def new_buffers():
        return (torch.empty((cb, bi, bj), dtype=Z.dtype, device=Z.device),
                torch.empty((bi, bj), dtype=Z.dtype, device=Z.device))

    if Z.device.type != "cpu":
        buf, red = new_buffers()
        for i0 in starts:
            _row_block(Z, Zt, K, i0, min(n, i0 + bi), bj, cb, reduce, buf, red, mirror)
        return K
    # On CPU the row blocks are shared out between threads that each run single-threaded
    # products: torch's own intra-op threading synchronises its threads at every one of
    # the thousands of small products, which on a busy machine stalls on descheduled
    # threads (measured 20x slower on the 2-core development machine under load).
    # Row blocks write disjoint parts of K.
    import threading
    from concurrent.futures import ThreadPoolExecutor

    before = torch.get_num_threads()
    workers = before if workers is None else workers
    local = threading.local()

    def task(i0):
        if not hasattr(local, "bufs"):
            local.bufs = new_buffers()
        _row_block(Z, Zt, K, i0, min(n, i0 + bi), bj, cb, reduce, *local.bufs, mirror)

    torch.set_num_threads(1)
    try:
        if workers <= 1 or len(starts) < 2:
            for i0 in starts:
                task(i0)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(task, starts))  # the first row blocks are the longest: they go first
    finally:
        torch.set_num_threads(before)
    return K


def max_gram(Z: torch.Tensor, upper_only: bool = False) -> torch.Tensor:
    """``K_ij = max_c sum_p Z[c, i, p] Z[c, j, p]`` (the max kernel, appendix D.7.2).

    With ``upper_only`` only the entries with ``j > i`` are guaranteed (the rest of the
    matrix is left unwritten), which is all that :func:`hsic_terms` with ``upper=True``
    reads: it saves the transposed copy of every block.
    """
    return _symmetric_blockwise(Z.contiguous(), "max", mirror=not upper_only)


def linear_gram(F: torch.Tensor) -> torch.Tensor:
    """``F F^T`` for ``F`` of shape ``(N, D)``."""
    return F @ F.transpose(0, 1)


def sq_distances(F: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows of ``F`` (via the Gram matrix, clamped at 0)."""
    G = linear_gram(F)
    d = torch.diagonal(G).clone()
    D = d[:, None] + d[None, :] - 2 * G
    D.clamp_(min=0)
    D.fill_diagonal_(0)
    return D


def laplace_distances(Z: torch.Tensor) -> torch.Tensor:
    """``D_ij = sum_c ||Z[c, i] - Z[c, j]||_2`` (the l1 norm across channels of the l2 norms
    within channels; the plain l1 distance when there is one position per channel).

    Distances are computed directly, not from Gram matrices, so that nearby samples keep
    their relative accuracy.
    """
    c, n, p = Z.shape
    D = torch.zeros((n, n), dtype=Z.dtype, device=Z.device)
    if p == 1:
        F = Z[:, :, 0].transpose(0, 1).contiguous()
        step = max(1, (1 << 22) // max(1, n * c))
        for s in range(0, n, step):
            D[s:s + step] = torch.cdist(F[s:s + step], F, p=1)
        return D
    cb = max(1, min(c, (1 << 22) // max(1, n * n)))
    step = max(1, (1 << 22) // max(1, n * min(c, cb)))
    for c0 in range(0, c, cb):
        zc = Z[c0:c0 + cb]
        for s in range(0, n, step):
            d = torch.cdist(zc[:, s:s + step], zc, p=2, compute_mode="donot_use_mm_for_euclid_dist")
            D[s:s + step] += d.sum(dim=0)
    return D
