"""The documents quote figures only from benchmarks/results/ (benchmarks/report_docs.py): fast, no Ray.

- every block in README.md, benchmarks/README.md and docs/*.md equals what its results file renders now;
- a changed figure is named as stale; a results file that does not exist yet renders as a placeholder
  that the next render fills; a result without its machine says "CPU not recorded";
- outside the blocks the two READMEs carry no measurement (a decimal, a duration, a share, a speed-up).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a folder of scripts run from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import report_docs  # noqa: E402

STAGES = ("base", "SFT", "SFT + RL")


def _summary(accuracies: list[float], machine: dict | None = None) -> dict:
    """A made-up pipeline summary.json: one run per seed, SFT + RL at `accuracies`."""
    runs = [
        {
            "seed": seed,
            "stages": {
                "base": {"accuracy": 0.0, "format_rate": 0.0},
                "SFT": {"accuracy": 0.5, "format_rate": 1.0},
                "SFT + RL": {"accuracy": acc, "format_rate": 1.0},
            },
            "rl_stability": {"pre_clip_frac": 0.01, "clip_frac": 0.02, "filtered_frac": 0.0, "ratio_max": 1.5},
        }
        for seed, acc in enumerate(accuracies)
    ]
    summary = {"seeds": list(range(len(accuracies))), "heldout_pairs": 256, "runs": runs}
    if machine is not None:
        summary["machine"] = machine
    return summary


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _outside_blocks(text: str) -> str:
    """The prose a person typed: without rendered blocks, fenced code, inline code and link targets."""
    text = report_docs.BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"\]\([^)\s]*\)", "]", text)
    return re.sub(r"`[^`]*`", "", text)


def test_every_document_block_matches_its_results_file():
    assert report_docs.stale_blocks(ROOT) == [], "run: python -m benchmarks.report_docs"


def test_the_readmes_quote_the_study_from_its_results_file():
    # The README quotes the headline (stages and gain); benchmarks/README.md the whole study, guards included.
    for doc, block in (("README.md", "pipeline-study-headline"), ("benchmarks/README.md", "pipeline-study")):
        text = (ROOT / doc).read_text()
        assert f"<!-- results:{block} -->" in text and f"<!-- /results:{block} -->" in text, doc


def test_the_headline_is_the_study_without_the_guards_table():
    summary = json.loads((report_docs.RESULTS / "pipeline-study" / "summary.json").read_text())
    headline, full = report_docs.BLOCKS["pipeline-study-headline"][1], report_docs.BLOCKS["pipeline-study"][1]
    assert "RL gain over SFT" in headline(summary) and "Pre-CLIPped tokens" not in headline(summary)
    assert full(summary).startswith(headline(summary)) and "Pre-CLIPped tokens" in full(summary)


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_no_measurement_outside_the_blocks(doc):
    prose = _outside_blocks((ROOT / doc).read_text())
    measurement = re.compile(
        r"(?<![\w.])\d+\.\d+(?![\w.])"  # a decimal: an accuracy, a time, a rate
        r"|\b\d[\d,.]*\s?(?:ms|s|seconds?|min|minutes?|hours?|tok/s|samples/s|GB/s)\b"  # a duration or speed
        r"|\b\d[\d.]*\s?%(?!\s(?:t-|Wilson\s)?interval)"  # a share (not the name of a 95% interval)
        r"|\b\d[\d.]*x\b"  # a speed-up
    )
    found = [m.group(0) for m in measurement.finditer(prose)]
    assert found == [], f"{doc} quotes figures outside a results block: {found}"


def test_readme_is_a_short_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_a_changed_figure_is_named_and_rerendering_restores_it(tmp_path):
    _write(tmp_path / "benchmarks/results/pipeline-study/summary.json", json.dumps(_summary([0.6, 0.7])))
    doc = _write(tmp_path / "README.md", "# r\n\n<!-- results:pipeline-study -->\n<!-- /results:pipeline-study -->\n")
    assert report_docs.stale_blocks(tmp_path) == ["README.md: block results:pipeline-study"]
    assert report_docs.write_blocks(tmp_path) == ["README.md: block results:pipeline-study"]
    assert report_docs.stale_blocks(tmp_path) == []
    text = doc.read_text()
    assert "| SFT + RL | 0.650 [" in text and "0.600 0.700 |" in text
    assert "Machine: CPU not recorded." in text  # an old summary.json, from before results named their CPU

    doc.write_text(text.replace("0.600 0.700", "0.600 0.710"))  # a figure typed by hand
    assert report_docs.stale_blocks(tmp_path) == ["README.md: block results:pipeline-study"]


def test_a_missing_results_file_is_a_placeholder_until_it_lands(tmp_path):
    doc = _write(
        tmp_path / "benchmarks/README.md",
        "x\n<!-- results:pipeline-study-avx2 -->\nold\n<!-- /results:pipeline-study-avx2 -->\ny\n",
    )
    report_docs.write_blocks(tmp_path)
    assert "Not measured yet: `benchmarks/results/pipeline-study-avx2/summary.json` does not exist" in doc.read_text()
    assert report_docs.stale_blocks(tmp_path) == []

    machine = {"cpu_capability": "AVX2", "cores": 16, "kernel_env": {"ATEN_CPU_CAPABILITY": "avx2"}}
    _write(tmp_path / "benchmarks/results/pipeline-study-avx2/summary.json", json.dumps(_summary([0.6], machine)))
    assert report_docs.stale_blocks(tmp_path) == ["benchmarks/README.md: block results:pipeline-study-avx2"]
    report_docs.write_blocks(tmp_path)
    text = doc.read_text()
    assert text.startswith("x\n") and text.endswith("\ny\n")  # only the block changes
    assert "Machine: torch CPU capability AVX2, set by ATEN_CPU_CAPABILITY=avx2, 16 cores." in text
    assert "Wilson interval over 256 pairs" in text  # one seed: the interval of the held-out proportion
    assert "| 0 | 1.00% | 2.00% | 0.00% | 1.500 |" in text  # what the RL guards did


def test_machine_line_reads_either_spelling_of_the_forced_capability():
    assert report_docs.machine_line({}) == "Machine: CPU not recorded."
    m = {"cpu_capability": "AVX2", "cores": 2, "aten_cpu_capability_env": "avx2"}
    assert report_docs.machine_line({"machine": m}) == (
        "Machine: torch CPU capability AVX2, set by ATEN_CPU_CAPABILITY=avx2, 2 cores."
    )
    plain = {"cpu_capability": "AVX512", "cores": 16, "aten_cpu_capability_env": None}
    assert report_docs.machine_line({"machine": plain}) == "Machine: torch CPU capability AVX512, 16 cores."
    named = {"cpu_capability": "AVX512", "cpu_model": "AMD EPYC", "cores": 2, "kernel_env": {}}
    assert report_docs.machine_line({"machine": named}) == "Machine: torch CPU capability AVX512 (AMD EPYC), 2 cores."


def test_a_file_block_quotes_the_snippet_a_test_runs(tmp_path):
    _write(tmp_path / "tests/serve_snippets/x.py", "print('hi')\n")
    block = "<!-- file:tests/serve_snippets/x.py -->\n<!-- /file:tests/serve_snippets/x.py -->\n"
    doc = _write(tmp_path / "docs/serving.md", block)
    report_docs.write_blocks(tmp_path)
    assert "```python\nprint('hi')\n```\n" in doc.read_text()


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- results:nope -->\n<!-- /results:nope -->\n", "unknown results block 'nope'"),
        ("<!-- results:ablation -->\nno end\n", "has no closing <!-- /results:ablation -->"),
        ("<!-- file:missing.py -->\n<!-- /file:missing.py -->\n", "no file missing.py to quote"),
    ],
)
def test_a_bad_block_is_one_line_naming_the_document(tmp_path, text, message):
    _write(tmp_path / "README.md", text)
    with pytest.raises(report_docs.BlockError, match=re.escape(message)) as err:
        report_docs.stale_blocks(tmp_path)
    assert str(err.value).startswith("README.md: ") and "\n" not in str(err.value)


def test_check_exits_non_zero_naming_the_stale_block(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "benchmarks/results", tmp_path / "benchmarks/results")
    _write(tmp_path / "README.md", "<!-- results:staleness -->\n| made up |\n<!-- /results:staleness -->\n")
    monkeypatch.setattr(report_docs, "ROOT", tmp_path)
    assert report_docs.main(["--check"]) == 1
    assert "README.md: block results:staleness differs" in capsys.readouterr().err
    assert report_docs.main([]) == 0 and report_docs.main(["--check"]) == 0


def test_the_replica_benchmark_renders_from_its_file_in_both_readmes(tmp_path):
    readme = (ROOT / "README.md").read_text()
    serving = readme[readme.index("## Serving") :].split("\n## ", 1)[0]
    assert "<!-- results:serve-replicas -->" in serving
    assert "<!-- results:serve-replicas -->" in (ROOT / "benchmarks/README.md").read_text()

    run = {"k": 1, "clients": 8, "requests": 48, "median_s": 0.41, "p95_s": 0.55, "requests_per_s": 19.3}
    result = {
        "machine": {"cpu_capability": "AVX2", "cores": 2, "kernel_env": {}},
        "max_tokens": 64,
        "clients": 8,
        "runs": [{**run, "replicas": 1, "load_before": 6.3}, {**run, "replicas": 2, "p95_s": 1.25, "load_before": 6.7}],
    }
    _write(tmp_path / "benchmarks/results/serve_replicas.json", json.dumps(result))
    doc = _write(tmp_path / "README.md", "<!-- results:serve-replicas -->\n<!-- /results:serve-replicas -->\n")
    report_docs.write_blocks(tmp_path)
    text = doc.read_text()
    assert "1 replica 19.30 requests/s, p50 410 ms, p95 550 ms (load average 6.3)" in text
    assert "2 replicas 19.30 requests/s, p50 410 ms, p95 1250 ms (load average 6.7)" in text
    assert "8 clients, 48 `/v1/compare` requests, K=1, 64 tokens per sample" in text
    assert "Machine: torch CPU capability AVX2, 2 cores." in text


def test_rl_variants_over_seed_folders_render_each_models_gain_over_sft_paired_by_seed():
    def folder(sft: float, longer: float, extra: dict) -> dict:
        kinds = {f"{k}/accuracy": 0.5 for k in ("colour", "count", "shape")}
        variants = {"SFT": {"accuracy": sft, **kinds}, "longer": {"accuracy": longer, **kinds}, **extra}
        return {"source": "s", "heldout_pairs": 2048, "variants": variants}

    only_here = {"other": {"accuracy": 0.9, "colour/accuracy": 0.9, "count/accuracy": 0.9, "shape/accuracy": 0.9}}
    result = {"machine": {}, "seed-0": folder(0.50, 0.60, only_here), "seed-1": folder(0.70, 0.90, {})}
    text = report_docs.rl_variants(result)
    assert text.count("scored on 2048 held-out pairs") == 2
    gains = text.split("gain over SFT, paired by seed |")[1]
    # gains +0.10 and +0.20: mean +0.15, half-width 12.706 * 0.0707 / sqrt(2)
    assert "| longer | 0.750 [-1.156, 2.656] | +0.150 [-0.485, +0.785] |" in gains
    assert "| SFT | 0.600 [-0.671, 1.871] |" in gains
    assert "other" not in gains  # not every folder has it


def test_rl_variants_render_how_often_the_claims_quote_the_responses_when_the_file_has_it():
    scores = {"accuracy": 0.5, "caption_right": 0.9, "follows_caption": 0.8, "quotes_responses": 0.25}
    scores |= {f"{k}/accuracy": 0.5 for k in ("colour", "count", "shape")}
    text = report_docs.rl_variants({"source": "s", "variants": {"SFT": scores}})
    assert "| claims quote the responses |" in text.splitlines()[2]
    assert text.splitlines()[-1].endswith("| 0.900 | 0.800 | 0.250 |")
    older = {k: v for k, v in scores.items() if k != "quotes_responses"}
    assert "quote the responses" not in report_docs.rl_variants({"source": "s", "variants": {"SFT": older}})
