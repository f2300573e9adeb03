"""A quiet first install: the project's packaging builds without a warning of its own, and `make env`
prints one numbered line per step while the tools' output goes to its log."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setuptools_reads_the_project_table_without_a_warning(monkeypatch):
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    from setuptools.warnings import SetuptoolsWarning

    monkeypatch.chdir(ROOT)  # the table names README.md and the packages relative to the project
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    ours = [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, SetuptoolsWarning)]
    assert ours == []
    assert dist.metadata.license_expression == "Apache-2.0"  # an SPDX expression, not a TOML table


def _env_recipe() -> list[str]:
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP): pyproject.toml Makefile\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in recipe.splitlines() if not line.strip().startswith("@#")]


def test_make_env_prints_one_numbered_line_per_step_and_logs_the_rest():
    lines = _env_recipe()
    steps = [re.match(r'echo "\[(\d+)/(\d+)\] ', line) for line in lines]
    numbers = [(int(m.group(1)), int(m.group(2))) for m in steps if m]
    assert numbers == [(i, len(numbers)) for i in range(1, len(numbers) + 1)] and len(numbers) >= 3
    assert lines[0].startswith("mkdir -p $(VENV)") and lines[1].startswith('echo "[1/')  # the log, then step 1
    tools = [line for line in lines[1:] if not line.startswith(("echo ", "touch "))]
    assert tools and all(line.endswith("$(QUIET)") for line in tools), tools
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\.SILENT: \$\(STAMP\)", makefile, re.M)  # make does not echo the commands either
    assert "--disable-pip-version-check -q" in makefile
