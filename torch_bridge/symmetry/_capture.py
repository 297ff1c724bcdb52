"""Capturing a network as an ATen graph with ``torch.export`` (one route for every model).

:func:`capture` runs ``torch.export.export(model.eval(), args, kwargs, strict=False)`` (the
training flags are restored afterwards) and returns a :class:`Captured`: the graph, which
placeholder reads which parameter or buffer, the *alias groups* of tensors shared under
several names (``head.weight = emb.weight``), and the module of every node.

Activation modules the symmetry engine reads as a whole -- :class:`CatalogueActivation` and
parameter-free user modules that act entrywise -- are exported as ONE node of the custom op
``groupcalc_sym::leaf`` (their ``forward`` is patched for the duration of the export), so the
engine derives their group instead of the tracer seeing the primitive operations inside.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models import CatalogueActivation
from ._activations import is_elementwise, module_activation

__all__ = ["Captured", "capture", "SymmetrySpecError", "LEAF_OP"]


class SymmetrySpecError(ValueError):
    """The network cannot be analysed (an operation the tracer cannot follow, a bad argument)."""


# Leaf modules by key while an export runs (the custom op's implementation looks them up).
_LEAVES: dict = {}
_KEYS = itertools.count()


@torch.library.custom_op("groupcalc_sym::leaf", mutates_args=())
def _leaf(x: torch.Tensor, key: int) -> torch.Tensor:
    y = _LEAVES[key](x)
    return y.clone() if y is x else y


@_leaf.register_fake
def _(x, key):
    return torch.empty_like(x)


LEAF_OP = torch.ops.groupcalc_sym.leaf.default


@dataclass
class Captured:
    """An exported network.

    Attributes
    ----------
    graph : torch.fx.Graph
        The ATen graph (``node.meta["val"]`` holds a fake tensor with the shape).
    params : dict
        Placeholder name -> canonical FQN of the parameter/buffer it reads (the first name of
        its alias group).
    aliases : dict
        Canonical FQN -> every name of the same underlying tensor.
    is_buffer : dict
        Canonical FQN -> True for buffers.
    leaves : dict
        Leaf key -> (qualified name, module) of the modules exported as one node.
    """

    graph: object
    params: dict
    aliases: dict
    is_buffer: dict
    leaves: dict = field(default_factory=dict)
    model: object = None

    def module_of(self, node) -> str:
        """Qualified name of the innermost module that produced ``node`` ("" for the root)."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        path = list(stack.values())[-1][0]
        return _clean_path(path)


def _clean_path(path: str) -> str:
    # export writes e.g. "L['self'].layers[0].conv" or "layers.0.conv"
    path = path.replace("L['self']", "").replace("L__self__", "")
    out = []
    for part in path.replace("[", ".").replace("]", "").split("."):
        part = part.strip("'\"")
        if part:
            out.append(part)
    return ".".join(out)


def _alias_groups(model: nn.Module):
    groups: dict = {}
    buffers = set()
    for name, t in itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)):
        groups.setdefault(id(t), []).append(name)
    for name, t in model.named_buffers(remove_duplicate=False):
        buffers.add(id(t))
    by_name, aliases, is_buffer = {}, {}, {}
    tensors = {id(t): t for _, t in itertools.chain(model.named_parameters(remove_duplicate=False),
                                                    model.named_buffers(remove_duplicate=False))}
    for tid, names in groups.items():
        aliases[names[0]] = tuple(names)
        is_buffer[names[0]] = tid in buffers
        for n in names:
            by_name[n] = names[0]
    return by_name, aliases, is_buffer, tensors


def _elementwise_user_modules(model: nn.Module):
    """Activation modules the catalogue knows (``nn.ReLU``, ``CatalogueActivation``, ...) and
    parameter-free user modules (not from torch.nn) that act entrywise."""
    out = {}
    for name, m in model.named_modules():
        if not name:
            continue
        if isinstance(m, nn.Identity):
            continue
        if isinstance(m, CatalogueActivation) or module_activation(m) is not None:
            out[name] = m
            continue
        if m.__module__.startswith("torch.nn") or m.__module__.startswith("torch_bridge"):
            continue
        if any(True for _ in m.parameters()) or any(True for _ in m.buffers()) or any(True for _ in m.children()):
            continue
        if is_elementwise(m, torch.zeros(3, 5, 4, dtype=torch.float64)):
            out[name] = m
    return out


@contextlib.contextmanager
def _leaves_patched(model):
    found = _elementwise_user_modules(model)
    keys, own = {}, {}
    for name, m in found.items():
        own[id(m)] = m.__dict__.get("forward")  # an instance-level forward the user set, if any
        k = next(_KEYS)
        _LEAVES[k] = m
        keys[k] = (name, m)

        def fwd(x, *rest, _k=k, _orig=m.forward, **kw):
            if rest or kw or not isinstance(x, torch.Tensor):
                return _orig(x, *rest, **kw)
            return torch.ops.groupcalc_sym.leaf(x, _k)

        m.forward = fwd
    try:
        yield keys
    finally:
        for k, (name, m) in keys.items():
            if own[id(m)] is not None:
                m.forward = own[id(m)]
            else:
                del m.forward  # back to the class's forward
            _LEAVES.pop(k, None)


def capture(model: nn.Module, args: tuple, kwargs: dict | None = None) -> Captured:
    """Export ``model`` (eval mode, non-strict) and describe its parameter placeholders."""
    kwargs = dict(kwargs or {})
    by_name, aliases, is_buffer, _ = _alias_groups(model)
    modes = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with _leaves_patched(model) as keys:
            try:
                ep = torch.export.export(model, tuple(args), kwargs, strict=False)
            except Exception as e:  # noqa: BLE001 - report any capture failure in one line
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise SymmetrySpecError(
                    f"torch.export cannot capture the model ({type(e).__name__}: {msg[:300]}); data-dependent "
                    "control flow must be removed (or the model exported with example inputs that fix it)") from None
            # keep the leaf modules reachable after the patch is undone
            leaves = dict(keys)
    finally:
        for name, m in model.named_modules():
            m.training = modes[name]
    params = {}
    from torch.export.graph_signature import InputKind

    for spec in ep.graph_signature.input_specs:
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER) and spec.target is not None:
            params[spec.arg.name] = by_name.get(spec.target, spec.target)
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            params.setdefault("__constants__", set()).add(spec.arg.name)
    constants = params.pop("__constants__", set())
    cap = Captured(ep.graph, params, aliases, is_buffer, leaves, model)
    cap.constants = constants
    cap.exported = ep
    return cap
