"""The RL step's order of calls, with and without generating ahead (trainer.max_staleness), on fakes.

The role groups are replaced by recording fakes (the real ones run in test_e2e_train.py). The fake
rollout group generates a batch only when it is collected, with whatever weights it holds then, as a
worker that received a sync before running a queued request would: a driver that synced before the
in-flight generations ended would tag samples with a version their weights do not have.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import r1reward.trainer.driver as driver
from r1reward.config.schema import Config


class FakeRollout:
    roles = ["rollout worker 0"]

    def __init__(self, log: list) -> None:
        self.log, self.version = log, 0

    def generate_async(self, prompts, n, seeds):
        self.log.append(("generate", tuple(seeds)))
        return SimpleNamespace(prompts=prompts, n=n, results=None, busy_s={"rollout worker 0": 0.25})

    def collect(self, handle):
        if handle.results is None:  # the worker runs the request now, on the weights it holds now
            self.log.append(("ran", self.version))
            handle.results = [
                {
                    "prompt_token_ids": p["prompt_ids"],
                    "generations": [
                        {"token_ids": [5, 6], "logprobs": [-float(self.version)] * 2, "text": "t"}
                        for _ in range(handle.n)
                    ],
                }
                for p in handle.prompts
            ]
        return handle.results


class FakeLearners:
    def __init__(self, log: list, rollout: FakeRollout) -> None:
        self.log, self.rollout = log, rollout

    def compute_logprobs(self, samples):
        self.log.append(("logprobs",))
        return [{"old_logprobs": [s.sampler_logprobs for s in samples]}]

    def train(self, samples):
        self.log.append(("train", tuple(s.policy_version for s in samples)))
        return [{"loss": 0.0}]

    def push_weights(self):
        self.log.append(("sync",))
        self.rollout.version += 1


class FakeReward:
    def __init__(self, log: list) -> None:
        self.log = log

    def score(self, texts, labels):
        self.log.append(("score",))
        return {
            "reward": [float(i) for i in range(len(texts))],
            **dict.fromkeys(("reward_mean", "format_rate", "result_rate", "consistency_mean"), 0.5),
            "judge_failures": 0,
            "judge_failure_rate": 0.0,
            "parse_failures": 0,
        }


@pytest.fixture
def make_trainer(monkeypatch):
    def prompt(processor, record, min_pixels, max_pixels):
        return {"prompt": "p", "images": [], "label": 1, "prompt_ids": [1, record], "pixel_values": None,
                "image_grid_thw": None}  # fmt: skip

    monkeypatch.setattr(driver, "prepare_prompt", prompt)

    def make(eta: int, steps: int = 3):
        config = Config()
        config.trainer.num_steps, config.trainer.rollout_batch_size, config.trainer.max_staleness = steps, 2, eta
        config.rollout.n_samples_per_prompt = 2
        trainer, log = driver.Trainer(config), []
        trainer.rollout = FakeRollout(log)
        trainer.learners, trainer.reward = FakeLearners(log, trainer.rollout), FakeReward(log)
        trainer.dataset = _Dataset()
        trainer.processor = SimpleNamespace(tokenizer=SimpleNamespace(decode=lambda ids: "<answer>" * (6 in ids)))
        return trainer, log

    return make


class _Dataset:
    epoch = 0

    def __len__(self) -> int:
        return 100

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> int:
        return index


def _run(trainer, steps: int) -> list[dict]:
    rows = []
    for step in range(steps):
        rows.append(trainer.train_step(step))
        trainer.step = step + 1
    return rows


def test_eta_0_is_the_synchronous_step_and_eta_1_generates_the_next_batch_during_training(make_trainer):
    sync, sync_log = make_trainer(eta=0)
    sync_rows = _run(sync, 3)
    seeds = [entry[1] for entry in sync_log if entry[0] == "generate"]
    # eta = 0: the paper's order, step by step; each batch runs on the weights of its own step.
    one_step = ["generate", "ran", "score", "logprobs", "train", "sync"]
    assert [entry[0] for entry in sync_log] == one_step * 3
    assert [entry[1] for entry in sync_log if entry[0] == "train"] == [(0,) * 4, (1,) * 4, (2,) * 4]
    assert [(r["staleness/0"], r["staleness/dropped"]) for r in sync_rows] == [(4, 0)] * 3

    ahead, log = make_trainer(eta=1)
    rows = _run(ahead, 3)
    assert [entry[0] for entry in log] == [
        *["generate", "ran", "generate", "score", "logprobs", "train", "ran", "sync"],  # step 2's batch meanwhile
        *["generate", "score", "logprobs", "train", "ran", "sync"],
        *["score", "logprobs", "train", "sync"],  # the last step starts nothing ahead
    ]
    # The same seeds per step; each batch ran on the weights before the sync that followed it (its version).
    assert [entry[1] for entry in log if entry[0] == "generate"] == seeds
    assert [entry[1] for entry in log if entry[0] == "ran"] == [0, 0, 1]
    assert [entry[1] for entry in log if entry[0] == "train"] == [(0,) * 4, (0,) * 4, (1,) * 4]
    assert [(r["staleness/0"], r["staleness/1"]) for r in rows] == [(4, 0), (0, 4), (0, 4)]
    # The sampler's log-probs are those of the version the samples claim (the fake writes -version).
    assert [r["logprob_gap/max"] for r in rows] == [0.0, 0.0, 0.0]
    assert rows[0]["mismatch/answer/max_gap"] == 0.0  # the fake's answer is its last token
    for row in rows:
        assert 0 <= row["idle/rollout"] <= 1 and 0 <= row["idle/learner"] <= 1


def test_a_batch_staler_than_eta_is_dropped_counted_and_generated_again(make_trainer):
    trainer, log = make_trainer(eta=2)
    _run(trainer, 2)  # steps 1 and 2 were generated at step 0 on version 0: step 2 is 2 versions behind
    trainer.config.trainer.max_staleness = 1
    del log[:]
    row = trainer.train_step(2)
    assert (row["staleness/0"], row["staleness/1"], row["staleness/dropped"]) == (4, 0, 4)
    # Its prompts are generated again, with the step's own seeds, on the current weights (version 2).
    assert log[:3] == [("generate", tuple(trainer._seeds(2, 2))), ("ran", 2), ("score",)]
    assert ("train", (2,) * 4) in log


def test_the_step_row_takes_the_ranks_largest_ratio_and_token_weighted_fractions(make_trainer):
    trainer, _ = make_trainer(eta=0)
    ranks = [
        {"ratio_max": 1.2, "clip_frac": 0.5, "loss": 0.25, "loss_tokens": 4.0, "lr": 1e-4},
        {"ratio_max": 30.0, "clip_frac": 0.0, "loss": 1.0, "loss_tokens": 12.0, "lr": 1e-4},
    ]
    trainer.learners.train = lambda samples: ranks
    row = trainer.train_step(0)
    assert row["ratio_max"] == 30.0  # the step's largest ratio, from rank 1, not the ranks' mean
    assert row["clip_frac"] == pytest.approx(2 / 16)  # 2 clipped tokens of 16
    assert row["loss"] == pytest.approx((0.25 * 4 + 1.0 * 12) / 16)
    assert row["loss_tokens"] == 16.0 and row["lr"] == pytest.approx(1e-4)
