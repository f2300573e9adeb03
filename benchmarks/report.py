"""The bench report: one markdown file and one PNG from the comparisons' JSON results.

Pure: reads the dicts that benchmarks/{rollout,end_to_end,weight_sync}.py write, so the table and the
ratios are unit-tested (tests/test_bench_report.py) without running any engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PHASES = ("prepare", "generate", "reward", "experience", "train", "sync")
# Which phases keep each role busy; the rest of the step it waits (the driver runs the phases in turn).
ROLE_PHASES = {
    "driver, preparing prompts": ("prepare",),
    "rollout workers": ("generate",),
    "reward actor": ("reward",),
    "learner ranks": ("experience", "train", "sync"),
}


def ratio(new: float, old: float) -> float:
    """How many times `new` is `old` (throughputs: higher is better); 0 when `old` is 0."""
    return new / old if old else 0.0


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def rollout_rows(result: dict[str, Any]) -> list[list[Any]]:
    """batch, vLLM tok/s, HF tok/s, ratio, vLLM prompts/s, HF prompts/s, mean lengths, ms per decode step."""
    vllm, hf = result["engines"]["vllm_worker"], result["engines"]["hf_generate"]
    rows = []
    for batch in sorted(vllm, key=int):
        v, h = vllm[batch], hf[batch]
        label = f"{batch} (the step's)" if int(batch) == result["settings"]["step_batch"] else batch
        rows.append(
            [
                label,
                v["tokens_per_s"],
                h["tokens_per_s"],
                f"{ratio(v['tokens_per_s'], h['tokens_per_s']):.2f}x",
                v["prompts_per_s"],
                h["prompts_per_s"],
                f"{v['mean_length']:.1f} / {h['mean_length']:.1f}",
                f"{v.get('ms_per_decode_step', 0):.1f} / {h.get('ms_per_decode_step', 0):.1f}",
            ]
        )
    return rows


def step_phases(run: dict[str, Any]) -> dict[str, float]:
    return {p: run["phases_s"][p] for p in PHASES if p in run["phases_s"]}


def idle_fractions(phases: dict[str, float]) -> dict[str, float]:
    """Per role, the share of the step it sits idle: 1 - (its phases) / (the whole step)."""
    step = sum(phases.values())
    return {role: 1.0 - sum(phases.get(p, 0.0) for p in ps) / step for role, ps in ROLE_PHASES.items()}


def end_to_end_rows(result: dict[str, Any]) -> list[list[Any]]:
    """run, samples/s, step s, vs TRL, vs r1reward's default (a speed-up's before/after), response tokens."""
    runs = [r for r in result["runs"] if "error" not in r]
    trl = next(r for r in runs if r["framework"] == "trl")
    default = next(r for r in runs if r["framework"] == "r1reward" and r["variant"] == "default")
    rows = []
    for run in runs:
        settings = ": " + " ".join(run["overrides"]) if run.get("overrides") else ""
        rows.append(
            [
                f"{run['framework']} ({run['variant']}{settings})",
                run["samples_per_s"],
                run["step_s"],
                f"{ratio(run['samples_per_s'], trl['samples_per_s']):.2f}x",
                f"{ratio(run['samples_per_s'], default['samples_per_s']):.2f}x"
                if run["framework"] == "r1reward"
                else "",
                run["response_length_mean"] if run.get("response_length_mean") is not None else "",
            ]
        )
    return rows


def breakdown_rows(run: dict[str, Any]) -> list[list[Any]]:
    phases = step_phases(run)
    step = sum(phases.values())
    return [[p, s, f"{100 * s / step:.0f}%"] for p, s in phases.items()] + [["step", step, "100%"]]


def sync_rows(result: dict[str, Any], step_s: float | None, trainer_sync_s: float | None) -> list[list[Any]]:
    """Per shape set and variant: seconds, Gbit/s, share of the raw flat broadcast; for the small model
    also the trainer's measured sync (learner -> vLLM, loading included) against the same limit."""
    rows = []
    for shapes, r in result["shapes"].items():
        what = f"{shapes} ({r['tensors']} tensors, {r['bytes'] / 2**20:.0f} MiB, {r['buckets']} buckets)"
        for variant, seconds in r["seconds"].items():
            share = f"{100 * seconds / step_s:.1f}%" if shapes == "small" and step_s else ""
            rows.append(
                [what, variant, seconds, r["gbit_per_s"][variant], f"{r['fraction_of_raw'][variant]:.0%}", share]
            )
        if shapes == "small" and trainer_sync_s:
            raw = r["seconds"]["raw_flat"]
            share = f"{100 * trainer_sync_s / step_s:.1f}%" if step_s else ""
            gbit = r["bytes"] * 8 / trainer_sync_s / 1e9
            rows.append([what, "r1reward train: time/sync", trainer_sync_s, gbit, f"{raw / trainer_sync_s:.0%}", share])
    return rows


def _made_by(result: dict[str, Any]) -> str:
    return f"Measured by `{result['made_by']}`.\n" if result.get("made_by") else ""


def rollout_section(r: dict[str, Any]) -> str:
    s = r["settings"]
    return "\n".join(
        [
            _made_by(r),
            f"{s['max_new_tokens']} new tokens at most, temperature {s['temperature']}, top_p {s['top_p']}, stop at "
            f"the end-of-turn token; prompts of {r['prompt_tokens_mean']:.0f} tokens with one image; "
            f"{s['repeats']} repeats.\n",
            table(
                [
                    "batch",
                    "vLLM tok/s",
                    "HF tok/s",
                    "vLLM / HF",
                    "vLLM prompts/s",
                    "HF prompts/s",
                    "mean length vLLM / HF",
                    "ms per decode step vLLM / HF",
                ],
                rollout_rows(r),
            ),
        ]
    )


def end_to_end_section(e: dict[str, Any]) -> str:
    w = e["work"]
    out = [
        _made_by(e),
        f"{w['prompts_per_step']} prompts x {w['samples_per_prompt']} samples per step, {w['max_new_tokens']} "
        f"new tokens, optimizer batch {w['optimizer_batch']}; median over {w['timed_steps']} steps after one "
        "warm-up step.\n",
        table(
            ["run", "samples/s", "step s", "vs TRL", "vs r1reward default", "mean response tokens"],
            end_to_end_rows(e),
        ),
    ]
    out += [f"\nNot measured: {r['framework']} ({r['variant']}): {r['error']}." for r in e["runs"] if "error" in r]
    return "\n".join(out)


def default_run(e: dict[str, Any]) -> dict[str, Any] | None:
    """The end-to-end comparison's r1reward run with the default settings."""
    return next((r for r in e["runs"] if r["framework"] == "r1reward" and r["variant"] == "default"), None)


def breakdown_section(run: dict[str, Any]) -> str:
    return "\n".join(
        [
            table(["phase", "seconds", "share of step"], breakdown_rows(run)),
            "",
            table(
                ["role", "idle share of the step"],
                [[k, f"{100 * v:.0f}%"] for k, v in idle_fractions(step_phases(run)).items()],
            ),
        ]
    )


def weight_sync_section(result: dict[str, Any], default: dict[str, Any] | None) -> str:
    step_s = default["step_s"] if default else None
    sync_s = default["phases_s"].get("sync") if default else None
    return "\n".join(
        [
            _made_by(result),
            table(
                ["weights", "variant", "seconds", "Gbit/s", "share of raw bandwidth", "share of r1reward step"],
                sync_rows(result, step_s, sync_s),
            ),
        ]
    )


def staleness_section(st: dict[str, Any]) -> str:
    return "\n".join(
        [
            _made_by(st),
            f"{st['what']}; {st['steps']} steps each, medians over the steady steps.\n",
            table(
                ["max_staleness", "median step s", "median generate phase s", "rollout idle", "learner idle"],
                [
                    [
                        str(eta),
                        f"{st[f'eta{eta}']['median_step_s']:.3g}",
                        f"{st[f'eta{eta}']['median_generate_s']:.3g}",
                        f"{st[f'eta{eta}']['median_idle_rollout']:.2f}",
                        f"{st[f'eta{eta}']['median_idle_learner']:.2f}",
                    ]
                    for eta in (0, 1)
                ],
            ),
            f"\nStep-time ratio, eta 1 / eta 0: **{st['ratio_eta1_over_eta0']:.2f}**",
        ]
    )


def render(results: dict[str, dict[str, Any]], machine: str, command: str) -> str:
    """The markdown report of whichever comparisons are in `results` (keyed by comparison name)."""
    out = [f"# r1reward benchmarks\n\nMachine: {machine}. Command: `{command}`. Medians over repeats.\n"]
    r1_default = default_run(results["end_to_end"]) if "end_to_end" in results else None
    if "rollout" in results:
        out += ["## Rollout: vLLM rollout worker vs Hugging Face generate\n", rollout_section(results["rollout"]), ""]
    if "end_to_end" in results:
        out += [
            "## End to end: RL samples/s, r1reward train vs TRL GRPOTrainer\n",
            end_to_end_section(results["end_to_end"]),
            "",
        ]
    if r1_default is not None:
        out += ["## Step breakdown (r1reward train, default)\n", breakdown_section(r1_default), ""]
    if "weight_sync" in results:
        out += [
            "## Weight sync over gloo vs the raw broadcast of the same bytes\n",
            weight_sync_section(results["weight_sync"], r1_default),
            "",
        ]
    if "staleness" in results:
        out += [
            "## Asynchronous rollout: trainer.max_staleness=1 vs the synchronous loop\n",
            staleness_section(results["staleness"]) + "\n",
        ]
    return "\n".join(out)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("rollout", "end_to_end", "weight_sync") if k in results]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4), squeeze=False)
    for ax, name in zip(axes[0], panels):
        r = results[name]
        if name == "rollout":
            for engine, label in (("vllm_worker", "r1reward vLLM worker"), ("hf_generate", "HF generate")):
                batches = sorted(r["engines"][engine], key=int)
                ax.plot(
                    [int(b) for b in batches],
                    [r["engines"][engine][b]["tokens_per_s"] for b in batches],
                    "o-",
                    label=label,
                )
            ax.set(xscale="log", xlabel="batch (prompts)", ylabel="generated tokens/s", title="rollout")
            ax.legend()
        elif name == "end_to_end":
            done = [x for x in r["runs"] if "error" not in x]
            ax.bar([f"{x['framework']} {x['variant']}" for x in done], [x["samples_per_s"] for x in done])
            ax.tick_params(axis="x", labelsize=7, labelrotation=30)
            ax.set(ylabel="RL samples/s", title="end to end")
        else:
            shapes = list(r["shapes"])
            variants = list(r["shapes"][shapes[0]]["fraction_of_raw"])
            width = 0.8 / len(shapes)
            for i, s in enumerate(shapes):
                ax.bar(
                    [j + i * width for j in range(len(variants))],
                    [r["shapes"][s]["fraction_of_raw"][v] for v in variants],
                    width,
                    label=s,
                )
            ax.set_xticks([j + width * (len(shapes) - 1) / 2 for j in range(len(variants))], variants, rotation=20)
            ax.set(ylabel="share of raw flat broadcast bandwidth", title="weight sync (gloo)")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
