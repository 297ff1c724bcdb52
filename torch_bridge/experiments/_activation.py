"""Activations with parameter values in the experiments: ``"leaky_relu(negative_slope=0.5)"``.

The experiments carry the activation as one string (in the configuration, the zoo key, the
job keys). A catalogue name may be followed by parameter values in parentheses; they are read
by a small parser (a name, then ``key=number`` pairs), never evaluated.
"""

from __future__ import annotations

import re

__all__ = ["parse_activation", "activation_text", "module_spec"]

_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")
_PAIR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_activation(text: str) -> tuple[str, dict]:
    """``(name, params)`` of ``"name"`` or ``"name(key=value, ...)"`` (values are numbers).

    >>> parse_activation("leaky_relu(negative_slope=-1)")
    ('leaky_relu', {'negative_slope': -1.0})
    >>> parse_activation("relu")
    ('relu', {})
    """
    if not isinstance(text, str):
        raise ValueError(f"Argument 'activation' must be a string, not {text!r}.")
    m = _NAME.match(text)
    if m is None:
        raise ValueError(f"Argument 'activation' must be a catalogue name, optionally with parameter values "
                         f"as in 'leaky_relu(negative_slope=0.5)', not {text!r}.")
    name, inner = m.group(1), m.group(2)
    params: dict = {}
    if inner is not None and inner.strip():
        for part in inner.split(","):
            p = _PAIR.match(part)
            if p is None:
                raise ValueError(f"Argument 'activation' has a parameter {part.strip()!r} in {text!r}; "
                                 f"expected key=number.")
            if p.group(1) in params:
                raise ValueError(f"Argument 'activation' gives parameter {p.group(1)!r} twice in {text!r}.")
            params[p.group(1)] = float(p.group(2))
    return name, params


def activation_text(name: str, params: dict | None = None) -> str:
    """The string form of ``name`` with ``params`` (``repr`` of floats round-trips).

    >>> activation_text("leaky_relu", {"negative_slope": 0.5})
    'leaky_relu(negative_slope=0.5)'
    """
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={float(v)!r}' for k, v in sorted(params.items()))})"


def module_spec(text: str):
    """What :func:`torch_bridge.models.make_activation` takes for ``text``: the name, or
    ``(name, params)`` when parameter values are given."""
    name, params = parse_activation(text)
    return (name, params) if params else name
