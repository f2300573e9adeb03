"""The bench report: one markdown file and one PNG from the comparisons' JSON results.

Pure: reads the dicts that benchmarks/{rollout,end_to_end,weight_sync,staleness}.py write, so the tables,
the ratios and each ratio against its goal (`goal_rows`) are unit-tested (tests/test_bench_report.py)
without running any engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PHASES = ("prepare", "generate", "reward", "experience", "train", "sync")
UPDATE_PARTS = ("forward", "backward", "optimizer")
SYNC_GOAL_SHAPES = ("tiny", "small")  # the models the weight sync's bandwidth goal is set for
GPU_NOTE = (
    "\nOn a GPU the forward, backward and optimizer step run on the device and become a small share of either "
    "system's step, so this bound falls away: the ratio then follows generation (vLLM's continuous batching "
    "and CUDA graphs against HF `generate`: the rollout comparison), the old log-probs' forward that TRL runs "
    "and r1reward skips, and r1reward's weight sync into vLLM, which TRL's HF generate does not need."
)
# Which phases keep each role busy; the rest of the step it waits (the driver runs the phases in turn).
ROLE_PHASES = {
    "driver, preparing prompts": ("prepare",),
    "rollout workers": ("generate",),
    "reward actor": ("reward",),
    "learner ranks": ("experience", "train", "sync"),
}


def machine_line(result: dict[str, Any]) -> str:
    """Which CPU kernels, CPU model and how many cores a result ran on: torch picks its kernels by the
    CPU's capability and MKL and oneDNN by its model too, so results differ between CPUs
    (`r1reward.trainer.pipeline.machine` records them)."""
    m = result.get("machine")
    if not m:
        return "Machine: CPU not recorded."
    env = dict(m.get("kernel_env") or {})
    if m.get("aten_cpu_capability_env"):
        env.setdefault("ATEN_CPU_CAPABILITY", m["aten_cpu_capability_env"])
    forced = f", set by {' '.join(f'{k}={v}' for k, v in sorted(env.items()))}" if env else ""
    cores = f", {m['cores']} cores" if m.get("cores") else ""
    model = f" ({m['cpu_model']})" if m.get("cpu_model") else ""
    return f"Machine: torch CPU capability {m.get('cpu_capability', 'not recorded')}{model}{forced}{cores}."


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
                " / ".join(f"{x:.1f}" for x in run["load_average"]) if run.get("load_average") else "",
            ]
        )
    return rows


def update_parts(run: dict[str, Any]) -> dict[str, float]:
    """The update's forward, backward and optimizer seconds (r1reward: the slowest rank's, TRL: its own)."""
    parts = run.get("update_s") or run["phases_s"]
    return {p: parts.get(p, 0.0) for p in UPDATE_PARTS}


def breakdown_rows(ours: dict[str, Any], trl: dict[str, Any] | None) -> list[list[Any]]:
    """The two steps side by side, part by part; a part one system does not have is blank. r1reward's
    `train` phase splits into the update on the slowest rank (forward, backward, optimizer, the rest of
    the rank's call) and the call around it (Ray, the samples' serialisation)."""
    p, t = ours["phases_s"], (trl or {}).get("phases_s", {})
    rows: list[list[Any]] = [
        ["prepare prompts", p.get("prepare"), t.get("prepare")],
        ["generate", p.get("generate"), t.get("generate")],
        ["reward", p.get("reward"), t.get("reward")],
        ["old log-probs (experience)", p.get("experience"), t.get("experience")],
    ]
    u = ours.get("update_s")
    if u:
        parts = update_parts(ours)
        rank = u.get("total", sum(parts.values()))
        rows += [[f"update: {part}", parts[part], t.get(part)] for part in UPDATE_PARTS]
        rows += [
            ["update: rest of the rank's call (collation, votes)", rank - sum(parts.values()), None],
            ["train call around the update (Ray, serialisation)", p.get("train", 0.0) - rank, None],
        ]
    else:
        rows += [["train (update and the call around it)", p.get("train"), None]]
        rows += [[f"update: {part}", None, t.get(part)] for part in UPDATE_PARTS]
    rows += [["weight sync", p.get("sync"), None], ["other (data loading, collation, logging)", None, t.get("other")]]
    rows.append(["step", sum(step_phases(ours).values()), sum(t.values()) if t else None])
    return [[name, *("" if v is None else v for v in values)] for name, *values in rows if values != [None, None]]


def update_bound(e: dict[str, Any]) -> dict[str, float] | None:
    """The ratio to TRL that r1reward's update alone allows: TRL's step over r1reward's update (forward,
    backward, optimizer on the slowest rank), as if generation, reward and sync cost nothing."""
    ours, trl = default_run(e), trl_run(e)
    if ours is None or trl is None or not ours.get("update_s"):
        return None
    update = sum(update_parts(ours).values())
    return {
        "update_s": update,
        "trl_update_s": sum(update_parts(trl).values()) if "forward" in trl.get("phases_s", {}) else 0.0,
        "trl_step_s": trl["step_s"],
        "max_ratio": ratio(trl["step_s"], update),
    }


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
            [
                "run",
                "samples/s",
                "step s",
                "vs TRL",
                "vs r1reward default",
                "mean response tokens",
                "load average before / after",
            ],
            end_to_end_rows(e),
        ),
    ]
    out += [
        f"\nLargest gap between the sampler's and the learner's log-probs of a sampled token ({r['variant']}, which "
        f"recomputes them): {r['logprob_gap_max']:.2g} nats; where they agree so, the default takes the sampler's "
        "(`algo.old_logprobs=auto`)."
        for r in e["runs"]
        if r.get("logprob_gap_max")
    ]
    out += [f"\nNot measured: {r['framework']} ({r['variant']}): {r['error']}." for r in e["runs"] if "error" in r]
    return "\n".join(out)


def default_run(e: dict[str, Any]) -> dict[str, Any] | None:
    """The end-to-end comparison's r1reward run with the default settings."""
    return next((r for r in e["runs"] if r["framework"] == "r1reward" and r["variant"] == "default"), None)


def trl_run(e: dict[str, Any]) -> dict[str, Any] | None:
    """TRL's GRPOTrainer with Hugging Face generate: the baseline of the ratio."""
    return next((r for r in e["runs"] if r["framework"] == "trl" and "error" not in r), None)


def breakdown_section(e: dict[str, Any]) -> str:
    ours, trl = default_run(e), trl_run(e)
    if ours is None:
        return "*No r1reward default run in this result.*"
    out = [
        table(["part of the step", "r1reward (default) s", "TRL GRPOTrainer s"], breakdown_rows(ours, trl)),
        "",
        table(
            ["role", "idle share of the step"],
            [[k, f"{100 * v:.0f}%"] for k, v in idle_fractions(step_phases(ours)).items()],
        ),
    ]
    bound = update_bound(e)
    if bound:
        out.append(
            f"\nr1reward's update alone (forward + backward + optimizer, slowest rank) takes {bound['update_s']:.3g} s "
            f"of TRL's {bound['trl_step_s']:.3g} s step (TRL's own update: {bound['trl_update_s']:.3g} s): even with "
            f"generation, reward and sync at zero the ratio could not pass **{bound['max_ratio']:.2f}x**."
        )
        out.append(GPU_NOTE)
    return "\n".join(out)


def weight_sync_section(result: dict[str, Any], default: dict[str, Any] | None) -> str:
    step_s = default["step_s"] if default else None
    sync_s = default["phases_s"].get("sync") if default else None
    rounds = ", ".join(f"{name} {r['rounds']}" for name, r in result["shapes"].items() if "rounds" in r)
    return "\n".join(
        [
            _made_by(result),
            *([f"Medians over rounds ({rounds}), each variant once per round.\n"] if rounds else []),
            table(
                ["weights", "variant", "seconds", "Gbit/s", "share of raw bandwidth", "share of r1reward step"],
                sync_rows(result, step_s, sync_s),
            ),
        ]
    )


def staleness_section(st: dict[str, Any]) -> str:
    cores = "; ".join(f"{role}: core {','.join(map(str, c))}" for role, c in st.get("cores", {}).items())
    rows = []
    for eta in (0, 1):
        r = st[f"eta{eta}"]
        rows.append(
            [
                str(eta),
                f"{r['median_step_s']:.3g}",
                f"{r['spread_s']:.3g}",
                " / ".join(f"{x:.3g}" for x in r["repeat_median_step_s"]),
                f"{r['median_generate_s']:.3g}",
                f"{r['median_idle_rollout']:.2f}",
                f"{r['median_idle_learner']:.2f}",
            ]
        )
    faster = "more" if st["faster_beyond_spread"] else "**not** more"
    return "\n".join(
        [
            _made_by(st),
            f"{st['what']}; {st['steps']} steps per run, {st['repeats']} runs per setting"
            + (f" ({cores}; the reward actor and the driver on any core)" if cores else "")
            + ".\n",
            table(
                [
                    "max_staleness",
                    "median step s",
                    "spread s",
                    "per run",
                    "median generate phase s",
                    "rollout idle",
                    "learner idle",
                ],
                rows,
            ),
            f"\neta 1 over eta 0: **{st['speedup_eta1']:.2f}x** faster ({st['gain_s']:.3g} s a step), {faster} than "
            f"the larger spread ({st['spread_s']:.3g} s).",
        ]
    )


def _goal(what: str, measured: float, goal: float, unit: str, higher_is_better: bool = True) -> dict[str, Any]:
    met = measured >= goal if higher_is_better else measured <= goal
    of_goal = ratio(measured, goal) if higher_is_better else ratio(goal, measured)
    return {
        "what": what,
        "measured": measured,
        "goal": goal,
        "unit": unit,
        "higher_is_better": higher_is_better,
        "met": met,
        "of_goal": of_goal,
    }


def goal_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each ratio the bench measures against its goal (issue #31), for the comparisons present."""
    rows = []
    if "rollout" in results:
        r = results["rollout"]
        batch = str(r["settings"]["step_batch"])
        speed = {e: r["engines"][e][batch]["tokens_per_s"] for e in ("vllm_worker", "hf_generate")}
        rows.append(
            _goal(
                "rollout: vLLM worker / HF generate, tokens/s at the step's batch",
                ratio(speed["vllm_worker"], speed["hf_generate"]),
                3.0,
                "x",
            )
        )
    ours = trl = None
    if "end_to_end" in results:
        ours, trl = default_run(results["end_to_end"]), trl_run(results["end_to_end"])
        if ours and trl:
            rows.append(
                _goal(
                    "end to end: r1reward (default) / TRL GRPOTrainer, samples/s",
                    ratio(ours["samples_per_s"], trl["samples_per_s"]),
                    2.0,
                    "x",
                )
            )
    if "weight_sync" in results:
        for shapes, r in results["weight_sync"]["shapes"].items():
            share = r["fraction_of_raw"].get("r1reward")
            if shapes in SYNC_GOAL_SHAPES and share is not None:
                rows.append(_goal(f"weight sync ({shapes}): verified sync / raw broadcast, bandwidth", share, 0.5, "%"))
    if ours and "sync" in ours["phases_s"]:
        share = ratio(ours["phases_s"]["sync"], sum(step_phases(ours).values()))
        rows.append(_goal("weight sync: share of r1reward's step (at most)", share, 0.05, "%", higher_is_better=False))
    if "staleness" in results and "speedup_eta1" in results["staleness"]:
        st = results["staleness"]
        rows.append(
            _goal(
                "asynchronous rollout: eta=1 / eta=0 speed-up (goal: 1 + the runs' spread)",
                st["speedup_eta1"],
                st["goal_speedup"],
                "x",
            )
        )
    return rows


def _value(value: float, unit: str) -> str:
    return f"{value:.2f}x" if unit == "x" else f"{100 * value:.1f}%"


def goals_section(rows: list[dict[str, Any]]) -> str:
    return table(
        ["ratio", "measured", "goal", "met"],
        [
            [
                r["what"],
                _value(r["measured"], r["unit"]),
                ("≥ " if r["higher_is_better"] else "≤ ") + _value(r["goal"], r["unit"]),
                "yes" if r["met"] else "**no**",
            ]
            for r in rows
        ],
    )


def render(results: dict[str, dict[str, Any]], machine: str, command: str) -> str:
    """The markdown report of whichever comparisons are in `results` (keyed by comparison name), each
    section with the machine it ran on."""
    out = [f"# r1reward benchmarks\n\nMachine: {machine}. Command: `{command}`. Medians over repeats.\n"]
    goals = goal_rows(results)
    if goals:
        out += ["## Against the goals\n", goals_section(goals), ""]
    e2e = results.get("end_to_end")
    sections = [
        ("rollout", "Rollout: vLLM rollout worker vs Hugging Face generate", rollout_section),
        ("end_to_end", "End to end: RL samples/s, r1reward train vs TRL GRPOTrainer", end_to_end_section),
        ("end_to_end", "Step breakdown: r1reward train (default) and TRL GRPOTrainer", breakdown_section),
        (
            "weight_sync",
            "Weight sync over gloo vs the raw broadcast of the same bytes",
            lambda ws: weight_sync_section(ws, default_run(e2e) if e2e else None),
        ),
        ("staleness", "Asynchronous rollout: trainer.max_staleness=1 vs the synchronous loop", staleness_section),
    ]
    for name, heading, section in sections:
        if name in results:
            out += [f"## {heading}\n", section(results[name]).strip(), "", machine_line(results[name]), ""]
    return "\n".join(out)


def plot(results: dict[str, dict[str, Any]], path: Path) -> list[str]:
    """One panel per comparison, each with its goal drawn in, and a first panel of every ratio as a
    multiple of its goal (1 = the goal exactly; right of the line: met). Returns the panels' titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    goals = goal_rows(results)
    panels = (["goals"] if goals else []) + [
        k for k in ("rollout", "end_to_end", "weight_sync", "staleness") if k in results
    ]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4.5), squeeze=False)
    for ax, name in zip(axes[0], panels):
        r = results.get(name, {})
        if name == "goals":
            y = list(range(len(goals)))[::-1]
            ax.barh(y, [g["of_goal"] for g in goals], color=["tab:green" if g["met"] else "tab:red" for g in goals])
            ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
            ax.set_yticks(y, [g["what"].split(":")[0] for g in goals], fontsize=7)
            for yi, g in zip(y, goals):
                goal = ("≥ " if g["higher_is_better"] else "≤ ") + _value(g["goal"], g["unit"])
                ax.text(0.02, yi, f"{_value(g['measured'], g['unit'])} (goal {goal})", va="center", fontsize=7)
            ax.set(xlabel="measured as a multiple of its goal (≥ 1: met)", title="against the goals")
        elif name == "rollout":
            for engine, label in (("vllm_worker", "r1reward vLLM worker"), ("hf_generate", "HF generate")):
                batches = sorted(r["engines"][engine], key=int)
                ax.plot(
                    [int(b) for b in batches],
                    [r["engines"][engine][b]["tokens_per_s"] for b in batches],
                    "o-",
                    label=label,
                )
            hf = r["engines"]["hf_generate"]
            batches = sorted(hf, key=int)
            ax.plot([int(b) for b in batches], [3 * hf[b]["tokens_per_s"] for b in batches], "k--", label="goal: 3x HF")
            ax.set(xscale="log", xlabel="batch (prompts)", ylabel="generated tokens/s", title="rollout")
            ax.legend(fontsize=7)
        elif name == "end_to_end":
            done = [x for x in r["runs"] if "error" not in x]
            ax.bar([f"{x['framework']} {x['variant']}" for x in done], [x["samples_per_s"] for x in done])
            trl, bound = trl_run(r), update_bound(r)
            if trl:
                ax.axhline(2 * trl["samples_per_s"], color="black", linestyle="--", label="goal: 2x TRL")
            if bound:  # the samples/s r1reward's update alone allows (the rest of the step at zero)
                ceiling = bound["max_ratio"] * trl["samples_per_s"]
                ax.axhline(ceiling, color="tab:red", linestyle=":", label="r1reward's update alone")
            ax.legend(fontsize=7)
            ax.tick_params(axis="x", labelsize=7, labelrotation=30)
            ax.set(ylabel="RL samples/s", title="end to end")
        elif name == "weight_sync":
            shapes = list(r["shapes"])
            variants = list(r["shapes"][shapes[0]]["fraction_of_raw"])
            width = 0.8 / len(shapes)
            for i, shape in enumerate(shapes):
                ax.bar(
                    [j + i * width for j in range(len(variants))],
                    [r["shapes"][shape]["fraction_of_raw"].get(v, 0.0) for v in variants],
                    width,
                    label=shape,
                )
            ax.axhline(0.5, color="black", linestyle="--", label="goal: 50% (tiny, small)")
            ax.set_xticks([j + width * (len(shapes) - 1) / 2 for j in range(len(variants))], variants, rotation=20)
            ax.set(ylabel="share of raw flat broadcast bandwidth", title="weight sync (gloo)")
            ax.legend(fontsize=7)
        else:  # staleness: each run's median step, per setting
            for eta in (0, 1):
                runs = r[f"eta{eta}"]["repeat_median_step_s"]
                ax.plot([eta] * len(runs), runs, "o", alpha=0.6)
                ax.bar(eta, r[f"eta{eta}"]["median_step_s"], 0.5, alpha=0.4, label=f"eta={eta} (median)")
            ax.set_xticks([0, 1], ["eta=0 (synchronous)", "eta=1 (one batch ahead)"])
            ax.set(
                ylabel="median step s (dots: each run)",
                title="asynchronous rollout, pinned cores" if r.get("pinned") else "asynchronous rollout",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    titles = [ax.get_title() for ax in axes[0]]
    plt.close(fig)
    return titles
