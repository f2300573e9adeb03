"""The training order: a per-epoch seeded shuffle that is a pure function of the step, shared by RL
and SFT, so a resumed run continues where it stopped and every learner gets a mix of sources."""

from __future__ import annotations

from collections import Counter

import pytest

from r1reward.config import load_config
from r1reward.data.dataset import PreferenceDataset
from r1reward.data.order import epoch_order, position, step_indices, steps_for_epochs
from r1reward.data.records import PreferenceRecord
from r1reward.placement.remote import split
from r1reward.trainer.driver import Trainer

SOURCES = ("rlaif-v", "vl-feedback", "povid", "wildvision")


def grouped_records(per_source: int = 16) -> list[PreferenceRecord]:
    """A file grouped by source, as the released RL shards are."""
    return [
        PreferenceRecord(f"{source}-{i}", f"q {source} {i}", [], f"a {i}", f"b {i}", 1 + i % 2, source=source)
        for source in SOURCES
        for i in range(per_source)
    ]


def trainer_on(records: list[PreferenceRecord], batch: int, seed: int = 0) -> Trainer:
    """A Trainer with its data set but no actors: `_records_for` needs nothing else."""
    config = load_config(
        None,
        [
            f"trainer.rollout_batch_size={batch}",
            f"data.seed={seed}",
            "learner.train_batch_size=4",
            "learner.num_ranks=2",
            "learner.micro_batch_size=2",
        ],
    )
    trainer = Trainer(config)
    trainer.dataset = PreferenceDataset(records, swap_seed=seed)
    return trainer


def view(records: list[PreferenceRecord]) -> list[tuple[str, int]]:
    return [(r.id, r.label) for r in records]  # the label shows the position swap of the epoch


def test_epoch_order_is_a_seeded_permutation_that_changes_per_epoch():
    assert sorted(epoch_order(50, 0, 3)) == list(range(50))
    assert epoch_order(50, 0, 3) == epoch_order(50, 0, 3)
    assert epoch_order(50, 0, 3) != epoch_order(50, 1, 3) != epoch_order(50, 1, 4)
    assert epoch_order(50, 0, 3) != list(range(50))


def test_position_and_step_indices_cross_epochs():
    assert position(0, 4, 10) == (0, 0) and position(2, 4, 10) == (0, 8) and position(3, 4, 10) == (1, 2)
    indices = step_indices(2, 4, 10, seed=1)  # positions 8, 9 of epoch 0, then 0, 1 of epoch 1
    assert indices == [
        (0, epoch_order(10, 0, 1)[8]),
        (0, epoch_order(10, 0, 1)[9]),
        (1, epoch_order(10, 1, 1)[0]),
        (1, epoch_order(10, 1, 1)[1]),
    ]
    # Over one epoch every example is seen exactly once.
    seen = [i for step in range(5) for _, i in step_indices(step, 2, 10, seed=7)]
    assert sorted(seen) == list(range(10))
    with pytest.raises(ValueError):
        position(0, 4, 0)


def test_steps_for_epochs_drops_the_partial_last_batch():
    assert steps_for_epochs(17_261, 1, 256) == 67  # the released RL set, one epoch of 256 prompts
    assert steps_for_epochs(17_261, 2, 256) == 134 and steps_for_epochs(10, 1, 256) == 1


def test_resumed_trainer_sees_the_records_of_an_uninterrupted_run():
    records = grouped_records()
    uninterrupted = trainer_on(records, batch=24)
    full = [view(uninterrupted._records_for(step)) for step in range(8)]  # 64 rows: crosses 2 epochs
    resumed = trainer_on(records, batch=24)  # a fresh Trainer, as after trainer.resume=true at step 5
    assert [view(resumed._records_for(step)) for step in range(5, 8)] == full[5:]
    assert view(resumed._records_for(1)) == full[1]  # any order of calls: a pure function of the step
    # The walk is shuffled, not the file order, and a different seed gives a different walk.
    assert [r.id for r in records[:24]] != [i for i, _ in full[0]]
    other = trainer_on(records, batch=24, seed=1)
    assert view(other._records_for(0)) != full[0]


def test_each_step_and_each_learner_slice_mix_sources():
    trainer = trainer_on(grouped_records(), batch=16)
    for step in range(8):
        batch = trainer._records_for(step)
        assert len({r.source for r in batch}) > 1, step
        for part in split(batch, 2):  # what each of two learner ranks gets
            assert len({r.source for r in part}) > 1, (step, Counter(r.source for r in part))
