"""Nothing outlives the run: what a training driver starts ends when the driver dies, however it dies.

- `start_guard()` (the driver, before it starts a local Ray): a small watcher process holds the read
  end of a pipe whose write end only the driver holds. The kernel closes it when the driver exits, even
  on SIGKILL, and the watcher then SIGKILLs every process it last saw below the driver (the local Ray:
  GCS, raylet, agents, workers, and the vLLM engine processes under the rollout workers). It re-reads
  the process tree every `poll_s` seconds while the driver lives.
- `exit_with_parent()` (every vLLM engine process, from the vLLM plugin): a thread that ends the
  process when its parent (the rollout actor, or the engine core for a vLLM worker) is gone, for the
  case where Ray kills an actor hard on a cluster the driver only joined.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

_guard: dict[str, object] = {}
_parent_watch: list[threading.Thread] = []


def start_guard(poll_s: float = 1.0) -> int | None:
    """Starts the watcher once per process; returns its pid."""
    if "proc" in _guard:
        return _guard["proc"].pid  # type: ignore[union-attr]
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "r1reward.lifetime", str(os.getpid()), str(read_end), str(poll_s)],
        pass_fds=(read_end,),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(read_end)
    _guard.update(proc=proc, write_end=write_end)  # the write end stays open for the driver's life
    return proc.pid


def _snapshot(root: int) -> dict[int, float]:
    import psutil

    try:
        return {p.pid: p.create_time() for p in psutil.Process(root).children(recursive=True) if p.pid != os.getpid()}
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {}


def _kill_all(seen: dict[int, float]) -> list[int]:
    import psutil

    killed = []
    for pid, created in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:  # not a new process that reuses the number
                proc.send_signal(signal.SIGKILL)
                killed.append(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def _watch(driver: int, read_end: int, poll_s: float) -> None:
    seen: dict[int, float] = {}
    while True:
        readable, _, _ = select.select([read_end], [], [], poll_s)
        if readable and not os.read(read_end, 1):  # EOF: the driver is gone
            break
        now = _snapshot(driver)
        if now:
            seen.update(now)
            seen = {pid: t for pid, t in seen.items() if pid in now or _alive(pid, t)}
    killed = _kill_all(seen)
    if killed:
        print(f"r1reward: driver {driver} is gone; killed {len(killed)} process(es) it had started", file=sys.stderr)


def _alive(pid: int, created: float) -> bool:
    import psutil

    try:
        return psutil.Process(pid).create_time() == created
    except psutil.NoSuchProcess:
        return False


def exit_with_parent(poll_s: float = 1.0) -> None:
    """Ends this process (os._exit) once its parent is gone (it is then re-parented)."""
    if _parent_watch:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        print(f"r1reward: parent {parent} of {os.getpid()} is gone; exiting", file=sys.stderr, flush=True)
        os._exit(1)

    thread = threading.Thread(target=watch, name="r1reward-exit-with-parent", daemon=True)
    thread.start()
    _parent_watch.append(thread)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal is the driver's to handle
    _watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
