"""The layer x layer similarity matrix of two models (figure 5 of the paper), streamed over
batches: one forward pass of each model per batch, one centred Gram matrix per layer."""

from __future__ import annotations

import contextlib
import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._batched import GramMaker, check_batch_measure, check_finite_terms, check_reiterable, warn_dropped
from ._collect import batches, feature_info, resolve_layers, stream_features
from ._features import DEAD_RTOL, SimilarityWarning, check_layout
from ._hsic import check_estimator, hsic_normaliser, min_samples
from ._invariance import resolve_group
from ._prep import check_tol
from ._provenance import detected_invariance, same_invariance

__all__ = ["LayerSimilarity", "layer_similarity"]


@dataclass(frozen=True)
class LayerSimilarity:
    """CKA between every layer of model A (rows) and every layer of model B (columns).

    Attributes
    ----------
    values : tuple of tuples of float
        ``values[i][j]`` compares ``layers_a[i]`` with ``layers_b[j]``.
    layers_a, layers_b : tuple of str
    groups_a, groups_b : tuple of str
        For ``g_cka``: the group each layer's features were normalised with (its label);
        empty strings for ``linear_cka``.
    measure, estimator : str
    samples, batches : int
    """

    values: tuple
    layers_a: tuple
    layers_b: tuple
    measure: str
    estimator: str
    samples: int
    batches: int
    groups_a: tuple = ()
    groups_b: tuple = ()

    def __post_init__(self):
        vals = tuple(tuple(float(v) for v in row) for row in self.values)
        object.__setattr__(self, "values", vals)
        object.__setattr__(self, "layers_a", tuple(self.layers_a))
        object.__setattr__(self, "layers_b", tuple(self.layers_b))
        object.__setattr__(self, "groups_a", tuple(self.groups_a))
        object.__setattr__(self, "groups_b", tuple(self.groups_b))
        if len(vals) != len(self.layers_a) or any(len(r) != len(self.layers_b) for r in vals):
            raise ValueError("Argument 'values' must have one row per layer of A and one column per layer of B.")

    @property
    def matrix(self) -> np.ndarray:
        """The values as a new ``(len(layers_a), len(layers_b))`` float64 array."""
        return np.array(self.values, dtype=float).reshape(len(self.layers_a), len(self.layers_b))

    def __getitem__(self, key) -> float:
        """``result["layer_of_a", "layer_of_b"]``."""
        a, b = key
        for name, layers, which in ((a, self.layers_a, "A"), (b, self.layers_b, "B")):
            if name not in layers:
                raise KeyError(f"{name!r} is not a layer of model {which} in this result ({', '.join(layers)}).")
        return self.values[self.layers_a.index(a)][self.layers_b.index(b)]

    def to_dict(self) -> dict:
        return {"measure": self.measure, "estimator": self.estimator, "samples": self.samples,
                "batches": self.batches, "layers_a": list(self.layers_a), "layers_b": list(self.layers_b),
                "groups_a": list(self.groups_a), "groups_b": list(self.groups_b),
                "values": [list(r) for r in self.values]}

    def plot(self, path, *, title: str | None = None, labels=("model A", "model B"), annotate: bool | None = None):
        """Write the matrix as a heatmap PNG (matplotlib, Agg backend) and return the path.

        Rows are the layers of A from the input (top) down, columns the layers of B, as in
        the paper's figure 5. ``annotate`` prints the values in the cells (default: when
        there are at most 12 x 12 of them).
        """
        # A bare Figure renders with the Agg canvas without touching pyplot's global backend.
        from matplotlib.figure import Figure

        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"Argument 'path' must name a .png file, not {str(path)!r}.")
        M = self.matrix
        na, nb = M.shape
        fig = Figure(figsize=(1.2 + 0.5 * max(nb, 4), 1.0 + 0.5 * max(na, 4)), dpi=120)
        ax = fig.add_subplot(1, 1, 1)
        lo = min(0.0, float(np.nanmin(M)))
        im = ax.imshow(M, vmin=lo, vmax=1.0, cmap="magma", aspect="auto", interpolation="nearest")
        ax.set_xticks(range(nb), self.layers_b, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(na), self.layers_a, fontsize=7)
        ax.set_xlabel(labels[1])
        ax.set_ylabel(labels[0])
        if annotate if annotate is not None else (na <= 12 and nb <= 12):
            for i in range(na):
                for j in range(nb):
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if M[i, j] > lo + 0.6 * (1 - lo) else "white")
        ax.set_title(title or f"{self.measure} ({self.estimator}), N={self.samples}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
        fig.savefig(path)
        return path


def _default_layers(model: nn.Module, which: str) -> list[str]:
    """Every activation module of the model (what figure 5 compares), in definition order."""
    from ..symmetry import module_activation

    names = [n for n, m in model.named_modules() if n and not isinstance(m, nn.Identity)
             and module_activation(m) is not None]
    if not names:
        raise ValueError(f"Argument '{which}': the model has no activation modules to compare; name the layers.")
    return names


def _layer_groups(mods, group, side, measure, which):
    """The Invariance of every layer for g_cka: the given group (with a warning where the
    layer's own activation differs) or the layer's detected activation."""
    from ..symmetry import module_activation

    out = []
    given = None if group is None else resolve_group(group, side)
    for name, m in mods.items():
        ref = module_activation(m)
        found = detected_invariance(ref, "post") if ref is not None and ref.name != "identity" else None
        if given is None:
            if found is None:
                raise ValueError(
                    f"Argument 'group': layer {name!r} of {which} ({type(m).__name__}) is not an activation module "
                    "with a known group; pass group= for its features."
                )
            out.append(found)
            continue
        if found is not None and not (side == "post" and same_invariance(found, given)):
            warnings.warn(
                f"layer_similarity: layer {name!r} of {which} is {ref} ({found.describe()}), but group={group!r} "
                f"(side={side!r}) assumes {given.describe()}; leave group=None to use each layer's own group.",
                SimilarityWarning, stacklevel=3,
            )
        out.append(given)
    return out


def layer_similarity(model_a: nn.Module, model_b: nn.Module, data, layers_a=None, layers_b=None,
                     measure: str = "linear_cka", *, group=None, side: str = "post", estimator: str = "unbiased",
                     batch_size: int = 256, device=None, layout=None, dead_rtol: float = DEAD_RTOL,
                     progress: bool = False) -> LayerSimilarity:
    """CKA between every chosen layer of ``model_a`` and every chosen layer of ``model_b``.

    Both models see the same batches; for each batch and layer the centred Gram matrix
    (unbiased: U-centred) is formed, and the HSIC terms of all pairs of layers are
    accumulated as in :func:`minibatch_cka` (Nguyen et al. 2021). Memory: one batch of
    features of both models plus one ``batch x batch`` matrix per layer; the full-data
    features are never held. With ``measure="g_cka"`` the data are read twice (channel
    statistics first), so ``data`` must be a tensor, a list or a re-iterable DataLoader.

    Parameters
    ----------
    model_a, model_b : torch.nn.Module
    data : tensor, numpy array or iterable of batches
        As in :func:`collect_features` (``(inputs, targets)`` pairs are accepted).
    layers_a, layers_b : list of names or modules, a module type, or None
        None: every activation module of the model.
    measure : {"linear_cka", "g_cka"}
    group : str, IntertwinerGroup or None
        For ``g_cka``. None (default): each layer is normalised by the group of its own
        activation module (an error names a layer that is not one). A given group is used
        for every layer, with a warning for each layer whose activation has another group.
    side : {"post", "pre"}
    estimator : {"unbiased", "biased"}
    batch_size : int
        Batch size used when ``data`` is a tensor. Batches with fewer samples than the
        estimator needs (4 for the unbiased one) are left out with a warning.
    device, layout, dead_rtol
        As in :func:`collect_features` and :func:`g_cka`; a layer whose module is known to put
        channels last (``nn.Linear`` on tokens) is read that way when ``layout`` is None.
    progress : bool
        Show a tqdm bar per pass over the data (once a pass has run for 2 seconds).

    Returns
    -------
    LayerSimilarity
        Immutable; ``.matrix`` (numpy), ``.plot("fig.png")`` (heatmap).
    """
    measure = check_batch_measure(measure)
    if group is not None and measure != "g_cka":
        raise ValueError(f"Argument 'group' applies to measure='g_cka' only (linear CKA has no group), not to {measure!r}.")
    for m, which in ((model_a, "model_a"), (model_b, "model_b")):
        if not isinstance(m, nn.Module):
            raise TypeError(f"Argument {which!r} must be a torch.nn.Module, not {type(m).__name__}.")
    estimator = check_estimator(estimator)
    dead_rtol = check_tol(dead_rtol, "dead_rtol")
    layout = check_layout(layout)
    mods_a = resolve_layers(model_a, _default_layers(model_a, "layers_a") if layers_a is None else layers_a)
    mods_b = resolve_layers(model_b, _default_layers(model_b, "layers_b") if layers_b is None else layers_b)
    if measure == "g_cka":
        invs_a = _layer_groups(mods_a, group, side, measure, "model_a")
        invs_b = _layer_groups(mods_b, group, side, measure, "model_b")
        check_reiterable(data, "data", measure)
    else:
        invs_a, invs_b = [None] * len(mods_a), [None] * len(mods_b)
    makers_a = [GramMaker(measure, inv, estimator, dead_rtol, layout, f"model_a layer {n!r}") for n, inv in zip(mods_a, invs_a)]
    makers_b = [GramMaker(measure, inv, estimator, dead_rtol, layout, f"model_b layer {n!r}") for n, inv in zip(mods_b, invs_b)]

    passes = 2 if measure == "g_cka" else 1

    def paired_batches(stage):
        source = batches(data, batch_size)
        if progress:
            from tqdm.auto import tqdm

            if isinstance(data, (torch.Tensor, np.ndarray)):
                total = -(-len(data) // batch_size)
            else:
                total = len(data) if hasattr(data, "__len__") else None
            source = tqdm(source, total=total, desc=f"layer_similarity: {stage}", delay=2.0, leave=False)
        modes = [(mod, mod.training) for mod in itertools.chain(model_a.modules(), model_b.modules())]
        src_a, src_b = itertools.tee(source)
        fa = stream_features(model_a, src_a, list(mods_a.values()), batch_size=batch_size, device=device)
        fb = stream_features(model_b, src_b, list(mods_b.values()), batch_size=batch_size, device=device)
        try:
            for da, db in zip(fa, fb):
                yield list(da.values()), list(db.values())
        finally:
            fb.close()
            fa.close()
            # When model_b is model_a, the stream that ends last saw the eval mode the other had
            # set: restore every module's mode as it was before both.
            for mod, training in modes:
                mod.training = training

    def first_batch_layouts(ta, tb):
        if layout is not None:
            return
        for mk, (name, m), t in itertools.chain(zip(makers_a, mods_a.items(), ta), zip(makers_b, mods_b.items(), tb)):
            mk.layout = feature_info(name, m, t).layout

    if measure == "g_cka":
        first = True
        with contextlib.closing(paired_batches(f"channel statistics (pass 1 of {passes})")) as stream:
            for ta, tb in stream:
                if first:
                    first_batch_layouts(ta, tb)
                    first = False
                for mk, t in itertools.chain(zip(makers_a, ta), zip(makers_b, tb)):
                    mk.observe(t)
        for mk in makers_a + makers_b:
            mk.finish()
    na, nb = len(makers_a), len(makers_b)
    KL = torch.zeros((na, nb), dtype=torch.float64)
    KK = torch.zeros(na, dtype=torch.float64)
    LL = torch.zeros(nb, dtype=torch.float64)
    samples = count = dropped = 0
    need = min_samples(estimator)
    first = measure != "g_cka"
    # closing(): an error mid-stream removes the hooks and restores the modes at once, not
    # whenever the traceback that holds the generator is dropped.
    with contextlib.closing(paired_batches("kernels" + (f" (pass 2 of {passes})" if passes == 2 else ""))) as stream:
        for ta, tb in stream:
            if first:
                first_batch_layouts(ta, tb)
                first = False
            n = int(ta[0].shape[0])
            if n < need:
                dropped += 1
                continue
            d = hsic_normaliser(n, estimator) / n  # weight n per batch
            # One n x n centred matrix per layer, written into one buffer per model (no second copy).
            Ma = torch.empty((na, n * n), dtype=torch.float64)
            Mb = torch.empty((nb, n * n), dtype=torch.float64)
            for M, makers, ts in ((Ma, makers_a, ta), (Mb, makers_b, tb)):
                for i, (mk, t) in enumerate(zip(makers, ts)):
                    M[i].copy_(mk.gram(t).reshape(-1))  # copy_ also moves it off an accelerator
            KL += Ma @ Mb.T / d
            KK += torch.linalg.vector_norm(Ma, dim=1).square() / d  # no squared copy of the buffer
            LL += torch.linalg.vector_norm(Mb, dim=1).square() / d
            samples += n
            count += 1
    warn_dropped("layer_similarity", dropped, need)
    if count == 0:
        raise ValueError("Argument 'data': no batch had enough samples.")
    check_finite_terms("layer_similarity", KK.sum(), LL.sum(), KL.sum())
    for vec, names, which in ((KK, list(mods_a), "model_a"), (LL, list(mods_b), "model_b")):
        flat_ = [names[i] for i in range(len(names)) if not float(vec[i]) > 0]
        if flat_:
            raise ValueError(f"layer_similarity: layer(s) {flat_} of {which} have no variation between samples: CKA is undefined.")
    V = (KL / torch.sqrt(KK[:, None] * LL[None, :])).clamp(-1.0, 1.0)
    labels = lambda invs: tuple(inv.label or inv.describe() if inv is not None else "" for inv in invs)  # noqa: E731
    return LayerSimilarity(tuple(map(tuple, V.tolist())), tuple(mods_a), tuple(mods_b), measure, estimator,
                           samples, count, labels(invs_a), labels(invs_b))
