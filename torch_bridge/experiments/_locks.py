"""Claim files on a shared folder: who is training a model or running a job.

A claim is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local file systems
and on NFS v3+), holding the owner's host, pid and a random token. While a process holds
claims, a daemon thread refreshes their modification time every ``HEARTBEAT_S`` seconds.

A claim is *stale* (its owner is gone and it may be broken) when

* its owner ran on this host (same hostname and pid namespace) and that pid no longer
  exists (a killed worker), or
* its file has not been refreshed for ``stale_after`` seconds (an owner on another host that
  died; default ``STALE_AFTER_S``), or it cannot be parsed and is that old.

Breaking a stale claim renames it to a unique name first and checks the token, so two
processes that both judge a claim stale never remove each other's fresh claim.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

__all__ = ["Claim", "try_claim", "claim_state", "HEARTBEAT_S", "STALE_AFTER_S", "atomic_write_text"]

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0

_HELD: dict[str, "Claim"] = {}
_HELD_LOCK = threading.Lock()
_BEAT: threading.Thread | None = None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and ``os.replace`` it; the
    temporary file is removed if writing fails (a full disk leaves nothing behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pid_namespace() -> str:
    """This process's pid namespace: containers on one host may share its hostname but not
    its pids, so a pid recorded in another namespace says nothing about its owner here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_PIDNS = _pid_namespace()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class Claim:
    """A claim held by this process (release it with :meth:`release` or ``with``)."""

    def __init__(self, path: Path, token: str):
        self.path, self.token = path, token

    def release(self) -> None:
        with _HELD_LOCK:
            _HELD.pop(str(self.path), None)
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _heartbeat() -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        with _HELD_LOCK:
            paths = [c.path for c in _HELD.values()]
        for p in paths:
            try:
                os.utime(p)
            except OSError:
                pass


def _start_heartbeat() -> None:
    global _BEAT
    if _BEAT is None or not _BEAT.is_alive():
        _BEAT = threading.Thread(target=_heartbeat, name="groupcalc-claims", daemon=True)
        _BEAT.start()


def try_claim(path: str | os.PathLike, *, stale_after: float = STALE_AFTER_S, what: str = "") -> Claim | None:
    """Create the claim ``path`` for this process, breaking it first if stale.

    Returns the :class:`Claim`, or ``None`` when another live owner holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    body = json.dumps({"host": socket.gethostname(), "pidns": _PIDNS, "pid": os.getpid(), "token": token,
                       "since": time.time(), "what": what}).encode()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            state, info = claim_state(path, stale_after=stale_after)
            if state == "held":
                return None
            if state == "stale":
                _break(path, info, stale_after)
            continue
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        claim = Claim(path, token)
        with _HELD_LOCK:
            _HELD[str(path)] = claim
        _start_heartbeat()
        return claim
    return None


def claim_state(path: str | os.PathLike, *, stale_after: float = STALE_AFTER_S) -> tuple[str, dict]:
    """``("free" | "held" | "stale", owner info)`` of the claim file ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "free", {}
    try:
        info = json.loads(text)
    except ValueError:  # being written right now, or truncated by a crash
        return ("stale" if age > stale_after else "held"), {}
    here = info.get("host") == socket.gethostname() and info.get("pidns", _PIDNS) == _PIDNS
    if here and not _pid_alive(int(info.get("pid", -1))):
        return "stale", info
    if age > stale_after:
        return "stale", info
    return "held", info


def _break(path: Path, info: dict, stale_after: float = STALE_AFTER_S) -> None:
    aside = path.with_name(f".{path.name}.stale{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    # What was moved aside must still be the stale claim judged before (same token, still
    # stale): an unreadable stale claim has no token, so the token alone cannot tell it from
    # a fresh claim another worker created after breaking it first.
    state, taken = claim_state(aside, stale_after=stale_after)
    if state != "stale" or taken.get("token") != info.get("token"):
        # A fresh claim replaced the stale one between our check and the rename: put it back.
        try:
            os.link(aside, path)
        except OSError:
            pass
    aside.unlink(missing_ok=True)
