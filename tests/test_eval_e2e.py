"""End to end on the CPU with vLLM and the tiny random Qwen2.5-VL: the three benchmarks, the API and score.

One in-process engine is shared by every test here. The random model writes noise, so votes come
mostly from the lenient rule's fallback (the last "1"/"2" in the text) and many do not parse: the
tests recount each metrics file from predictions.jsonl rather than expect any accuracy.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from helpers import MRB_ROWS, placeholder_images, run_cli, write_jsonl
from r1reward.algo.reward import parse_choice_lenient
from r1reward.eval.runner import EvalOptions, run_eval

pytestmark = pytest.mark.slow
MAX_PIXELS = 64 * 28 * 28  # small images keep the tiny model's prompts short


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from transformers import AutoProcessor

    from r1reward.data.render import MIN_PIXELS
    from r1reward.eval.generation import close_engine, eval_rollout_config, start_engine

    worker = start_engine(str(tiny_model_dir), eval_rollout_config(64), (MIN_PIXELS, MAX_PIXELS))
    yield worker, AutoProcessor.from_pretrained(tiny_model_dir)
    close_engine(worker)


def evaluate(engine, benchmark: str, data: Path, out: Path, **kw) -> tuple[dict, list[dict]]:
    options = EvalOptions(benchmark, str(data), str(out), k=3, max_tokens=64, max_pixels=MAX_PIXELS, **kw)
    metrics = run_eval(options, *engine)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "metrics.md").is_file() and (out / "scaling.png").read_bytes()[:4] == b"\x89PNG"
    return metrics, [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def vote(votes: list) -> int | None:
    counts = Counter(v for v in votes if v in (1, 2))
    if counts[1] != counts[2]:
        return 1 if counts[1] > counts[2] else 2
    return next((v for v in votes if v in (1, 2)), None)


def check_recount(metrics: dict, preds: list[dict], labels: list[int], out: Path) -> None:
    """The metrics file agrees with a count made here from predictions.jsonl and generations.jsonl."""
    scored = [(p, label) for p, label in zip(preds, labels) if not p.get("skipped")]
    for p, label in scored:
        assert len(p["votes"]) == 3 and p["choice"] == vote(p["votes"]) and p["correct"] == (p["choice"] == label)
    assert metrics["evaluated"] == len(scored)
    assert metrics["overall"] == pytest.approx(sum(p["correct"] for p, _ in scored) / len(scored))
    for k in (1, 2, 3):
        assert metrics["voting_at_k"][str(k)] == pytest.approx(
            sum(vote(p["votes"][:k]) == label for p, label in scored) / len(scored)
        )
        assert metrics["any_at_k"][str(k)] == pytest.approx(
            sum(label in p["votes"][:k] for p, label in scored) / len(scored)
        )
    votes = [v for p, _ in scored for v in p["votes"]]
    assert metrics["parse_failure_rate"] == pytest.approx(votes.count(None) / len(votes))
    texts = {g["index"]: g["texts"] for g in map(json.loads, (out / "generations.jsonl").read_text().splitlines())}
    assert all([parse_choice_lenient(t) for t in texts[p["index"]]] == p["votes"] for p, _ in scored)
    for category, count in metrics["category_counts"].items():
        rows = [p for p, _ in scored if p["category"] == category]
        assert count == {"correct": sum(p["correct"] for p in rows), "total": len(rows)}


def test_vl_rewardbench_first_24_rows(engine, tmp_path, benchmarks_dir):
    data = benchmarks_dir / "vl_rewardbench.jsonl"
    placeholder_images(tmp_path, data, limit=24)
    out = tmp_path / "out"
    metrics, preds = evaluate(engine, "vl-rewardbench", data, out, image_root=str(tmp_path), limit=24)
    raw = [json.loads(line) for line in data.read_text().splitlines()[:24]]
    assert [(p["index"], p["id"]) for p in preds] == [(n, r["id"]) for n, r in enumerate(raw)]
    check_recount(metrics, preds, [1] * 24, out)  # the released file puts the chosen response first
    assert metrics["category_counts"]["hallucination"]["total"] == 24  # the file starts with them
    assert metrics["categories"]["general"] is None and "categories_paper_script" in metrics
    assert metrics["run"]["k"] == 3 and 0 <= metrics["run"]["truncated_rate"] <= 1
    # eval-metrics on the same predictions reproduces everything but the run details.
    assert (
        run_cli(
            [
                "eval-metrics",
                "--benchmark",
                "vl-rewardbench",
                "--data",
                str(data),
                "--limit",
                "24",
                "--predictions",
                str(out / "predictions.jsonl"),
                "--out",
                str(tmp_path / "again.json"),
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "again.json").read_text())
    assert again == {k: v for k, v in metrics.items() if k != "run"}


def test_mm_rlhf_rewardbench_skipping_video_rows(engine, tmp_path, benchmarks_dir):
    data = benchmarks_dir / "mm_rlhf_rewardbench.jsonl"
    placeholder_images(tmp_path, data)
    out = tmp_path / "out"
    metrics, preds = evaluate(
        engine, "mm-rlhf-rewardbench", data, out, image_root=str(tmp_path), skip_missing_images=True
    )
    assert len(preds) == 170 and metrics["skipped_by_reason"] == {"video-missing": 25}
    assert {p["category"] for p in preds if p.get("skipped")} == {"video"}
    check_recount(metrics, preds, [1] * 170, out)
    ids: dict[str, bool] = {}
    for p in preds:
        if not p.get("skipped"):
            ids[p["id"]] = ids.get(p["id"], True) and p["correct"]
    assert metrics["acc_plus"] == pytest.approx(sum(ids.values()) / len(ids))
    assert metrics["acc_plus_counts"]["ids"] == len(ids) < 46


def test_multimodal_rewardbench_with_swap(engine, tmp_path):
    for n in range(len(MRB_ROWS)):
        Image.new("RGB", (40 + 8 * n, 30), (20 * n, 100, 200)).save(tmp_path / f"{n}.png")
    data = write_jsonl(
        tmp_path / "mrb.jsonl",
        [
            {
                "ID": i,
                "Text": f"What is shown in picture {n}?",
                "Image": f"{n}.png",
                "Output1": f"A red shape {n}.",
                "Output2": f"Two blue shapes {n}.",
                "Better": better,
                "Category": category,
            }
            for n, (i, category, better) in enumerate(MRB_ROWS)
        ],
    )
    out = tmp_path / "out"
    metrics, preds = evaluate(engine, "multimodal-rewardbench", data, out, swap=True)
    labels = [1 if better == "Output1" else 2 for _, _, better in MRB_ROWS]
    for p, label in zip(preds, labels):
        assert p["correct_swapped"] == (vote(p["votes_swapped"]) == 3 - label)
        assert p["correct"] == (p["correct_original"] and p["correct_swapped"])
    assert metrics["orders"]["original"]["overall"] == pytest.approx(
        sum(p["correct_original"] for p in preds) / len(preds)
    )
    assert metrics["orders"]["swapped"]["overall"] == pytest.approx(
        sum(p["correct_swapped"] for p in preds) / len(preds)
    )
    assert metrics["overall"] == pytest.approx(sum(p["correct"] for p in preds) / len(preds))
    assert metrics["generations"] == 2 * 3 * len(MRB_ROWS)
    assert list(metrics["categories"]) == [
        "correctness",
        "preference",
        "knowledge",
        "reasoning/math",
        "reasoning/coding",
        "safety/bias",
        "safety/toxicity",
        "vqa",
    ]


def test_reward_model_api_and_score(engine, tmp_path):
    from r1reward.eval.api import RewardModel
    from r1reward.eval.score import load_pairs, score_pairs

    model = RewardModel(*engine, max_tokens=64, max_pixels=MAX_PIXELS)
    image = Image.new("RGB", (60, 40), "red")
    comparison = model.compare("What colour is the image?", [image], "It is red.", "It is blue.", k=3)
    assert comparison.winner in (1, 2, None) and len(comparison.votes) == len(comparison.texts) == 3
    assert comparison.vote_share == pytest.approx(
        comparison.votes.count(comparison.winner) / 3 if comparison.winner else 0.0
    )
    responses = ["It is red.", "It is blue.", "It is green."]
    ranking = model.rank("What colour is the image?", [image], responses, k=1)
    assert len(ranking.comparisons) == 6 and sorted(ranking.order) == [0, 1, 2]
    assert sum(ranking.wins) == sum(c.winner is not None for c in ranking.comparisons.values())
    assert [ranking.wins[i] for i in ranking.order] == sorted(ranking.wins, reverse=True)
    image.save(tmp_path / "red.png")
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "id": "p1",
                "question": "Colour?",
                "images": ["red.png"],
                "response_1": "red",
                "response_2": "blue",
                "label": 1,
            },
            {"id": "p2", "question": "Colour?", "images": "red.png", "response_1": "blue", "response_2": "red"},
        ],
    )
    summary = score_pairs(model, load_pairs(pairs), tmp_path / "scores.jsonl", k=2)
    lines = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["p1", "p2"] and all(len(line["votes"]) == 2 for line in lines)
    assert summary == {"pairs": 2, "judged": 2, "skipped": 0, "labelled": 1, "accuracy": float(lines[0]["correct"])}
    assert "correct" not in lines[1]


def test_two_engines_on_their_own_placement_group_answer_as_the_in_process_one(engine, tiny_model_dir):
    """`--workers 2`: a RolloutGroup on a rollout-only placement group of its own (and a Ray started here
    when none runs). Same seeds, same answers as the in-process engine; closing gives all of it back."""
    import ray

    from r1reward.data.render import MIN_PIXELS
    from r1reward.eval.generation import close_engine, eval_rollout_config, start_engine

    prompts = [{"prompt": f"Is {i} an even number?"} for i in range(3)]
    seeds = [7, 8, 9]
    started_here = not ray.is_initialized()
    group = start_engine(str(tiny_model_dir), eval_rollout_config(64), (MIN_PIXELS, MAX_PIXELS), workers=2)
    try:
        assert len(group) == 2 and ray.is_initialized()
        table = ray.util.placement_group_table(group.placement_group)
        assert table["state"] == "CREATED" and list(table["bundles"].values()) == [{"CPU": 1.0}] * 2
        pg = group.placement_group
        answers = group.generate(prompts, n=2, max_tokens=16, seeds=seeds)
    finally:
        close_engine(group)
    if started_here:
        assert not ray.is_initialized()
    else:
        assert ray.util.placement_group_table(pg)["state"] == "REMOVED"
    expected = engine[0].generate(prompts, n=2, max_tokens=16, seeds=seeds)
    assert [[g["text"] for g in r["generations"]] for r in answers] == [
        [g["text"] for g in r["generations"]] for r in expected
    ]
