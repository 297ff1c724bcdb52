"""Function-preserving rewrites that enlarge the symmetry group.

:func:`fold_norm_gains` folds the gains of RMS norms into the linear layers that read them:
``W (g * x / rms(x)) = (W diag(g)) (x / rms(x))``, so the norm becomes gain-free and the
residual stream it reads is invariant under all of O(n) (the rotation SliceGPT and QuaRot
exploit) instead of signed permutations only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_norm_gains"]


def _is_rms_norm(m: nn.Module) -> bool:
    if isinstance(m, nn.RMSNorm):
        return m.weight is not None
    name = type(m).__name__
    return "RMSNorm" in name and isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() == 1 and \
        (hasattr(m, "variance_epsilon") or hasattr(m, "eps")) and not list(m.children())


def fold_norm_gains(model: nn.Module, example_inputs, example_kwargs: dict | None = None) -> nn.Module:
    """A copy of ``model`` whose RMS-norm gains are folded into the linear layers reading them.

    Every RMS norm (``nn.RMSNorm`` with a weight, or a module named ``*RMSNorm`` with a 1-d
    ``weight`` and ``eps``/``variance_epsilon``, e.g. Hugging Face's ``LlamaRMSNorm``) whose
    output is read only by the columns of linear layers is replaced by a gain-free
    ``nn.RMSNorm``, and each reader's weight multiplied by the gain along its columns. Norms
    read by anything else are left alone. ``model`` is not modified.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 6), nn.RMSNorm(6), nn.Linear(6, 2))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.uniform_(0.5, 2.0)
    >>> folded = fold_norm_gains(net, torch.randn(3, 4))
    >>> folded[1].weight is None
    True
    >>> x = torch.randn(5, 4)
    >>> bool(torch.allclose(net(x), folded(x), atol=1e-6))
    True
    """
    from ._capture import capture
    from ._spec import _as_tuple
    from ._trace import trace_graph

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cap = capture(model, _as_tuple(example_inputs), example_kwargs)
    tr = trace_graph(cap, unknown="freeze")
    norms = {name: m for name, m in model.named_modules() if _is_rms_norm(m)}
    new = copy.deepcopy(model)
    for name, m in norms.items():
        gain = f"{name}.weight" if name else "weight"
        diag = [b for b in tr.bindings if b.param == gain and b.variance == "diag"]
        if len(diag) != 1:
            continue
        axis_ids = {s.axis for s in diag[0].rep.segs if s.kind == "axis"}
        readers, ok = [], True
        for b in tr.bindings:
            if b.param == gain:
                continue
            touches = isinstance(b.rep, type(diag[0].rep)) and any(s.kind == "axis" and s.axis in axis_ids for s in b.rep.segs)
            if not touches:
                continue
            if b.variance != "contra" or b.op not in ("aten.linear", "aten.addmm", "aten.mm", "aten.matmul") or \
                    any(s.chain for s in b.rep.segs) or b.rep.repeat != 1 or b.rep.segs != diag[0].rep.segs:
                ok = False
                break
            readers.append(b)
        # the gain's output must not be used anywhere else (a residual, an activation, an output)
        def on_axes(r):
            return isinstance(r, type(diag[0].rep)) and any(s.kind == "axis" and s.axis in axis_ids for s in r.segs)

        if any(on_axes(r) and "gain output" not in c.reason for r, c in tr.constraints):
            ok = False
        if any(t.relation != "perm" and (on_axes(t.a) or on_axes(t.b)) for t in tr.ties):
            ok = False
        if not ok or not readers:
            continue
        from ._spec import _get_tensor

        g = m.weight.detach()
        with torch.no_grad():
            for b in readers:
                W = _get_tensor(new, b.param)
                shape = [1] * W.dim()
                shape[b.dim] = -1
                W.mul_(g.to(W.dtype).view(shape))
        eps = getattr(m, "eps", None)
        if eps is None:
            eps = getattr(m, "variance_epsilon", None)
        repl = nn.RMSNorm(g.shape[0], eps=eps, elementwise_affine=False, device=g.device, dtype=g.dtype)
        parent, _, child = name.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, child, repl)
    return new
