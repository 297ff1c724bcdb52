"""The budget of one derivation: counted work first, wall clock as the outer guard.

A derivation's answer must not depend on how busy the machine is. So the engine is limited
by *work*: every question the oracle answers and every symbolic simplification it tries
costs steps (:func:`charge`), and when the step budget is spent the derivation stops with
``"unknown"``. The count depends only on the formula, so the same formula gets the same
answer on an idle and on a loaded machine.

The wall-clock limit stays as an outer guard against a single sympy call that runs for
long. It is enforced in every thread: by ``SIGALRM`` in the main thread, by an
asynchronous exception (``PyThreadState_SetAsyncExc``) in any other thread, and in both by
the deadline check inside :func:`charge`. A result stopped by the wall clock says so, and
callers must not cache it (it could differ on a less busy machine).

>>> with limited(steps=3):
...     charge(); charge()
...     left = remaining()
>>> left
1
>>> with limited(steps=1):
...     try:
...         charge(2)
...     except OutOfBudget as err:
...         print(err.reason)
work
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time

__all__ = ["OutOfBudget", "charge", "remaining", "used", "limited"]

#: Default number of work steps of one derivation (all parameter cases together).
DEFAULT_STEPS = 20000


class OutOfBudget(BaseException):
    """The budget of a derivation is spent.

    Not an ``Exception``: broad handlers inside sympy must not swallow it.

    Attributes
    ----------
    reason : {"work", "time"}
        ``"work"``: the step budget (deterministic); ``"time"``: the wall-clock guard
        (load-dependent).
    """

    def __init__(self, reason: str = "time"):
        super().__init__(reason)
        self.reason = reason


class _Budget:
    def __init__(self, steps, deadline):
        self.steps = steps
        self.deadline = deadline
        self.used = 0


_local = threading.local()


def _current() -> _Budget | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def charge(n: int = 1) -> None:
    """Spend ``n`` work steps; raise :class:`OutOfBudget` when the step budget or the
    wall-clock deadline is exhausted. A no-op outside :func:`limited`."""
    b = _current()
    if b is None:
        return
    b.used += n
    if b.steps is not None and b.used > b.steps:
        raise OutOfBudget("work")
    if b.deadline is not None and time.monotonic() > b.deadline:
        raise OutOfBudget("time")


def remaining() -> int | None:
    """Steps left in the innermost budget (None: unlimited or no budget)."""
    b = _current()
    if b is None or b.steps is None:
        return None
    return max(b.steps - b.used, 0)


def used() -> int:
    """Steps spent so far in the innermost budget (0 outside one)."""
    b = _current()
    return 0 if b is None else b.used


@contextlib.contextmanager
def limited(steps: int | None = None, seconds: float | None = None):
    """Run the block under a budget of ``steps`` work steps and ``seconds`` of wall clock
    (None: no limit). Raises :class:`OutOfBudget` inside the block when either runs out."""
    b = _Budget(steps, None if seconds is None else time.monotonic() + seconds)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(b)
    try:
        with _wall_clock(seconds):
            yield b
    finally:
        stack.pop()


@contextlib.contextmanager
def _wall_clock(seconds):
    if seconds is None:
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        previous = signal.getitimer(signal.ITIMER_REAL)
        if previous[0] > 0:  # an outer timer is running (a nested budget): rely on charge()
            yield
            return

        def handler(signum, frame):
            raise OutOfBudget("time")

        old = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        return
    # Off the main thread: a timer thread raises OutOfBudget asynchronously in this thread.
    tid = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    state = {"active": True, "fired": False}

    def fire():
        with lock:
            if state["active"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(tid, ctypes.py_object(_TimeUp))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["active"] = False
            timer.cancel()
            if state["fired"]:  # not yet delivered: withdraw it
                ctypes.pythonapi.PyThreadState_SetAsyncExc(tid, None)


class _TimeUp(OutOfBudget):
    """Raised asynchronously by the timer thread (the class must take no arguments)."""

    def __init__(self):
        super().__init__("time")
