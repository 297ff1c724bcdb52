"""Entry points of the torch-side commands (`groupcalc similarity`, `groupcalc experiment`,
`groupcalc barrier`, `groupcalc merge`).

`groupcalc`'s CLI finds these through the ``groupcalc.commands`` entry-point group, so the
core never imports torch_bridge. Each takes the remaining command-line words and returns an
exit code (0 success, 2 bad input, 1 internal failure).
"""

from __future__ import annotations


def similarity_command(argv: list[str]) -> int:
    from .similarity._cli import main

    return main(argv)


def experiment_command(argv: list[str]) -> int:
    from .experiments._cli import main

    return main(argv)


def barrier_command(argv: list[str]) -> int:
    from .merge._cli import barrier_main

    return barrier_main(argv)


def merge_command(argv: list[str]) -> int:
    from .merge._cli import merge_main

    return merge_main(argv)
