"""Counting rules of the three benchmarks, from crafted predictions (no model): eval-metrics end to end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers import MRB_ROWS, run_cli, write_jsonl
from r1reward.errors import UserError
from r1reward.eval.benchmarks import multimodal_rewardbench_category, read_benchmark
from r1reward.eval.metrics import compute_metrics
from r1reward.eval.report import markdown_table
from r1reward.eval.voting import majority_vote


def eval_metrics(tmp_path: Path, benchmark: str, data: Path, predictions: list[dict], *extra: str) -> dict:
    preds = write_jsonl(tmp_path / "predictions.jsonl", predictions)
    out = tmp_path / "metrics.json"
    assert (
        run_cli(
            [
                "eval-metrics",
                "--benchmark",
                benchmark,
                "--data",
                str(data),
                "--predictions",
                str(preds),
                "--out",
                str(out),
                *extra,
            ]
        )
        == 0
    )
    return json.loads(out.read_text())


# --- voting rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "votes, expected",
    [
        ([1, 2, 2], 2),
        ([2, 1, 1], 1),
        ([1, 2], 1),
        ([2, 1], 2),  # ties go to the earliest parsed vote
        ([None, 2, 1], 2),
        ([None, None, 1], 1),
        ([None, None], None),
        ([], None),
    ],
)
def test_majority_vote(votes, expected):
    assert majority_vote(votes) == expected


# --- VL-RewardBench -----------------------------------------------------------------------------------
def test_vl_rewardbench_category_counts_on_the_real_file(benchmarks_dir):
    rows = read_benchmark(benchmarks_dir / "vl_rewardbench.jsonl", "vl-rewardbench")
    assert len(rows) == 1250
    # The benchmark's own split (case-insensitive) and the R1-Reward script's (case-sensitive).
    assert Counter(r.category for r in rows) == {"general": 183, "hallucination": 749, "reasoning": 318}
    assert Counter(r.category_paper_script for r in rows) == {"general": 484, "hallucination": 448, "reasoning": 318}
    moved = Counter(r.id.split("-")[0].split("_")[0] for r in rows if r.category != r.category_paper_script)
    assert moved == {"RLAIF": 233, "RLHF": 68}  # upper-case hallucination ids the script calls general


def test_vl_rewardbench_metrics_from_crafted_predictions(tmp_path, benchmarks_dir):
    data = benchmarks_dir / "vl_rewardbench.jsonl"
    ids = [json.loads(line)["id"] for line in data.read_text().splitlines()]
    preds = [{"id": i, "correct": n % 3 != 0} for n, i in enumerate(ids)]  # 2 of 3 right
    metrics = eval_metrics(tmp_path, "vl-rewardbench", data, preds)

    def split(row_id: str, lower: bool) -> str:
        text = row_id.lower() if lower else row_id
        return (
            "reasoning"
            if any(w in text for w in ("mmmu", "mathverse"))
            else "hallucination"
            if any(w in text for w in ("hallucination", "rlhf", "rlaif"))
            else "general"
        )

    for key, lower in (("categories", True), ("categories_paper_script", False)):
        right, total = Counter(), Counter()
        for p in preds:
            total[split(p["id"], lower)] += 1
            right[split(p["id"], lower)] += p["correct"]
        expected = {c: right[c] / total[c] for c in ("general", "hallucination", "reasoning")}
        assert metrics[key] == pytest.approx(expected)
    assert metrics["category_counts"]["hallucination"]["total"] == 749
    assert metrics["category_counts_paper_script"]["general"]["total"] == 484
    assert metrics["overall"] == pytest.approx(sum(p["correct"] for p in preds) / 1250)
    assert metrics["macro"] == pytest.approx(sum(metrics["categories"].values()) / 3)
    assert metrics["macro_paper_script"] == pytest.approx(sum(metrics["categories_paper_script"].values()) / 3)
    assert "voting_at_k" not in metrics  # no votes given: no scaling section
    markdown = (tmp_path / "metrics.md").read_text()
    assert markdown.count("| hallucination |") == 2 and "case-sensitive split" in markdown  # both splits
    assert f"| general | {100 * metrics['categories_paper_script']['general']:.2f} | " in markdown


# --- MM-RLHF-RewardBench --------------------------------------------------------------------------------
def test_mm_rlhf_accuracy_and_acc_plus(tmp_path, benchmarks_dir):
    data = benchmarks_dir / "mm_rlhf_rewardbench.jsonl"
    raw = [json.loads(line) for line in data.read_text().splitlines()]
    assert len(raw) == 170 and len({r["id"] for r in raw}) == 46
    # Wrong: row 0 (its id has 4 pairs) and rows 4 and 5 (both of the second id, 5 pairs).
    preds = [{"id": r["id"], "correct": n not in (0, 4, 5)} for n, r in enumerate(raw)]
    metrics = eval_metrics(tmp_path, "mm-rlhf-rewardbench", data, preds)
    assert metrics["overall"] == metrics["accuracy"] == pytest.approx(167 / 170)
    assert metrics["acc_plus"] == pytest.approx(44 / 46)
    assert metrics["acc_plus_counts"] == {"ids_all_correct": 44, "ids": 46}
    totals = {name: c["total"] for name, c in metrics["category_counts"].items()}
    assert totals == {"mcq": 42, "long": 37, "short": 34, "safety": 32, "video": 25}
    assert metrics["categories"]["mcq"] == pytest.approx(39 / 42)


def test_mm_rlhf_skipped_video_rows_leave_the_denominators(tmp_path, benchmarks_dir):
    data = benchmarks_dir / "mm_rlhf_rewardbench.jsonl"
    raw = [json.loads(line) for line in data.read_text().splitlines()]
    preds = [
        {"id": r["id"], "skipped": "video-unsupported: ...", "correct": None}
        if r.get("video")
        else {"id": r["id"], "correct": n != 0}
        for n, r in enumerate(raw)
    ]
    metrics = eval_metrics(tmp_path, "mm-rlhf-rewardbench", data, preds)
    video_ids = {r["id"] for r in raw if r.get("video")}
    assert (metrics["evaluated"], metrics["skipped"]) == (145, 25)
    assert metrics["skipped_by_reason"] == {"video-unsupported": 25}
    assert metrics["overall"] == pytest.approx(144 / 145)
    assert metrics["acc_plus_counts"] == {"ids_all_correct": 46 - len(video_ids) - 1, "ids": 46 - len(video_ids)}
    assert metrics["categories"]["video"] is None


# --- Multimodal RewardBench ---------------------------------------------------------------------------
@pytest.fixture
def mrb_file(tmp_path) -> Path:
    return write_jsonl(
        tmp_path / "mrb.jsonl",
        [
            {
                "ID": i,
                "Text": f"question {n}",
                "Image": f"images/{n}.png",
                "Output1": f"first {n}",
                "Output2": f"second {n}",
                "Better": better,
                "Category": category,
            }
            for n, (i, category, better) in enumerate(MRB_ROWS)
        ],
    )


def test_multimodal_rewardbench_categories(tmp_path, mrb_file):
    rows = read_benchmark(mrb_file, "multimodal-rewardbench")
    assert [r.category for r in rows] == [
        "correctness",
        "correctness",
        "preference",
        "knowledge",
        "reasoning/math",
        "reasoning/coding",
        "safety/bias",
        "safety/toxicity",
        "vqa",
    ]
    assert [r.label for r in rows] == [1, 2, 2, 1, 1, 2, 1, 2, 1]
    assert multimodal_rewardbench_category("pairs_x", "Safety") == "safety/bias"
    correct = [True, False, True, True, False, True, True, False, True]
    metrics = eval_metrics(
        tmp_path,
        "multimodal-rewardbench",
        mrb_file,
        [{"id": i, "correct": c} for (i, _, _), c in zip(MRB_ROWS, correct)],
    )
    assert metrics["overall"] == pytest.approx(6 / 9)
    assert metrics["categories"] == {
        "correctness": 0.5,
        "preference": 1.0,
        "knowledge": 1.0,
        "reasoning/math": 0.0,
        "reasoning/coding": 1.0,
        "safety/bias": 1.0,
        "safety/toxicity": 0.0,
        "vqa": 1.0,
    }
    assert metrics["macro"] == pytest.approx(5.5 / 8)


def test_voting_and_any_at_k_from_crafted_votes(tmp_path, mrb_file):
    votes = {  # labels of the first four rows are 1, 2, 2, 1
        0: [2, 1, 1],  # V@1 no, V@2 tie -> first (2) no, V@3 yes; Any@1 no, @2 yes
        1: [None, 2, 1],  # V@1 no vote, V@2 yes, V@3 tie -> first parsed (2) yes; Any@2 yes
        2: [2, None, None],  # right at every k
        3: [2, 2, 2],  # never right
    }
    preds = [
        {"id": MRB_ROWS[n][0], "votes": votes[n], "correct": majority_vote(votes[n]) == [1, 2, 2, 1][n]}
        if n in votes
        else {"id": MRB_ROWS[n][0], "skipped": "image-missing: x", "correct": None}
        for n in range(len(MRB_ROWS))
    ]
    metrics = eval_metrics(tmp_path, "multimodal-rewardbench", mrb_file, preds)
    assert metrics["k"] == 3 and metrics["evaluated"] == 4
    assert metrics["voting_at_k"] == {"1": 0.25, "2": 0.5, "3": 0.75}
    assert metrics["any_at_k"] == {"1": 0.25, "2": 0.75, "3": 0.75}
    assert metrics["voting_at_k"]["3"] == metrics["overall"]
    assert (metrics["parse_failures"], metrics["generations"]) == (3, 12)
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Voting@K | 25.00 | 50.00 | 75.00 |" in (tmp_path / "metrics.md").read_text()


def test_swap_mode_needs_both_orders_right(tmp_path, mrb_file):
    rows = read_benchmark(mrb_file, "multimodal-rewardbench", limit=3)  # labels 1, 2, 2
    orig = [[1, 1], [2, 2], [1, 1]]  # right, right, wrong
    swapped = [[2, 2], [2, 2], [1, 1]]  # swapped labels 2, 1, 1: right, wrong, right
    preds = []
    for row, v, s in zip(rows, orig, swapped):
        c_o, c_s = majority_vote(v) == row.label, majority_vote(s) == 3 - row.label
        preds.append(
            {
                "id": row.id,
                "votes": v,
                "votes_swapped": s,
                "choice": majority_vote(v),
                "choice_swapped": majority_vote(s),
                "correct_original": c_o,
                "correct_swapped": c_s,
                "correct": c_o and c_s,
            }
        )
    metrics = compute_metrics("multimodal-rewardbench", rows, preds)
    assert metrics["overall"] == pytest.approx(1 / 3)
    assert metrics["orders"]["original"]["overall"] == pytest.approx(2 / 3)
    assert metrics["orders"]["swapped"]["overall"] == pytest.approx(2 / 3)
    assert metrics["order_consistency"] == pytest.approx(1 / 3)  # only row 0 names the same response twice
    assert metrics["voting_at_k"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(1 / 3)}
    assert "| both orders | original | swapped |" in markdown_table(metrics)


# --- the join ------------------------------------------------------------------------------------------
def test_eval_metrics_rejects_a_count_or_id_mismatch(tmp_path, mrb_file, capsys):
    preds = [{"id": i, "correct": True} for i, _, _ in MRB_ROWS]
    write_jsonl(tmp_path / "short.jsonl", preds[:-1])
    args = [
        "eval-metrics",
        "--benchmark",
        "multimodal-rewardbench",
        "--data",
        str(mrb_file),
        "--out",
        str(tmp_path / "m.json"),
        "--predictions",
    ]
    assert run_cli(args + [str(tmp_path / "short.jsonl")]) == 2
    err = capsys.readouterr()
    message = (err.out + err.err).strip()
    assert "8 prediction lines for 9 benchmark rows" in message and len(message.splitlines()) == 1
    swapped = preds[:]
    swapped[2], swapped[3] = swapped[3], swapped[2]
    write_jsonl(tmp_path / "order.jsonl", swapped)
    assert run_cli(args + [str(tmp_path / "order.jsonl")]) == 2
    assert "prediction line 3 has id 'mmmu-pro_4' but benchmark row 3 has id 'wildvision_3'" in "".join(
        capsys.readouterr()
    )
    assert not (tmp_path / "m.json").exists()
    # --limit joins a limited eval to the file's first N rows.
    write_jsonl(tmp_path / "limited.jsonl", preds[:4])
    assert run_cli(args + [str(tmp_path / "limited.jsonl"), "--limit", "4"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["rows"] == 4
    with pytest.raises(UserError, match="'correct' must be true or false"):
        compute_metrics(
            "multimodal-rewardbench",
            read_benchmark(mrb_file, "multimodal-rewardbench"),
            [{"id": i, "correct": "yes"} for i, _, _ in MRB_ROWS],
        )
