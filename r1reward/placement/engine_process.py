"""Which process a vLLM engine runs its model in.

vLLM's V1 engine starts an engine-core process, and on the CPU that process starts one more for its
worker; each imports vLLM and torch again (about 7 s apiece on 2 cores). With one engine per Ray actor
and no tensor parallelism there is nothing to gain from either process: the actor is already a process
of its own. Keeping the engine core in the actor halves an engine's start-up (23 s -> 9 s for the tiny
model here) and changes no output (the same tokens and log-probs, checked with seeded sampling).
"""

from __future__ import annotations

import os

IN_PROCESS = "VLLM_ENABLE_V1_MULTIPROCESSING"


def keep_engine_core_in_process(tensor_parallel_size: int, cuda: bool) -> None:
    """Call before constructing `vllm.LLM`: on the CPU with one worker, engine core and worker stay in this
    process. On a GPU, or with tensor parallelism, vLLM keeps its own processes (it needs them there).
    A value the user set in the environment wins."""
    if not cuda and tensor_parallel_size == 1:
        os.environ.setdefault(IN_PROCESS, "0")
