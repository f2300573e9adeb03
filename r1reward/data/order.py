"""The order in which training examples are visited: shuffled per epoch, a pure function of the step.

RL (trainer/driver.py) and SFT (trainer/sft.py) both draw step `s`'s batch as the positions
`s * batch ... (s + 1) * batch - 1` of an endless stream made of one seeded permutation per epoch.
Nothing here has state, so a resumed run that starts at step k sees exactly the examples an
uninterrupted run sees at step k, and the data files may be grouped (e.g. by source) on disk.
"""

from __future__ import annotations

import random


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """A permutation of range(n), the same for the same (n, epoch, seed)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def position(step: int, batch: int, n: int) -> tuple[int, int]:
    """(epoch, offset into that epoch's order) of the first example of `step`'s batch."""
    if n <= 0 or batch <= 0:
        raise ValueError(f"need n > 0 and batch > 0, got n={n}, batch={batch}")
    return divmod(step * batch, n)


def step_indices(step: int, batch: int, n: int, seed: int) -> list[tuple[int, int]]:
    """(epoch, example index) for each of `step`'s `batch` examples; a batch may span two epochs."""
    epoch, offset = position(step, batch, n)
    out, order = [], epoch_order(n, epoch, seed)
    for _ in range(batch):
        if offset == n:
            epoch, offset = epoch + 1, 0
            order = epoch_order(n, epoch, seed)
        out.append((epoch, order[offset]))
        offset += 1
    return out


def steps_for_epochs(n: int, epochs: float, batch: int) -> int:
    """Steps that cover `epochs` passes over n examples; a partial last batch is dropped (as OpenRLHF's
    drop_last does), but there is always at least one step."""
    return max(1, int(n * epochs // batch))
