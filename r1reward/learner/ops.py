"""DeepSpeed's compiled ops on the learner's start-up path.

On the CPU, `deepspeed.init_distributed` loads the shared-memory comm op (`deepspeed_shm_comm`) with
torch's JIT extension loader, which takes a lock file in the build directory and, if the lock is
already there, waits for it to go away, for ever and silently. A build killed mid-way leaves the lock
behind. `make env` builds the op at install time (`build_cpu_ops`), and the learner waits on any such
lock for at most `lock_timeout_s`, then fails with the lock file named.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_TIMEOUT_S = float(os.environ.get("R1REWARD_EXTENSION_LOCK_TIMEOUT_S", "300"))


class ExtensionLockTimeout(TimeoutError):
    pass


@contextmanager
def bounded_extension_lock(timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Within the block, a wait on a torch extension build lock gives up after `timeout_s`."""
    from torch.utils.file_baton import FileBaton

    original = FileBaton.wait

    def wait(self) -> None:
        deadline = time.monotonic() + timeout_s
        while os.path.exists(self.lock_file_path):
            if time.monotonic() > deadline:
                raise ExtensionLockTimeout(
                    f"waited {timeout_s:.0f} s for the build lock {self.lock_file_path}: another process is "
                    f"compiling this op, or one was killed mid-build and left the lock behind. If no build is "
                    f"running (no ninja or c++ process), remove it: rm {self.lock_file_path}"
                )
            time.sleep(self.wait_seconds)

    FileBaton.wait = wait
    try:
        yield
    finally:
        FileBaton.wait = original


def build_cpu_ops() -> str:
    """Builds (or finds built) DeepSpeed's CPU shared-memory comm op; returns its name. `make env`."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    builder = ShareMemCommBuilder()
    with bounded_extension_lock():
        builder.load()
    return builder.absolute_name()


if __name__ == "__main__":
    print(f"built {build_cpu_ops()}")
