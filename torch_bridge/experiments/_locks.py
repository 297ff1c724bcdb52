"""Claim files on a shared folder: who is training a model or running a job.

A claim is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local file systems
and on NFS v3+), holding the owner's host, pid namespace, pid and a random token. While a
process holds claims, a daemon thread refreshes their modification time every ``HEARTBEAT_S``
seconds. Only ``O_EXCL`` creation, reading, ``stat`` and ``unlink`` are used: no hard links,
no ``flock`` (neither works on every shared file system).

A claim is *stale* (its owner is gone and it may be broken) when

* its owner ran on this host (same hostname and pid namespace) and that pid no longer
  exists (a killed worker), or
* its file has not been refreshed for ``stale_after`` seconds (an owner on another host that
  died; default ``STALE_AFTER_S``), or it cannot be parsed and is that old.

Breaking a stale claim ``D/N`` takes a *break lock* first: ``D/.N.break-<id>.<g>``, created
with ``O_EXCL``, where ``<id>`` names the stale claim (its token; an unreadable one by inode and
modification time). Holding it, the breaker reads the claim again and removes it only if it is
still that stale claim. Only a break-lock holder ever removes a claim it does not own, and a
claim's ``<id>`` is never reused, so a worker acting on an old judgement finds another ``<id>``
and leaves the fresh claim alone: at most one worker holds a claim (given that a stale claim's
owner is really gone). A breaker killed while holding the break lock leaves it behind; when
that lock is stale by the same rule, the next breaker takes generation ``<g> + 1``.

A claim on ``D/N.<suffix>`` also covers the temporary files of ``D/N.*`` (``.N.<ext>.tmp...``):
only its holder writes them, so acquiring the claim removes those a killed owner left.
:func:`sweep_temporaries` removes the other orphaned temporary files of a folder by the
claims' rule (:func:`temp_path` names carry the writer's host tag and pid).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

__all__ = ["Claim", "try_claim", "claim_state", "HEARTBEAT_S", "STALE_AFTER_S", "atomic_write_text", "temp_path",
           "sweep_temporaries"]

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
#: Generations of break locks tried for one stale claim before giving up (each needs a breaker
#: killed inside the break itself, a window of two file operations).
_MAX_BREAKS = 8

_HELD: dict[str, "Claim"] = {}
_HELD_LOCK = threading.Lock()
_BEAT: threading.Thread | None = None


def _pid_namespace() -> str:
    """This process's pid namespace: containers on one host may share its hostname but not
    its pids, so a pid recorded in another namespace says nothing about its owner here."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_PIDNS = _pid_namespace()
#: This host and pid namespace in 8 hex digits: the part of a temporary file's name that says
#: whether its pid can be checked here.
_HOST_TAG = hashlib.sha256(f"{socket.gethostname()}\0{_PIDNS}".encode()).hexdigest()[:8]

# ".<name>.tmp<pid>[-<host tag>]-<random>[<suffix>]" (temp_path, atomic_write_text) or
# ".<name>.tmp<pid>[<suffix>]" (older writers); ".<name>.stale<pid>-<random>" was left by the
# claim breaking of earlier versions.
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:tmp|stale)(?P<pid>\d+)(?:-(?P<tag>[0-9a-f]{8}))?(?:-[0-9a-f]{6})?"
                   r"(?P<suffix>\.[A-Za-z0-9]+)?$")
# ".<claim name>.break-<id>.<generation>" (see _break)
_BREAK = re.compile(r"^\.(?P<claim>.+)\.break-(?P<ident>[A-Za-z0-9-]+)\.\d+$")


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """A temporary file next to ``path`` for writing it atomically (``os.replace`` it onto
    ``path``): ``.<name>.tmp<pid>-<host tag>-<random><suffix>``, so that
    :func:`sweep_temporaries` can tell an orphan of a killed writer on this host."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{_HOST_TAG}-{uuid.uuid4().hex[:6]}{suffix}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and ``os.replace`` it; the
    temporary file is removed if writing fails (a full disk leaves nothing behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_temporaries(folder: str | os.PathLike, *, stale_after: float = STALE_AFTER_S,
                      only_tagged: bool = False) -> list[Path]:
    """Remove the orphaned temporary files directly in ``folder``; returns those removed.

    A temporary file (see :func:`temp_path`; the older ``.<name>.tmp<pid>`` names too, unless
    ``only_tagged``: for a folder the user may share with other programs) is an orphan by the
    claims' rule: its name carries this host's tag and its pid is gone, or it has not been
    modified for ``stale_after`` seconds (a writer on another host, or a name without a host
    tag, whose pid cannot be checked here). A break lock left by a breaker that was killed is
    removed once its claim is gone or replaced (its id never comes back). A missing folder
    has none.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    now = time.time()
    for e in entries:
        b = _BREAK.match(e.name)
        if b is not None:
            if _judge(Path(folder) / b["claim"], stale_after)[2] != b["ident"]:
                Path(e.path).unlink(missing_ok=True)
                removed.append(Path(e.path))
            continue
        m = _TEMP.match(e.name)
        if m is None or (only_tagged and m["tag"] is None) or not e.is_file(follow_symlinks=False):
            continue
        try:
            age = now - e.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        dead_here = m["tag"] == _HOST_TAG and not _pid_alive(int(m["pid"]))
        if dead_here or age > stale_after:
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                continue
            removed.append(Path(e.path))
    return removed


def _sweep_covered(claim_path: Path) -> None:
    """Remove the temporary files ``.N.<ext>.tmp...`` of ``D/N.*`` covered by the claim
    ``D/N.<suffix>`` just acquired (``<ext>`` has no ``-``, so ``.N.`` never reaches into the
    files of another ``N``: zoo and job names end in ``-<seed or key>``)."""
    covered = re.compile(rf"^\.{re.escape(claim_path.stem)}\.[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)*\.tmp\d+")
    try:
        entries = list(os.scandir(claim_path.parent))
    except OSError:
        return
    for e in entries:
        if covered.match(e.name) and _TEMP.match(e.name):
            try:
                os.unlink(e.path)
            except OSError:
                pass


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
        except (OSError, ValueError, AttributeError):
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


def _create(path: Path, what: str) -> str | None:
    """Create the claim file ``path`` (``O_EXCL``) for this process; its token, or ``None``
    if the file exists."""
    token = uuid.uuid4().hex
    body = json.dumps({"host": socket.gethostname(), "pidns": _PIDNS, "pid": os.getpid(), "token": token,
                       "since": time.time(), "what": what}).encode()
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(fd, body)
    finally:
        os.close(fd)
    return token


def try_claim(path: str | os.PathLike, *, stale_after: float = STALE_AFTER_S, what: str = "") -> Claim | None:
    """Create the claim ``path`` for this process, breaking it first if stale.

    Returns the :class:`Claim`, or ``None`` when another live owner holds it (or another
    worker is breaking it right now and will take it). Acquiring it removes the temporary
    files the claim covers (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(4):
        token = _create(path, what)
        if token is None:
            state, _, ident = _judge(path, stale_after)
            if state == "held":
                return None
            if state == "stale":
                _break(path, ident, stale_after)
            continue
        claim = Claim(path, token)
        with _HELD_LOCK:
            _HELD[str(path)] = claim
        _start_heartbeat()
        _sweep_covered(path)
        return claim
    return None


def claim_state(path: str | os.PathLike, *, stale_after: float = STALE_AFTER_S) -> tuple[str, dict]:
    """``("free" | "held" | "stale", owner info)`` of the claim file ``path``."""
    state, info, _ = _judge(Path(path), stale_after)
    return state, info


def _judge(path: Path, stale_after: float) -> tuple[str, dict, str]:
    """``(state, owner info, id)`` of the claim file ``path``; the id names this very claim
    (its token, or for an unreadable file its inode and modification time) and is never
    shared by a later claim at the same path."""
    try:
        text = path.read_text()
        st = path.stat()  # after the read: a claim replaced in between shows its own (young) age
    except FileNotFoundError:
        return "free", {}, ""
    age = time.time() - st.st_mtime
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError(text)
    except ValueError:  # being written right now, or truncated by a crash
        return ("stale" if age > stale_after else "held"), {}, f"i{st.st_ino}-{st.st_mtime_ns}"
    token = "".join(c for c in str(info.get("token", "")) if c.isalnum())[:40]
    ident = f"t{token}" if token else f"i{st.st_ino}-{st.st_mtime_ns}"
    here = info.get("host") == socket.gethostname() and info.get("pidns", _PIDNS) == _PIDNS
    try:
        pid = int(info.get("pid", -1))
    except (TypeError, ValueError):
        pid = -1
    if here and not _pid_alive(pid):
        return "stale", info, ident
    if age > stale_after:
        return "stale", info, ident
    return "held", info, ident


def _break(path: Path, ident: str, stale_after: float = STALE_AFTER_S) -> None:
    """Remove the claim ``path`` if it is still the stale claim ``ident``, holding its break
    lock (see the module docstring); returns without doing anything while another live
    worker holds that lock."""
    for gen in range(_MAX_BREAKS):
        lock = path.with_name(f".{path.name}.break-{ident}.{gen}")
        if _create(lock, f"break {path.name}") is None:
            if _judge(lock, stale_after)[0] == "stale":
                continue  # its breaker was killed inside the break: the next generation
            return
        try:
            state, _, now = _judge(path, stale_after)
            if state == "stale" and now == ident:
                path.unlink(missing_ok=True)
        finally:
            # every break lock of ``ident`` is garbage now: the claim ``ident`` is gone for good
            for g in range(gen, -1, -1):
                path.with_name(f".{path.name}.break-{ident}.{g}").unlink(missing_ok=True)
        return
