"""Every figure the documents quote, rendered from the files in benchmarks/results/.

A document marks a block with the lines `<!-- results:NAME -->` and `<!-- /results:NAME -->`; this
script replaces what lies between them with BLOCKS[NAME] rendered from its results file, so a number in
a document is always the number in the file. A results file that does not exist yet renders as one line
saying so. `<!-- file:PATH -->` ... `<!-- /file:PATH -->` quotes a file of the repository (a code
snippet that a test runs) in the same way.

    python -m benchmarks.report_docs           # rewrite the blocks of README.md, benchmarks/README.md, docs/*.md
    python -m benchmarks.report_docs --check   # exit 1 naming every block that differs from its source
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.ablation import table_lines as ablation_lines
from benchmarks.report import machine_line
from benchmarks.run import COMPARISONS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks/results")
# A marker is a line of its own, so that prose can name one in backquotes.
BLOCK = re.compile(r"^(<!-- (results|file):(\S+) -->\n)(.*?)^(<!-- /\2:\3 -->)$", re.S | re.M)
OPENING = re.compile(r"^<!-- (results|file):(\S+) -->$", re.M)


def documents(root: Path) -> list[Path]:
    """The markdown files whose blocks are rendered: the two READMEs and the design notes."""
    return [root / "README.md", root / "benchmarks" / "README.md", *sorted((root / "docs").glob("*.md"))]


# ---- the pipeline studies (`make study`: r1reward pipeline's summary.json) ----


def stability_table(runs: list[dict[str, Any]]) -> str:
    """Per seed, what StableReinforce's guards did over the RL stage (shares of completion tokens)."""
    rows = [
        [
            str(run["seed"]),
            f"{run['rl_stability']['pre_clip_frac']:.2%}",
            f"{run['rl_stability']['clip_frac']:.2%}",
            f"{run['rl_stability']['filtered_frac']:.2%}",
            f"{run['rl_stability']['ratio_max']:.3f}",
        ]
        for run in runs
    ]
    headers = ["RL seed", "Pre-CLIPped tokens", "PPO-clipped tokens", "advantage-filtered tokens", "largest ratio"]
    return report.table(headers, rows)


def study(summary: dict[str, Any], guards: bool = True) -> str:
    """The stage table with the paired RL gain and, with `guards`, what StableReinforce's guards did per seed
    (the README quotes the study without them, benchmarks/README.md with them)."""
    from r1reward.trainer.pipeline import stage_table

    runs = summary["runs"]
    seeds = len(runs)
    out = [
        f"Held-out accuracy after each stage: {seeds} seed{'s' if seeds > 1 else ''}, "
        f"{summary['heldout_pairs']} held-out pairs per seed, one greedy answer per pair.",
        "",
        stage_table([run["stages"] for run in runs], summary["heldout_pairs"]),
    ]
    if guards and all("rl_stability" in run for run in runs):
        out += ["", stability_table(runs)]
    return "\n".join(out)


# ---- the RL explorations (benchmarks/rl_variants.py) ----


def rl_variants(result: dict[str, Any]) -> str:
    """One row per model of an rl_variants.py run: its overrides, held-out accuracy, and per kind."""
    if "variants" not in result:  # several seed folders in one file
        folders = [r for r in result.values() if isinstance(r, dict) and "variants" in r]
        return "\n\n".join([*map(rl_variants, folders), rl_variants_gains(folders)])
    headers = ["model", "overrides", "held-out accuracy", "colour / count / shape"]
    headers.append("result rate, first -> last quarter")
    reasoning = all("follows_caption" in v for v in result["variants"].values())
    if reasoning:  # files written since rl_variants.py scores the reasoning
        headers += ["caption names the fact", "claims follow the caption"]
    quotes = all("quotes_responses" in v for v in result["variants"].values())
    if quotes:
        headers.append("claims quote the responses")
    rows = []
    for name, v in sorted(result["variants"].items(), key=lambda kv: kv[0] != "SFT"):  # SFT, the start, first
        kinds = " / ".join(f"{v[f'{kind}/accuracy']:.2f}" for kind in ("colour", "count", "shape"))
        rate = (
            f"{v['train_result_rate_first_quarter']:.2f} -> {v['train_result_rate_last_quarter']:.2f}"
            if "train_result_rate_first_quarter" in v
            else ""
        )
        overrides = " ".join(f"`{o}`" for o in v.get("overrides", "").split(",") if o)
        row = [name, overrides, f"{v['accuracy']:.3f}", kinds, rate]
        if reasoning:
            row += [f"{v['caption_right']:.3f}", f"{v['follows_caption']:.3f}"]
        if quotes:
            row.append(f"{v['quotes_responses']:.3f}")
        rows.append(row)
    where = f"From the seed folder `{result['source']}`, RL on its {result.get('train_on', 'hard')} training pairs"
    if "heldout_pairs" in result:
        where += f", scored on {result['heldout_pairs']} held-out pairs"
    return f"{where}:\n\n{report.table(headers, rows)}"


def rl_variants_gains(folders: list[dict[str, Any]]) -> str:
    """Across seed folders: each model's mean held-out accuracy and its gain over SFT, paired by folder,
    with 95% t-intervals (a model that not every folder has is left out)."""
    from r1reward.trainer.pipeline import mean_interval

    names = [n for n in folders[0]["variants"] if n != "SFT" and all(n in f["variants"] for f in folders)]
    rows = []
    for name in ["SFT", *names]:
        accs = [f["variants"][name]["accuracy"] for f in folders]
        mean, low, high = mean_interval(accs)
        row = [name, f"{mean:.3f} [{low:.3f}, {high:.3f}]"]
        if name == "SFT":
            row.append("")
        else:
            gain, low, high = mean_interval([a - f["variants"]["SFT"]["accuracy"] for a, f in zip(accs, folders)])
            row.append(f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]")
        rows.append(row)
    headers = ["model", f"held-out accuracy over {len(folders)} seeds (95% interval)", "gain over SFT, paired by seed"]
    return report.table(headers, rows)


# ---- r1reward serve (benchmarks/serve_latency.py) ----


def serve_latency(rows: list[dict[str, Any]]) -> str:
    return report.table(
        ["K", "clients", "requests", "median latency ms", "p95 latency ms", "requests/s", "unparsed votes"],
        [
            [
                str(r["k"]),
                str(r["clients"]),
                str(r["requests"]),
                f"{1000 * r['median_s']:.0f}",
                f"{1000 * r['p95_s']:.0f}",
                f"{r['requests_per_s']:.2f}",
                str(r["unparsed_votes"]),
            ]
            for r in rows
        ],
    )


def serve_replicas(result: dict[str, Any]) -> str:
    """Ray Serve replica counts under the same concurrent load (serve_latency.py --replicas), in one line so
    that the README can quote it. The load average is the machine's just before: others' work included."""
    runs = result["runs"]
    each = "; ".join(
        f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''} {r['requests_per_s']:.2f} requests/s, "
        f"p50 {1000 * r['median_s']:.0f} ms, p95 {1000 * r['p95_s']:.0f} ms (load average {r['load_before']:.1f})"
        for r in runs
    )
    return (
        f"Ray Serve, {result['clients']} clients, {runs[0]['requests']} `/v1/compare` requests, K={runs[0]['k']}, "
        f"{result['max_tokens']} tokens per sample: {each}."
    )


# ---- the registry: block name -> (results files it reads, renderer) ----


def _one(path: str, render: Callable[[Any], str]) -> tuple[list[Path], Callable[..., str]]:
    return [RESULTS / path], render


BLOCKS: dict[str, tuple[list[Path], Callable[..., str]]] = {
    "pipeline-study": _one("pipeline-study/summary.json", study),
    "pipeline-study-headline": _one("pipeline-study/summary.json", lambda s: study(s, guards=False)),
    "pipeline-study-avx2": _one("pipeline-study-avx2/summary.json", study),
    "pipeline-study-epyc": _one("pipeline-study-epyc/summary.json", study),
    "pipeline-study-teacher-bias": _one("pipeline-study-teacher-bias/summary.json", study),
    "ablation": _one("ablation.json", lambda r: "\n".join(ablation_lines(r))),
    "rl-variants": _one("rl_variants.json", rl_variants),
    "rl-variants-seed1": _one("rl_variants_seed1.json", rl_variants),
    "rl-variants-reasoning": _one("rl_variants_reasoning.json", rl_variants),
    "rl-variants-temperature": _one("rl_variants_temperature.json", rl_variants),
    "rl-variants-long": _one("rl_variants_long.json", rl_variants),
    "rl-variants-trace-judge": _one("rl_variants_trace_judge.json", rl_variants),
    "rollout": _one("rollout.json", report.rollout_section),
    "end-to-end": _one("end_to_end.json", report.end_to_end_section),
    "step-breakdown": _one("end_to_end.json", report.breakdown_section),
    "weight-sync": (
        [RESULTS / "weight_sync.json", RESULTS / "end_to_end.json"],
        lambda ws, e: report.weight_sync_section(ws, report.default_run(e)),
    ),
    "staleness": _one("staleness.json", report.staleness_section),
    "goals": (
        [RESULTS / f"{name}.json" for name in COMPARISONS],
        lambda *results: report.goals_section(report.goal_rows(dict(zip(COMPARISONS, results)))),
    ),
    "serve-latency": _one("serve_latency.json", serve_latency),
    "serve-replicas": _one("serve_replicas.json", serve_replicas),
}


class BlockError(Exception):
    """A document's block that cannot be rendered: unknown name, missing file, no closing marker."""


def render_block(kind: str, name: str, root: Path) -> str:
    """The text between a block's markers, ending with a newline."""
    if kind == "file":
        path = root / name
        if not path.is_file():
            raise BlockError(f"no file {name} to quote")
        language = {".py": "python", ".sh": "bash", ".yaml": "yaml"}.get(path.suffix, "")
        return f"```{language}\n{path.read_text().rstrip()}\n```\n"
    if name not in BLOCKS:
        raise BlockError(f"unknown results block {name!r} (known: {', '.join(BLOCKS)})")
    paths, render = BLOCKS[name]
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        return f"*Not measured yet: `{missing[0]}` does not exist.*\n"
    results = [json.loads((root / p).read_text()) for p in paths]
    machine = machine_line(results[0] if isinstance(results[0], dict) else {})
    return f"{render(*results).strip()}\n\n{machine}\n"


def rendered(text: str, root: Path, where: str) -> tuple[str, list[str]]:
    """`text` with every block re-rendered, and the names of the blocks that changed."""
    closed = {m.start(1) for m in BLOCK.finditer(text)}
    for m in OPENING.finditer(text):
        if m.start() not in closed:
            raise BlockError(f"{where}: {m.group(0)} has no closing <!-- /{m.group(1)}:{m.group(2)} -->")
    changed: list[str] = []

    def replace(m: re.Match) -> str:
        try:
            body = render_block(m.group(2), m.group(3), root)
        except BlockError as e:
            raise BlockError(f"{where}: {e}") from None
        if body != m.group(4):
            changed.append(f"{m.group(2)}:{m.group(3)}")
        return m.group(1) + body + m.group(5)

    return BLOCK.sub(replace, text), changed


def stale_blocks(root: Path = ROOT) -> list[str]:
    """`DOCUMENT: block NAME` for every block that differs from what its source renders."""
    stale = []
    for doc in documents(root):
        if doc.is_file():
            where = str(doc.relative_to(root))
            stale += [f"{where}: block {name}" for name in rendered(doc.read_text(), root, where)[1]]
    return stale


def write_blocks(root: Path = ROOT) -> list[str]:
    """Re-render every block in place; returns what changed."""
    changed = []
    for doc in documents(root):
        if doc.is_file():
            where = str(doc.relative_to(root))
            text, names = rendered(doc.read_text(), root, where)
            if names:
                doc.write_text(text)
                changed += [f"{where}: block {name}" for name in names]
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_blocks(ROOT)
            for line in stale:
                print(f"{line} differs from its results file; run python -m benchmarks.report_docs", file=sys.stderr)
            return 1 if stale else 0
        for line in write_blocks(ROOT):
            print(f"rendered {line}")
    except BlockError as e:
        print(f"report_docs: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
