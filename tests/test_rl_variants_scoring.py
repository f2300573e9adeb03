"""How benchmarks/rl_variants.py reads a reasoning trace of the synthetic task: whether its caption names
the asked fact, and whether its claims about the two responses follow that caption."""

from __future__ import annotations

import pytest

from benchmarks.rl_variants import caption_names, follows_caption, quotes_responses
from helpers import synthetic_trace as _trace


def test_a_lone_shape_is_counted_as_one_and_plurals_name_their_shape():
    count = {"response_1": "I count one shapes.", "response_2": "I count three shapes."}
    count |= {"label": 1, "category": "count"}
    assert caption_names(_trace("a red circle", "one", "matches", "three", "does not match", 1), count)
    assert not caption_names(_trace("two red circles", "one", "matches", "three", "does not match", 1), count)
    shape = {"response_1": "It is a square.", "response_2": "It is a circle.", "label": 2, "category": "shape"}
    assert caption_names(_trace("three blue circles", "square", "does not match", "circle", "matches", 2), shape)


@pytest.mark.parametrize(
    "trace, follows",
    [
        (_trace("a red triangle", "green", "does not match", "red", "matches", 2), True),
        (_trace("a green triangle", "green", "does not match", "red", "matches", 2), False),  # misjudged
        (_trace("a yellow triangle", "triangle", "matches", "triangle", "does not match", 1), False),  # miscopied
        (_trace("a blue square", "one", "matches", "two", "does not match", 1), True),
        ("<think>Response 1 is better.</think><answer>1</answer>", False),  # nothing to check
    ],
)
def test_claims_follow_the_caption_only_when_every_claim_agrees_with_it(trace, follows):
    assert follows_caption(trace) is follows


@pytest.mark.parametrize("name", ["../elsewhere.json", "/tmp/x.json", "results.txt"])
def test_a_results_name_with_a_folder_or_another_suffix_is_refused_before_anything_runs(name, monkeypatch, capsys):
    from benchmarks import rl_variants

    monkeypatch.setattr("sys.argv", ["rl_variants", "--name", name])
    with pytest.raises(SystemExit) as exit_info:
        rl_variants.main()
    assert exit_info.value.code == 2
    assert "--name must be a .json file name without a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--from", "runs/pipeline/seed-0", "--heldout", "-1"], "--heldout must be 0 or more, got -1"),
        (["--from", "runs/elsewhere", "--heldout", "512"], "every --from must be a seed folder named seed-N"),
        (["--from", "a/seed-1", "--from", "b/seed-1"], "each --from must be another seed folder"),
        (["../escape:learner.lr=1e-4"], "a variant's NAME must be a new plain name"),
        (["SFT:learner.lr=1e-4"], "a variant's NAME must be a new plain name"),
        (["a:learner.lr=1e-4", "a:learner.lr=2e-4"], "a variant's NAME must be a new plain name"),
        ([":learner.lr=1e-4"], "a variant's NAME must be a new plain name"),
    ],
)
def test_bad_seed_folders_or_held_out_sizes_are_refused_before_anything_runs(argv, message, monkeypatch, capsys):
    from benchmarks import rl_variants

    monkeypatch.setattr("sys.argv", ["rl_variants", *argv])
    with pytest.raises(SystemExit) as exit_info:
        rl_variants.main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_chain_that_holds_together_by_misquoting_a_response_does_not_quote_the_responses():
    pair = {"response_1": "The shape is blue.", "response_2": "The shape is red.", "label": 2, "category": "colour"}
    honest = _trace("a red circle", "blue", "does not match", "red", "matches", 2)
    misquoted = _trace("a green circle", "blue", "does not match", "green", "matches", 2)  # response 2 said red
    assert follows_caption(honest) and quotes_responses(honest, pair)
    assert follows_caption(misquoted) and not quotes_responses(misquoted, pair)
    assert not quotes_responses("<think>Response 1 says blue, which matches the image.</think>", pair)  # one only
    count = {"response_1": "I count two shapes.", "response_2": "I count one shapes.", "label": 1, "category": "count"}
    assert quotes_responses(_trace("two red circles", "two", "matches", "one", "does not match", 1), count)
