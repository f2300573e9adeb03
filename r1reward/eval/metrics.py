"""Benchmark metrics from per-row predictions joined to the benchmark's rows (by position and id).

A prediction line needs ``id`` and ``correct`` (true/false). Optional fields add metrics: ``votes``
(the K parsed votes, 1/2/null: Voting@K, Any@K, parse-failure rate), ``votes_swapped`` (the votes with
the responses in the other order), ``correct_original``/``correct_swapped`` (per-order accuracy) and
``choice``/``choice_swapped`` (order consistency). A line with ``skipped`` set (or ``correct`` null)
stands for a row that was not evaluated: it is left out of every denominator and counted apart, so
numbers from a run that skipped rows are not comparable with the paper's.

All rates are fractions in [0, 1]; a category without evaluated rows has ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1reward.errors import UserError
from r1reward.eval.benchmarks import CATEGORY_ORDER, MM_RLHF_REWARDBENCH, VL_REWARDBENCH, BenchmarkRow
from r1reward.eval.voting import any_correct, voting_correct

Prediction = dict[str, Any]


def is_skipped(prediction: Prediction) -> bool:
    return bool(prediction.get("skipped")) or prediction.get("correct") is None


def join_predictions(rows: Sequence[BenchmarkRow], predictions: Sequence[Prediction]) -> None:
    """Check that there is one prediction per benchmark row, in order, each with a usable ``correct``."""
    if len(predictions) != len(rows):
        raise UserError(
            f"{len(predictions)} prediction lines for {len(rows)} benchmark rows: predictions must have one "
            "line per benchmark row, in the benchmark's order (pass --limit N if the eval used --limit N)"
        )
    for line, (row, prediction) in enumerate(zip(rows, predictions), start=1):
        if "id" not in prediction:
            raise UserError(f"prediction line {line} has no 'id'")
        if str(prediction["id"]) != row.id:
            raise UserError(
                f"prediction line {line} has id {str(prediction['id'])!r} but benchmark row {line} "
                f"has id {row.id!r}: predictions must follow the benchmark's order"
            )
        if "correct" not in prediction and not prediction.get("skipped"):
            raise UserError(f"prediction line {line} (id {row.id!r}) has no 'correct'")
        correct = prediction.get("correct")
        if correct is not None and correct not in (True, False):  # 0/1 pass, since 0 == False
            raise UserError(f"prediction line {line} (id {row.id!r}): 'correct' must be true or false, got {correct!r}")


def _rate(correct: int, total: int) -> float | None:
    return correct / total if total else None


def _categories(benchmark: str, names: Sequence[str], flags: Sequence[bool]) -> dict[str, Any]:
    """Accuracy per category (known ones first, in report order) and their unweighted mean (macro)."""
    order = list(CATEGORY_ORDER[benchmark]) + sorted(set(names) - set(CATEGORY_ORDER[benchmark]))
    counts = {name: {"correct": 0, "total": 0} for name in order}
    for name, flag in zip(names, flags):
        counts[name]["total"] += 1
        counts[name]["correct"] += int(flag)
    rates = {name: _rate(c["correct"], c["total"]) for name, c in counts.items()}
    present = [r for r in rates.values() if r is not None]
    # Macro over the categories that have rows (all of them on a full benchmark file).
    return {"categories": rates, "category_counts": counts, "macro": sum(present) / len(present) if present else None}


def _order_metrics(benchmark: str, names: Sequence[str], flags: Sequence[bool]) -> dict[str, Any]:
    split = _categories(benchmark, names, flags)
    return {"overall": _rate(sum(flags), len(flags)), "categories": split["categories"], "macro": split["macro"]}


def _acc_plus(ids: Sequence[str], flags: Sequence[bool]) -> dict[str, Any]:
    """MM-RLHF-RewardBench's Acc+: the fraction of ids whose (evaluated) pairs are all correct."""
    all_correct: dict[str, bool] = {}
    for row_id, flag in zip(ids, flags):
        all_correct[row_id] = all_correct.get(row_id, True) and flag
    solved = sum(all_correct.values())
    return {
        "acc_plus": _rate(solved, len(all_correct)),
        "acc_plus_counts": {"ids_all_correct": solved, "ids": len(all_correct)},
    }


def _scaling(rows: Sequence[BenchmarkRow], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Voting@k and Any@k for k = 1..K (from each row's first k samples) and the parse-failure rate.

    In swap mode (``votes_swapped`` present) a pair counts at k only if it is right in both orders."""
    if not predictions or not all(isinstance(p.get("votes"), list) and p["votes"] for p in predictions):
        return {}
    swap = all(isinstance(p.get("votes_swapped"), list) for p in predictions)
    k_max = min(len(p["votes"]) for p in predictions)
    voting, any_at = {}, {}
    for k in range(1, k_max + 1):
        vote_ok, any_ok = 0, 0
        for row, p in zip(rows, predictions):
            vote_ok += voting_correct(p["votes"], row.label, k) and (
                not swap or voting_correct(p["votes_swapped"], 3 - row.label, k)
            )
            any_ok += any_correct(p["votes"], row.label, k) and (
                not swap or any_correct(p["votes_swapped"], 3 - row.label, k)
            )
        voting[str(k)], any_at[str(k)] = vote_ok / len(predictions), any_ok / len(predictions)
    votes = [v for p in predictions for v in p["votes"] + (p["votes_swapped"] if swap else [])]
    failures = sum(v not in (1, 2) for v in votes)
    return {
        "k": k_max,
        "voting_at_k": voting,
        "any_at_k": any_at,
        "generations": len(votes),
        "parse_failures": failures,
        "parse_failure_rate": failures / len(votes),
    }


def _swap_orders(benchmark: str, names: Sequence[str], predictions: Sequence[Prediction]) -> dict[str, Any]:
    if not predictions or not all("correct_original" in p and "correct_swapped" in p for p in predictions):
        return {}
    out: dict[str, Any] = {
        "swap": True,
        "orders": {
            order: _order_metrics(benchmark, names, [bool(p[f"correct_{order}"]) for p in predictions])
            for order in ("original", "swapped")
        },
    }
    if all("choice" in p and "choice_swapped" in p for p in predictions):
        # The same response wins in both orders: choice c in the original order is 3 - c when swapped.
        same = sum(p["choice"] in (1, 2) and p["choice_swapped"] == 3 - p["choice"] for p in predictions)
        out["order_consistency"] = same / len(predictions)
    return out


def compute_metrics(benchmark: str, rows: Sequence[BenchmarkRow], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """The metrics of ``predictions`` (one per row of ``rows``, same order; checked)."""
    join_predictions(rows, predictions)
    pairs = [(row, p) for row, p in zip(rows, predictions) if not is_skipped(p)]
    scored_rows, scored = [row for row, _ in pairs], [p for _, p in pairs]
    flags = [bool(p["correct"]) for p in scored]
    names = [row.category for row in scored_rows]
    skipped: dict[str, int] = {}
    for p in predictions:
        if is_skipped(p):
            reason = str(p.get("skipped") or "skipped").split(":", 1)[0]
            skipped[reason] = skipped.get(reason, 0) + 1
    metrics: dict[str, Any] = {
        "benchmark": benchmark,
        "rows": len(rows),
        "evaluated": len(scored),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": skipped,
        "correct": sum(flags),
        "overall": _rate(sum(flags), len(flags)),
        **_categories(benchmark, names, flags),
    }
    if benchmark == VL_REWARDBENCH:
        paper = _categories(benchmark, [row.category_paper_script for row in scored_rows], flags)
        metrics.update(
            categories_paper_script=paper["categories"],
            macro_paper_script=paper["macro"],
            category_counts_paper_script=paper["category_counts"],
        )
    if benchmark == MM_RLHF_REWARDBENCH:
        metrics["accuracy"] = metrics["overall"]
        metrics.update(_acc_plus([row.id for row in scored_rows], flags))
    metrics.update(_swap_orders(benchmark, names, scored))
    metrics.update(_scaling(scored_rows, scored))
    return metrics
