"""The layering of docs/architecture.md, checked on the source with `ast` (no imports, no Ray).

- the module import graph (every import, the ones inside functions too) has no cycle;
- layers import only downward (LAYERS below, top first; a layer may import itself and any lower one);
- the pure layer (algo, data, config) imports none of ray, vllm, deepspeed;
- only r1reward/placement/ and the two group modules start rollout workers or learner ranks;
- `r1reward --help` and `r1reward-launch --help` do not import torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "r1reward"

# Top first. A module's layer is that of its first name under r1reward (`trainer` for r1reward.trainer.driver,
# `paths` for r1reward.paths).
LAYERS: list[set[str]] = [
    {"__main__", "cli", "launch", "serve"},  # commands, job submission, the HTTP server
    {"trainer", "eval"},  # the drivers: RL loop, SFT, pipeline; evaluation and its API
    {"rollout", "reward", "learner"},  # the role groups and their actors
    {"placement", "sync"},  # plan, placement groups, Ray; weight transfer
    {"algo", "data", "config", "models", "lifetime"},  # pure parts (and the tiny model, the process guard)
    {"errors", "paths", "waits"},  # what every layer may use (waits: remote calls with a deadline)
]
# Same-layer imports that must not happen either.
FORBIDDEN = {("launch", "cli"), ("rollout", "learner"), ("learner", "rollout")}
PURE = ("algo", "data", "config")
HEAVY = ("ray", "vllm", "deepspeed")
WORKER_CLASSES = {"RolloutWorker", "LearnerRank"}
MAY_START_WORKERS = ("r1reward/placement/", "r1reward/rollout/group.py", "r1reward/learner/group.py")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imported(tree: ast.AST) -> list[str]:
    """Every absolute name imported anywhere in the module (`from a import b` gives a.b when that is a module)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in MODULES]
    return names


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        targets = {n for n in _imported(ast.parse(path.read_text(), str(path))) if n in MODULES}
        graph[name] = targets - {name, "r1reward"}
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def test_every_part_of_the_package_has_a_layer():
    units = {_unit(m) for m in MODULES} - {""}
    assert units <= set().union(*LAYERS), f"add to LAYERS: {sorted(units - set().union(*LAYERS))}"


def test_the_module_import_graph_has_no_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_layers_import_only_downward():
    upward = sorted(
        f"{src} imports {dst}"
        for src, targets in _graph().items()
        for dst in targets
        if _unit(src)
        and _unit(dst)
        and (_layer(_unit(dst)) < _layer(_unit(src)) or (_unit(src), _unit(dst)) in FORBIDDEN)
    )
    assert not upward, "upward imports: " + "; ".join(upward)


def test_the_pure_layer_imports_no_ray_vllm_or_deepspeed():
    found = sorted(
        f"{name} imports {imp}"
        for name, path in MODULES.items()
        if _unit(name) in PURE
        for imp in _imported(ast.parse(path.read_text()))
        if imp.split(".")[0] in HEAVY
    )
    assert not found, "; ".join(found)


def _starts_workers(tree: ast.AST) -> list[int]:
    """Lines that call `ray.remote(...)` on a worker class or `.remote(...)` on the class itself."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        on_class = (
            isinstance(func, ast.Attribute)
            and func.attr == "remote"
            and isinstance(func.value, ast.Name)
            and func.value.id in WORKER_CLASSES
        )
        wraps = "remote" in ast.unparse(func) and any(
            isinstance(arg, ast.Name) and arg.id in WORKER_CLASSES for arg in node.args
        )
        if on_class or wraps:
            lines.append(node.lineno)
    return sorted(lines)


def test_the_worker_check_sees_each_way_of_starting_a_worker():
    code = (
        "a = ray.remote(num_cpus=1)(RolloutWorker).remote(m)\nb = ray.remote(LearnerRank).options(**o).remote()\n"
        "c = RolloutWorker.remote(m)\nd = RolloutWorker(m)\ne = ray.remote(JudgeEngine)\n"
    )
    assert _starts_workers(ast.parse(code)) == [1, 2, 3]


def test_only_placement_and_the_role_groups_start_rollout_workers_or_learner_ranks():
    found = []
    for path in MODULES.values():
        where = path.relative_to(PACKAGE.parent).as_posix()
        if not where.startswith(MAY_START_WORKERS):
            found += [f"{where}:{line}" for line in _starts_workers(ast.parse(path.read_text()))]
    assert not found, "start workers through RolloutGroup / LearnerGroup: " + ", ".join(found)


@pytest.mark.parametrize("module", ["r1reward", "r1reward.launch.cli"])
def test_help_does_not_import_torch(module):
    code = (
        "import runpy, sys\nsys.argv = ['prog', '--help']\ntry:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "NO-TORCH"
