"""Data for activation matching: batches, streamed per-site statistics, and what they cannot decide.

:func:`~._align.align` with ``method="activations"`` reads, at every site it can, the output of
the site's producing module on both models (the units' pre-activations) and matches units by
their correlation. Here that is done in one streamed pass over any iterable of batches:

* a batch is a tensor, a tuple/list whose first entry is the input (``(x, y)`` from a
  ``DataLoader`` over a ``TensorDataset``; a tuple of tensors as first entry is passed as
  several positional inputs) or a dict of keyword inputs (Hugging Face batches); floating-point
  tensors are moved to the models' device and floating dtype;
* per site, the two models' features ``a`` (``n x m`` per batch: units x samples, a sample
  being one input at one position) are merged into running float64 statistics on the models'
  device -- the count, both means, and the centred Gram sums :math:`\\sum (a-\\bar a)(b-\\bar b)^T`,
  :math:`\\sum (a-\\bar a)(a-\\bar a)^T`, :math:`\\sum (b-\\bar b)(b-\\bar b)^T` -- combined batch by
  batch with the pairwise update of Chan, Golub and LeVeque (no catastrophic cancellation of
  uncentred sums); the features themselves are never kept.

Whether the data can decide the element is checked per site (:class:`UnderdeterminedAlignmentWarning`):
no more samples than units; a unit constant on the data; two units of one model perfectly
correlated on the data (the data cannot tell them apart); at a site computed from the model's
inputs (a first Linear/Conv), a feature covariance of lower rank than the weights allow over
the inputs that vary on the data. The rank is compared with the weights' rank, not with
the number of units: a wide first convolution is rank-limited by its fan-in for any data. Deeper
sites get no rank test: a narrower layer upstream limits their rank whatever the data.

:func:`activation_matching` then reads the correlations in the canonical frames and solves one
assignment per permutation class; :func:`feature_distances` gives the report its distances
from the same statistics. :class:`Progress` is ``align``'s ``progress`` argument.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ._canonical import _perm_classes, _perm_element
from ._elements import MonomialElement, _as_monomial
from ._site_groups import Monomial

__all__ = ["UnderdeterminedAlignmentWarning", "SiteStats", "split_batch", "first_batch", "stream_site_stats",
           "warn_underdetermined", "activation_matching", "feature_distances", "Progress"]


class UnderdeterminedAlignmentWarning(UserWarning):
    """The data given to activation matching cannot determine a site's element."""


#: A unit is constant on the data when its standard deviation is at most this fraction of
#: its mean magnitude (or of the site's largest standard deviation).
CONSTANT_TOL = 1e-10
#: Two units are indistinguishable when their correlation is within this of +-1.
TIE_TOL = 1e-9
#: Eigenvalues of the correlation matrix below this fraction of the largest count as zero.
RANK_TOL = 1e-10


def split_batch(batch, name: str = "data"):
    """(positional inputs, keyword inputs) of one batch (see the module docstring)."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, dict):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)) and batch:
        x = batch[0]
        if isinstance(x, torch.Tensor):
            return (x,), {}
        if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) for t in x):
            return tuple(x), {}
    raise TypeError(f"Argument {name!r} must yield tensors, (input, target) tuples or dicts of keyword inputs, "
                    f"not {type(batch).__name__}" + (f" starting with {type(batch[0]).__name__}"
                                                     if isinstance(batch, (tuple, list)) and batch else "") + ".")


def _to_model(t, device, dtype):
    if isinstance(t, torch.Tensor):
        t = t.to(device)
        return t.to(dtype) if t.is_floating_point() and dtype is not None else t
    return t


def _placement(model):
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    if p is None:
        return torch.device("cpu"), None
    floats = [q for q in model.parameters() if q.is_floating_point()]
    return p.device, (floats[0].dtype if floats else None)


def first_batch(data):
    """(first batch, iterator over every batch including the first): one pass, so one-shot
    iterators (generators) work too."""
    try:
        it = iter(data)
    except TypeError:
        raise TypeError(f"Argument 'data' must be an iterable of batches (a DataLoader, a list, ...), "
                        f"not {type(data).__name__}.") from None
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("Argument 'data' yields no batch.") from None
    return first, itertools.chain([first], it)


@dataclass(eq=False)
class SiteStats:
    """Running statistics of one site's features in two models (float64, on the models' device).

    ``count``: samples; ``mean_a``, ``mean_b``: ``(n,)``; ``cab``, ``caa``, ``cbb``: centred Gram
    sums ``(n, n)``. Mutable while streaming (:meth:`update`); read-only afterwards.
    """

    count: int
    mean_a: torch.Tensor
    mean_b: torch.Tensor
    cab: torch.Tensor
    caa: torch.Tensor
    cbb: torch.Tensor
    #: per model, which inputs of a Linear/Conv producer vary on the data (:func:`_input_max`;
    #: None: other producers): an input constant on the data (a dead unit upstream, a kernel
    #: tap on the padding, a pixel equal in every image) does not count in the rank the weights allow
    inputs_a: torch.Tensor | None = None
    inputs_b: torch.Tensor | None = None

    @classmethod
    def of(cls, a: torch.Tensor, b: torch.Tensor) -> "SiteStats":
        ma, mb = a.mean(1), b.mean(1)
        xa, xb = a - ma[:, None], b - mb[:, None]
        return cls(a.shape[1], ma, mb, xa @ xb.T, xa @ xa.T, xb @ xb.T)

    def see_inputs(self, ma, mb) -> None:
        """Merge a batch's :func:`_input_max` of each model (None: not read)."""
        if ma is not None:
            self.inputs_a = ma if self.inputs_a is None else torch.maximum(self.inputs_a, ma)
        if mb is not None:
            self.inputs_b = mb if self.inputs_b is None else torch.maximum(self.inputs_b, mb)

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Merge a batch of features (``n x m`` each, float64) into the statistics."""
        o = SiteStats.of(a, b)
        n1, n2 = self.count, o.count
        n = n1 + n2
        da, db = o.mean_a - self.mean_a, o.mean_b - self.mean_b
        w = n1 * n2 / n
        self.cab += o.cab + w * torch.outer(da, db)
        self.caa += o.caa + w * torch.outer(da, da)
        self.cbb += o.cbb + w * torch.outer(db, db)
        self.mean_a += da * (n2 / n)
        self.mean_b += db * (n2 / n)
        self.count = n

    @property
    def size(self) -> int:
        return self.mean_a.shape[0]

    def correlation(self) -> torch.Tensor:
        """Correlation of a's units (rows) with b's units (columns); 0 for constant units."""
        sa, sb = self._std(self.caa, self.mean_a), self._std(self.cbb, self.mean_b)
        ia = torch.where(sa > 0, 1.0 / sa.clamp_min(1e-300), torch.zeros_like(sa))
        ib = torch.where(sb > 0, 1.0 / sb.clamp_min(1e-300), torch.zeros_like(sb))
        return self.cab * ia[:, None] * ib[None, :]

    def _std(self, c, mean):
        """sqrt of the centred sums of squares, 0 where the unit is constant on the data."""
        s = torch.diagonal(c).clamp_min(0).sqrt()
        rms = s / math.sqrt(self.count)
        ref = torch.maximum(mean.abs(), rms.max().expand_as(rms))
        return torch.where(rms <= CONSTANT_TOL * ref, torch.zeros_like(s), s)

    def feature_distance2(self, perm=None, scale=None, matrix=None) -> float:
        """:math:`\\sum_x \\|a(x) - A b(x)\\|^2` with ``A`` monomial (``(A b)_i = scale_i b_{perm_i}``)
        or dense (``matrix``), from the moments (accurate to about 1e-16 of the features' squared
        norm: a perfect match reads as a distance of order 1e-8 of the features' norm)."""
        N = self.count
        if matrix is not None:
            M = matrix.to(self.cab)
            mb = M @ self.mean_b
            cross = float(torch.trace(M @ self.cab.T))
            bb = float(torch.trace(M @ self.cbb @ M.T))
        else:
            n = self.size
            p = torch.arange(n, device=self.cab.device) if perm is None else perm.to(self.cab.device)
            s = torch.ones(n, dtype=self.cab.dtype, device=self.cab.device) if scale is None else scale.to(self.cab)
            mb = s * self.mean_b[p]
            cross = float((s * self.cab[torch.arange(n, device=p.device), p]).sum())
            bb = float((s * s * torch.diagonal(self.cbb)[p]).sum())
        centred = float(torch.trace(self.caa)) - 2 * cross + bb
        return max(centred, 0.0) + N * float(((self.mean_a - mb) ** 2).sum())

    def problems(self, weight_rank: tuple = (None, None), dead: tuple = (None, None)) -> list:
        """Why these data cannot determine the site's element (empty: they can). Per model:
        ``weight_rank``, the rank its producer's weights allow over the inputs that vary on
        the data (None: no bound known); ``dead``, the units whose producer rows are zero
        (constant for any data: not the data's fault, not reported)."""
        n, out = self.size, []
        if self.count <= n:  # centred, m samples span at most m - 1 dimensions
            out.append(f"{self.count} samples (inputs x positions) for {n} units")
        for which, c, mean, dd, wr in (("a", self.caa, self.mean_a, dead[0], weight_rank[0]),
                                       ("b", self.cbb, self.mean_b, dead[1], weight_rank[1])):
            s = self._std(c, mean)
            const = int(((s == 0) & ~dd.to(s.device)).sum()) if dd is not None else int((s == 0).sum())
            if const:
                out.append(f"{const} unit(s) of model_{which} constant on the data")
            live = s > 0
            if int(live.sum()) < 2 or self.count <= n:
                continue  # (too few samples already said it)
            sl = s[live]
            R = c[live][:, live] / (sl[:, None] * sl[None, :])
            off = R.abs() - torch.eye(R.shape[0], dtype=R.dtype, device=R.device) * 2
            ties = int(((off >= 1 - TIE_TOL).sum() // 2))
            if ties:
                out.append(f"{ties} pair(s) of units of model_{which} perfectly correlated on the data")
            if wr is not None and not ties:
                ev = torch.linalg.eigvalsh(R)
                rank = int((ev > RANK_TOL * float(ev.max())).sum())
                bound = min(int(live.sum()), wr)
                if rank < bound:
                    out.append(f"feature covariance of model_{which} of rank {rank} on the data, where the weights "
                               f"allow {bound}")
        return out


def _unit_dim(module, op, y):
    if isinstance(module, (nn.Linear, nn.LayerNorm, nn.Embedding)) or op in ("aten.linear", "aten.addmm", "aten.mm",
                                                                              "aten.matmul", "aten.embedding",
                                                                              "aten.layer_norm"):
        return y.dim() - 1
    return 1 if y.dim() > 1 else 0


def readable_sites(spec, model) -> dict:
    """site name -> the binding whose module output shows the site's units (its producer)."""
    want = {}
    mods = dict(model.named_modules())
    for fqn, bounds in spec.bindings.items():
        for b in bounds:
            if b.site is None or b.site in want or b.variance not in ("co", "bn_gamma") or b.relation != "same":
                continue
            if b.chain or b.part is not None or b.module not in mods or not fqn.endswith(("weight", "bias")):
                continue
            if b.crossed:  # its other dimensions carry another site's units, not samples (token mixing)
                continue
            want[b.site] = b
    return want


def _plain(m) -> bool:
    """A Linear or (ungrouped, not transposed) Conv: outputs linear in input channels (dim 1 of
    the weight)."""
    conv = isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and m.groups == 1
    return isinstance(m, nn.Linear) or conv


def _producer_rows(model, b, live_inputs=None):
    """(weight rows over the binding's units as ``length x fan-in`` float64, bias), the input
    channels restricted to ``live_inputs``; None when the producer is not :func:`_plain`."""
    m = dict(model.named_modules()).get(b.module)
    if not _plain(m):
        return None
    W = m.weight.detach().narrow(0, b.offset, b.length)
    if live_inputs is not None and live_inputs.shape[0] == W.shape[1]:  # per input channel
        W = W[:, live_inputs.to(W.device)]
    W = W.reshape(b.length, -1)
    if live_inputs is not None and live_inputs.shape[0] == W.shape[1] != m.weight.shape[1]:  # per column
        W = W[:, live_inputs.to(W.device)]
    return W.double(), m.bias


def weight_rank(model, b, live_inputs=None) -> int | None:
    """Rank of the producer's weight rows over the binding's units and the live input channels
    (an upper bound on the rank of its centred outputs), or None when not :func:`_plain`."""
    rows = _producer_rows(model, b, live_inputs)
    if rows is None:
        return None
    return int(torch.linalg.matrix_rank(rows[0])) if rows[0].numel() else 0


def dead_units(model, b):
    """Units whose producer rows (weights and bias) are all zero, or None (unknown producer)."""
    rows = _producer_rows(model, b)
    if rows is None:
        return None
    W, bias = rows
    dead = (W == 0).all(1)
    if bias is not None:
        dead &= bias.detach().narrow(0, b.offset, b.length).cpu().to(dead.device) == 0
    return dead


def _run_capture(model, sites, args, kwargs, sink=None):
    """site -> ((units x samples) float64 features, :func:`_input_max` of the producer's input) of
    one forward pass (eval mode, no grad); with ``sink``, each site's pair goes to ``sink(site,
    pair)`` as soon as it is computed instead."""
    out, hooks = {}, []
    mods = dict(model.named_modules())
    put = sink if sink is not None else out.__setitem__
    for site, b in sites.items():

        def hook(mod, i, y, site=site, b=b):
            if isinstance(y, torch.Tensor):
                d = _unit_dim(mod, b.op, y)
                if y.dim() > d and y.shape[d] >= b.offset + b.length:
                    z = y.detach().movedim(d, 0).narrow(0, b.offset, b.length)
                    put(site, (z.reshape(b.length, -1).to(torch.float64), _input_max(mod, i)))

        hooks.append(mods[b.module].register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for hd in hooks:
            hd.remove()
        for m, t in modes:
            m.training = t
    return out


def _input_max(mod, inputs):
    """Which inputs of a :func:`_plain` producer vary on the data (> 0 where they do: the spread
    max - min over the batch's samples and positions), None for other producers: per input
    feature of a Linear; per column (channel x kernel tap) of a 2-d convolution with zero padding,
    since the taps that only ever see the padding (a 3x3 kernel on a 1x1 map) add nothing to the
    output's rank; per channel of other convolutions. An input constant on the data (a dead unit
    upstream, a pixel that is the same in every image) adds nothing to the centred covariance."""
    x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if x is None or not _plain(mod) or x.dim() == 0:
        return None
    x = x.detach()
    if isinstance(mod, nn.Linear):
        c = x.dim() - 1
    else:  # a convolution's input is (N, C, *spatial) or unbatched (C, *spatial)
        c = 0 if x.dim() == len(mod.kernel_size) + 1 else 1
    flat = x.movedim(c, 0).reshape(x.shape[c], -1)
    spread = (flat.amax(1) - flat.amin(1)).to(torch.float64)
    if isinstance(mod, nn.Conv2d) and x.dim() in (3, 4) and mod.padding_mode == "zeros" \
            and not isinstance(mod.padding, str):
        nz = (x != 0).reshape(-1, *x.shape[-3:]).any(0, keepdim=True).to(torch.float64)
        cols = torch.nn.functional.unfold(nz, mod.kernel_size, mod.dilation, mod.padding, mod.stride)[0].amax(1)
        taps = cols.numel() // spread.numel()
        return cols * spread.repeat_interleave(taps)
    return spread


def stream_site_stats(spec, model_a, model_b, batches, example_kwargs=None, progress=None, total=None) -> tuple:
    """(site -> :class:`SiteStats`, number of inputs) over every batch, both models run on each."""
    sites = readable_sites(spec, model_a)
    device, dtype = _placement(model_a)
    stats: dict = {}
    inputs = 0
    for i, batch in enumerate(batches):
        args, kw = split_batch(batch)
        args = tuple(_to_model(t, device, dtype) for t in args)
        kw = {k: _to_model(v, device, dtype) for k, v in {**(example_kwargs or {}), **kw}.items()}
        inputs += _batch_size(args, kw)
        za = _run_capture(model_a, sites, args, kw)

        def merge(s, zb_mb, za=za):
            # b's features are merged as soon as they exist: at most one site of b is held
            (a, ma), (zb, mb) = za.pop(s, (None, None)), zb_mb
            if a is None or a.shape != zb.shape:
                return
            if s in stats:
                stats[s].update(a, zb)
            else:
                stats[s] = SiteStats.of(a, zb)
            stats[s].see_inputs(ma, mb)

        _run_capture(model_b, sites, args, kw, sink=merge)
        del za
        if progress is not None:
            progress(i + 1)
    if not inputs:
        raise ValueError("Argument 'data' yields no batch.")
    return stats, inputs


def _batch_size(args, kw) -> int:
    for t in itertools.chain(args, kw.values()):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return 1


def _reads_inputs(spec, b) -> bool:
    """Whether the producer of ``b`` reads no site (its input units are the model's inputs or
    fixed): its outputs are then linear in the data, and a rank below the weights' is the data's
    doing. Deeper, a narrower layer upstream limits the rank on any data, which says nothing
    about the data; those sites are judged by the other criteria only."""
    w = spec.bindings.get(f"{b.module}.weight" if b.module else "weight", ())
    return bool(w) and not any(x.dim == 1 and x.site is not None for x in w)


def warn_underdetermined(spec, model_a, model_b, stats: dict, stacklevel: int = 3) -> tuple:
    """Warn once per site the data cannot decide; returns those sites' names."""
    sites = readable_sites(spec, model_a)
    bad = []
    for name, st in stats.items():
        b = sites.get(name)
        live = [None if m is None else m > 0 for m in (st.inputs_a, st.inputs_b)]
        first = b is not None and _reads_inputs(spec, b)
        ranks = (weight_rank(model_a, b, live[0]), weight_rank(model_b, b, live[1])) if first else (None, None)
        dead = (dead_units(model_a, b), dead_units(model_b, b)) if b else (None, None)
        why = st.problems(ranks, dead)
        if why:
            bad.append(name)
            warnings.warn(f"activation matching at site {name!r}: the data cannot determine its element ("
                          + "; ".join(why) + "); pass more inputs", UnderdeterminedAlignmentWarning,
                          stacklevel=stacklevel)
    return tuple(bad)


# Matching on the statistics -------------------------------------------------------------------

def _framed_correlation(st, ea, eb):
    """Correlation of the framed models' units (``z -> e z`` on each side) from the statistics of
    the original models: a monomial frame permutes units and flips signs (scales cancel)."""
    ma, mb = _as_monomial(ea, 1e-12), _as_monomial(eb, 1e-12)
    if ma is None or mb is None:
        return None
    (pa, sa), (pb, sb) = ma, mb
    R = st.correlation().cpu()
    return torch.sign(sa)[:, None] * torch.sign(sb)[None, :] * R[pa][:, pb]


def activation_matching(spec, stats, ga, hb, init):
    """The permutations of ``init`` improved class by class on the correlation of the framed
    models' features (``stats``: site -> :class:`SiteStats` of the originals; ``ga``, ``hb``: the
    frames of pass 1)."""
    from ._align import _current_order, _with

    g = init
    for holder, sites in _perm_classes(spec).items():
        if not isinstance(sites[0].group, Monomial):
            continue
        cost = None
        for s in sites:
            if s.name not in stats or s.name not in ga or s.name not in hb:
                continue
            c = _framed_correlation(stats[s.name], ga[s.name], hb[s.name])
            if c is not None:
                cost = c if cost is None else cost + c
        if cost is None:
            continue
        C = cost.numpy()
        _, cols = linear_sum_assignment(C, maximize=True)
        n = len(cols)
        old = _current_order(g.get(sites[0].name), sites[0], False).numpy()
        # keep the canonical sorting unless the correlation is strictly better (few samples
        # make many assignments tie)
        if C[np.arange(n), cols].sum() > C[np.arange(n), old].sum() * (1 + 1e-9) + 1e-9:
            new = torch.as_tensor(cols, dtype=torch.long)
            g = _with(g, {s.name: _perm_element(s, new, heads=False) for s in sites})
    return g


def feature_distances(stats, g):
    """((site, before, after), ...) and the totals, from the streamed moments."""
    rows, tb, ta = [], 0.0, 0.0
    for name in sorted(stats):
        st = stats[name]
        el = g.get(name)
        before = st.feature_distance2() / st.count
        if el is None:
            after = before
        elif isinstance(el, MonomialElement):
            after = st.feature_distance2(el.perm, el.scale) / st.count
        else:
            after = st.feature_distance2(matrix=el.matrix()) / st.count
        rows.append((name, math.sqrt(before), math.sqrt(after)))
        tb, ta = tb + before, ta + after
    return tuple(rows), math.sqrt(tb), math.sqrt(ta)



class Progress:
    """``progress=None | False | True | callable`` of :func:`~._align.align`, one stage at a time.

    ``True``: a tqdm bar per stage, shown only once the stage has run for ``delay`` seconds;
    a callable is called as ``progress(stage, done, total)`` (``total`` None when unknown).
    """

    def __init__(self, progress, delay: float = 2.0):
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(f"Argument 'progress' must be None, a bool or a callable, not {type(progress).__name__}.")
        self._p, self._delay, self._bar = progress, delay, None

    def start(self, stage: str, total: int | None = None):
        """A function ``tick(done, total=None)`` for one stage (a no-op when progress is off;
        call :meth:`close` afterwards)."""
        self.close()
        if self._p is True:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=f"align: {stage}", delay=self._delay, leave=False)

            def tick(done, tot=None, bar=self._bar):
                if tot is not None and bar.total != tot:
                    bar.total = tot
                bar.update(done - bar.n)

            return tick
        if callable(self._p):
            fn = self._p
            return lambda done, tot=None: fn(stage, done, tot if tot is not None else total)
        return lambda done, tot=None: None

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
