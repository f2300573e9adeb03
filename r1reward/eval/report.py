"""Writing evaluation outputs: JSONL predictions, metrics.json, a Markdown table and the K plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_table(metrics: dict[str, Any]) -> str:
    """The metrics as Markdown: accuracy per category, the headline numbers and the K curves (in %)."""
    lines = [
        f"# {metrics['benchmark']}",
        "",
        f"{metrics['evaluated']} of {metrics['rows']} rows evaluated"
        + (f"; skipped {metrics['skipped']} ({metrics['skipped_by_reason']})" if metrics["skipped"] else "")
        + ".",
        "",
    ]
    orders = metrics.get("orders")
    head = (
        "| category | both orders | original | swapped | pairs |"
        if orders
        else "| category | accuracy | correct / total |"
    )
    lines += [head, "|---|---|---|---|---|" if orders else "|---|---|---|"]
    for name, rate in metrics["categories"].items():
        count = metrics["category_counts"][name]
        counts = f"{count['correct']} / {count['total']}"
        if orders:
            lines.append(
                f"| {name} | {_pct(rate)} | {_pct(orders['original']['categories'][name])} | "
                f"{_pct(orders['swapped']['categories'][name])} | {count['total']} |"
            )
        else:
            lines.append(f"| {name} | {_pct(rate)} | {counts} |")
    if "categories_paper_script" in metrics:  # VL-RewardBench: the R1-Reward script's split, for comparison
        lines += [
            "",
            "| category (R1-Reward script's case-sensitive split) | accuracy | correct / total |",
            "|---|---|---|",
        ]
        for name, rate in metrics["categories_paper_script"].items():
            count = metrics["category_counts_paper_script"][name]
            lines.append(f"| {name} | {_pct(rate)} | {count['correct']} / {count['total']} |")
    summary = [("overall", metrics["overall"]), ("macro", metrics["macro"])]
    if "macro_paper_script" in metrics:
        summary.append(("macro, R1-Reward script's split", metrics["macro_paper_script"]))
    if "acc_plus" in metrics:
        summary.append(("Acc+ (ids with all pairs correct)", metrics["acc_plus"]))
    if "order_consistency" in metrics:
        summary.append(("order consistency (same winner in both orders)", metrics["order_consistency"]))
    if "parse_failure_rate" in metrics:
        summary.append(("parse failures (of all generations)", metrics["parse_failure_rate"]))
    lines += ["", "| metric | % |", "|---|---|"] + [f"| {name} | {_pct(value)} |" for name, value in summary]
    if metrics.get("voting_at_k"):
        ks = list(metrics["voting_at_k"])
        lines += [
            "",
            "| K | " + " | ".join(ks) + " |",
            "|---|" + "---|" * len(ks),
            "| Voting@K | " + " | ".join(_pct(metrics["voting_at_k"][k]) for k in ks) + " |",
            "| Any@K | " + " | ".join(_pct(metrics["any_at_k"][k]) for k in ks) + " |",
        ]
    return "\n".join(lines) + "\n"


def plot_scaling(metrics: dict[str, Any], path: str | Path) -> Path | None:
    """A PNG of Voting@K and Any@K against K; None when the metrics have no votes."""
    if not metrics.get("voting_at_k"):
        return None
    # The Agg canvas directly: no pyplot, so no global backend switch and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ks = [int(k) for k in metrics["voting_at_k"]]
    figure = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, label in (("voting_at_k", "Voting@K"), ("any_at_k", "Any@K")):
        axes.plot(ks, [100 * metrics[key][str(k)] for k in ks], marker="o", label=label)
    axes.set_xlabel("K (samples per pair)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{metrics['benchmark']}: accuracy against K")
    axes.set_xticks(ks)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    return Path(path)


def write_reports(metrics: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """metrics.json, metrics.md and (with votes) scaling.png in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"metrics": write_json(metrics, out_dir / "metrics.json")}
    paths["markdown"] = out_dir / "metrics.md"
    paths["markdown"].write_text(markdown_table(metrics), encoding="utf-8")
    plot = plot_scaling(metrics, out_dir / "scaling.png")
    if plot is not None:
        paths["plot"] = plot
    return paths
