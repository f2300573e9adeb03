"""`benchmarks/ablation.py --settings X` adds its rows to an earlier table only when that table was
measured from the same SFT model: a seed folder rebuilt by a later recipe keeps its path."""

from __future__ import annotations

import json

from benchmarks.ablation import _earlier_settings, sft_fingerprint


def _model(folder, weights: bytes):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_rows_of_the_same_sft_model_are_kept_and_of_another_are_not(tmp_path):
    first = sft_fingerprint(_model(tmp_path / "a" / "hf", b"weights of one recipe"))
    rebuilt = sft_fingerprint(_model(tmp_path / "b" / "hf", b"weights of a later recipe"))
    assert first != rebuilt
    earlier = tmp_path / "ablation.json"
    earlier.write_text(
        json.dumps(
            {
                "source": "runs/pipeline/seed-0",
                "sft_fingerprint": first,
                "seeds": [0, 1],
                "settings": {
                    "stressed": {"StableReinforce": [{"accuracy": 0.5}]},
                    "demo": {"StableReinforce": [{"accuracy": 0.7}]},
                },
            }
        )
    )
    kept = _earlier_settings(earlier, first, [0, 1], keep_out=["demo"])
    assert list(kept) == ["stressed"]  # the setting being rerun is replaced, the other kept
    assert _earlier_settings(earlier, rebuilt, [0, 1], keep_out=["demo"]) == {}
    assert _earlier_settings(earlier, first, [0, 1, 2], keep_out=["demo"]) == {}


def test_a_table_from_before_fingerprints_is_not_merged(tmp_path):
    earlier = tmp_path / "ablation.json"
    earlier.write_text(json.dumps({"source": "runs/pipeline/seed-0", "seeds": [0], "settings": {"demo": {}}}))
    assert _earlier_settings(earlier, "anything", [0], keep_out=[]) == {}
