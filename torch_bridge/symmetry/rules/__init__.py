"""The registry of layer rules: ``RULES`` maps an ATen op (``OpOverload`` or
``OpOverloadPacket``) to ``fn(ctx, node) -> value``; :func:`rule` registers one.

A rule reads its inputs through the tracer's context (``ctx.rep``, ``ctx.shape``,
``ctx.param``), creates axes (``ctx.new_axis``), binds the parameters it reads
(``ctx.bind``: which dimension transforms with which representation, and how), constrains
and ties representations (``ctx.constrain``, ``ctx.tie``) or refuses (``ctx.refuse``), and
returns the value of the node's output. Adding a layer kind is adding one rule (and its tests)
in the file of its family: ``_linear``, ``_norm``, ``_elementwise``, ``_shape``, ``_pool``,
``_attention``.
"""

RULES: dict = {}


def rule(*ops, param_view=False, reads_params=False):
    """Register ``fn`` for every op in ``ops``. The tracer calls a rule when a hidden tensor
    enters the node; ``reads_params=True`` (layers with weights) also when only parameters and
    constants do; ``param_view=True`` (views) also when only parameters do, e.g.
    ``cls_token.expand``."""

    def deco(fn):
        fn.param_view = param_view
        fn.reads_params = reads_params
        for op in ops:
            if op is not None:
                RULES[op] = fn
        return fn

    return deco


from . import _attention, _elementwise, _linear, _norm, _pool, _shape  # noqa: E402,F401  (fill RULES)
