"""The paper's released data as users hand it to us (see ../shared/notes/released-data.md).

R1-Reward-RL rows carry a bare question, a text-first chat message naming the authors' absolute image
path (/mmu_mllm_hdd/...), the answer as a list, and the image itself in the ``image`` column (bytes,
base64 text or an HF image struct) or only a path. Multimodal RewardBench ships one JSON array. Each
fixture below reproduces one of those layouts; check-data and prepare-data run from another working
directory with relative paths, through the CLI's `main` (one bad-input case as a real subprocess).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from r1reward.config import ConfigError, load_config
from r1reward.data.dataset import PreferenceDataset, load_preferences
from r1reward.data.prompt import format_prompt
from r1reward.data.readers import read_records
from r1reward.eval.benchmarks import check_rows, read_benchmark
from r1reward.eval.runner import EvalOptions, prepare_rows

REPO = Path(__file__).resolve().parents[1]
AUTHORS_PREFIX = "/mmu_mllm_hdd/yfzhang/data/"
N_ROWS = 5
LABELS = [2, 1, 2, 2, 1]


def jpeg_bytes(seed: int) -> bytes:
    """A small JPEG, the same for the same seed and distinct across seeds (seeded noise)."""
    pixels = random.Random(seed).randbytes(24 * 16 * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (24, 16), pixels).save(buf, format="JPEG")
    return buf.getvalue()


def released_rows(image_kind: str) -> list[dict]:
    """R1-Reward-RL rows as released: the image column holds ``image_kind`` (bytes/base64/struct/path)."""
    rows = []
    for i, label in enumerate(LABELS):
        name = f"sample_{i}.jpg"
        authors_path = f"{AUTHORS_PREFIX}RLAIF-V-image/{name}"
        question = f"Describe artwork {i} in detail."
        prompt = format_prompt(question, f"It shows a tree ({i}).", f"It shows a boat ({i}).")
        message = [
            {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image", "image": authors_path}]}
        ]
        data = jpeg_bytes(i)
        image = {
            "bytes": data,
            "base64": base64.b64encode(data).decode(),
            "struct": {"bytes": data, "path": name},
            "path": authors_path,
        }[image_kind]
        answer = [f"<answer>{label}</answer>"] if i else f"<answer>{label}</answer>"  # a plain string too
        rows.append({"question": question, "message": json.dumps(message), "answer": answer, "image": image})
    return rows


def write_released(path: Path, image_kind: str) -> Path:
    rows = released_rows(image_kind)
    image_type = {
        "bytes": pa.binary(),
        "base64": pa.string(),
        "path": pa.string(),
        "struct": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    }[image_kind]
    for row in rows:  # parquet wants one column type: the answers all become lists
        row["answer"] = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
    schema = pa.schema(
        [("question", pa.string()), ("message", pa.string()), ("answer", pa.list_(pa.string())), ("image", image_type)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture
def local_copy(tmp_path) -> Path:
    """The images saved locally under the authors' layout, as the released README asks users to do."""
    root = tmp_path / "local-images"
    (root / "RLAIF-V-image").mkdir(parents=True)
    for i in range(N_ROWS):
        (root / "RLAIF-V-image" / f"sample_{i}.jpg").write_bytes(jpeg_bytes(i))
    return root


def run_cli(*args: str, cwd: Path, real_process: bool = False) -> subprocess.CompletedProcess:
    """`r1reward ARGS` run in `cwd`: in this process through the CLI's `main` (a subprocess only adds the
    imports' seconds), or with `real_process` as a user's shell runs it."""
    if real_process:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        return subprocess.run(
            [sys.executable, "-m", "r1reward", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
        )
    from r1reward.cli import main

    out, err, here = io.StringIO(), io.StringIO(), Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def path_map(local: Path) -> str:
    return f"data.image_path_map={{{AUTHORS_PREFIX}: {local}/}}"


# ------------------------------------------------------------------------------------ the reader


@pytest.mark.parametrize("kind", ["bytes", "base64", "struct"])
def test_embedded_images_load_although_the_message_path_does_not_exist(tmp_path, kind):
    assert not Path(AUTHORS_PREFIX).exists()
    path = write_released(tmp_path / f"rl-{kind}.parquet", kind)
    records, report = load_preferences(path, "r1reward-rl", swap_seed=None, verbose=False)
    assert (report.rows, report.kept, dict(report.counts)) == (N_ROWS, N_ROWS, {})
    assert [r.label for r in records] == LABELS
    assert [r.images for r in records] == [[jpeg_bytes(i)] for i in range(N_ROWS)]
    first = records[0]
    assert first.question == "Describe artwork 0 in detail."  # from the text-first message's prompt
    assert (first.response_1, first.response_2) == ("It shows a tree (0).", "It shows a boat (0).")
    assert all(not r.extra for r in records)  # the fallback bytes are not kept twice


def test_answer_as_a_plain_string(tmp_path):
    row = released_rows("base64")[0]
    assert isinstance(row["answer"], str)
    path = tmp_path / "rl.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (record,) = read_records(path, "r1reward-rl")
    assert record.label == LABELS[0]


def test_paths_load_with_the_path_map_and_are_skipped_without(tmp_path, local_copy):
    path = write_released(tmp_path / "rl-path.parquet", "path")
    records, report = load_preferences(path, "r1reward-rl", swap_seed=None, verbose=False)
    assert records == [] and dict(report.counts) == {"image-missing": N_ROWS}
    assert AUTHORS_PREFIX in report.examples[0]

    mapping = {AUTHORS_PREFIX: f"{local_copy}/"}
    records, report = load_preferences(path, "r1reward-rl", swap_seed=None, verbose=False, image_path_map=mapping)
    assert report.kept == N_ROWS and not report.counts
    assert [r.images for r in records] == [
        [str(local_copy / "RLAIF-V-image" / f"sample_{i}.jpg")] for i in range(N_ROWS)
    ]


def test_path_map_longest_prefix_wins_and_relative_targets_use_the_image_root(tmp_path, local_copy):
    path = write_released(tmp_path / "data" / "rl-path.parquet", "path")
    mapping = {"/mmu_mllm_hdd/": "/nowhere/", AUTHORS_PREFIX: "images/"}  # the longer one must win
    (local_copy.parent / "images").symlink_to(local_copy)
    records, report = load_preferences(
        path, "r1reward-rl", image_root=local_copy.parent, swap_seed=None, verbose=False, image_path_map=mapping
    )
    assert report.kept == N_ROWS, report.summary()
    assert records[0].images == [str(local_copy.parent / "images" / "RLAIF-V-image" / "sample_0.jpg")]


def test_an_existing_message_path_is_used_before_the_embedded_image(tmp_path, local_copy):
    path = write_released(tmp_path / "rl-bytes.parquet", "bytes")
    records, _ = load_preferences(
        path, "r1reward-rl", swap_seed=None, verbose=False, image_path_map={AUTHORS_PREFIX: f"{local_copy}/"}
    )
    assert all(isinstance(r.images[0], str) and r.images[0].startswith(str(local_copy)) for r in records)


def test_corrupt_embedded_image_with_a_missing_path_is_undecodable(tmp_path):
    rows = released_rows("bytes")
    rows[1]["image"] = b"not an image at all"
    rows[0]["answer"] = [rows[0]["answer"]]  # one column type for parquet
    path = tmp_path / "rl.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _, report = load_preferences(path, "r1reward-rl", swap_seed=None, verbose=False)
    assert report.kept == N_ROWS - 1 and dict(report.counts) == {"image-undecodable": 1}
    assert report.examples[0].startswith(f"{path}:2: image-undecodable:")


def test_the_dataset_takes_the_path_map_as_training_does(tmp_path, local_copy):
    path = write_released(tmp_path / "rl-path.parquet", "path")
    config = load_config(None, [path_map(local_copy)])
    assert config.data.image_path_map == {AUTHORS_PREFIX: f"{local_copy}/"}
    dataset = PreferenceDataset.from_file(path, "r1reward-rl", image_path_map=config.data.image_path_map, verbose=False)
    assert len(dataset) == N_ROWS
    assert sorted(r.label for r in dataset) in ([1, 1, 2, 2, 2], [1, 1, 1, 2, 2])  # balanced swap


def test_own_writer_layout_still_loads(synthetic_dir):
    records, report = load_preferences(synthetic_dir / "train.parquet", "r1reward-rl", verbose=False)
    assert report.kept == report.rows == 16
    assert all(Path(r.images[0]).is_file() for r in records)


def test_image_path_map_config_is_typed():
    assert load_config(None, []).data.image_path_map == {}
    with pytest.raises(ConfigError, match="image_path_map"):
        load_config(None, ["data.image_path_map=5"])


# ---------------------------------------------------------------------------- check-data, CLI


def test_check_data_from_another_directory_with_relative_paths(tmp_path, local_copy):
    write_released(tmp_path / "released" / "rl-base64.parquet", "base64")
    write_released(tmp_path / "released" / "rl-path.parquet", "path")
    cwd = tmp_path / "work"
    cwd.mkdir()

    proc = run_cli("check-data", "--schema", "r1reward-rl", "--data", "../released/rl-base64.parquet", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert (result["rows"], result["loaded"], result["skipped"]) == (N_ROWS, N_ROWS, 0)
    assert result["labels"] == {"1": LABELS.count(1), "2": LABELS.count(2)}
    assert result["images_per_row"] == {"min": 1, "mean": 1.0, "max": 1}
    assert result["first_bad_rows"] == []

    proc = run_cli("check-data", "--schema", "r1reward-rl", "--data", "../released/rl-path.parquet", cwd=cwd)
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["loaded"], result["skipped_by_reason"]) == (0, {"image-missing": N_ROWS})
    assert len(result["first_bad_rows"]) == 5
    assert result["first_bad_rows"][0].startswith("../released/rl-path.parquet:1: image-missing: ")

    # The images next to the data, named by a relative map target and a relative --image-root.
    proc = run_cli(
        "check-data",
        "--schema",
        "r1reward-rl",
        "--data",
        "../released/rl-path.parquet",
        "--image-root",
        "../local-images",
        f"data.image_path_map={{{AUTHORS_PREFIX}: ''}}",
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["loaded"] == N_ROWS


def test_check_data_bad_input_is_one_line(tmp_path):
    proc = run_cli("check-data", "--schema", "r1reward-rl", "--data", "absent.parquet", cwd=tmp_path, real_process=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["r1reward check-data: error: data file not found: absent.parquet"]
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    proc = run_cli("check-data", "--schema", "nope", "--data", "x.jsonl", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown schema 'nope'" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------- prepare-data


@pytest.mark.parametrize("kind", ["struct", "path"])
def test_prepare_data_output_loads_back_from_any_directory(tmp_path, local_copy, kind, monkeypatch):
    write_released(tmp_path / "released" / f"rl-{kind}.parquet", kind)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    proc = run_cli(
        "prepare-data",
        "--schema",
        "r1reward-rl",
        "--data",
        f"../released/rl-{kind}.parquet",
        "--out",
        "prepared",
        path_map(local_copy),
        cwd=a,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert (result["rows"], result["converted"], result["skipped"], result["images_written"]) == (
        N_ROWS,
        N_ROWS,
        0,
        N_ROWS,
    )
    written = a / "prepared" / "train.parquet"
    table = pq.read_table(written).to_pylist()
    assert all(row["image"].startswith("images/") for row in table)  # relative to the parquet file
    assert sorted(p.name for p in (a / "prepared" / "images").iterdir()) == sorted(
        Path(row["image"]).name for row in table
    )
    assert (a / "prepared" / "images" / Path(table[0]["image"]).name).read_bytes() == jpeg_bytes(0)

    proc = run_cli("check-data", "--schema", "r1reward-rl", "--data", "../a/prepared/train.parquet", cwd=b)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["loaded"], result["labels"]) == (N_ROWS, {"1": 2, "2": 3})

    monkeypatch.chdir(b)  # in-process, as training loads it
    records, report = load_preferences(
        Path("../a/prepared/train.parquet"), "r1reward-rl", swap_seed=None, verbose=False
    )
    assert report.kept == N_ROWS and [r.label for r in records] == LABELS
    assert all(Path(r.images[0]).is_absolute() and Path(r.images[0]).is_file() for r in records)
    assert records[0].question == "Describe artwork 0 in detail."


def test_prepare_data_counts_what_it_skips(tmp_path, local_copy):
    write_released(tmp_path / "rl-path.parquet", "path")
    (local_copy / "RLAIF-V-image" / "sample_3.jpg").unlink()
    proc = run_cli(
        "prepare-data",
        "--schema",
        "r1reward-rl",
        "--data",
        "rl-path.parquet",
        "--out",
        "out",
        path_map(local_copy),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["converted"], result["skipped_by_reason"]) == (N_ROWS - 1, {"image-missing": 1})
    assert result["first_bad_rows"][0].startswith("rl-path.parquet:4: image-missing:")
    assert pq.read_table(tmp_path / "out" / "train.parquet").num_rows == N_ROWS - 1

    proc = run_cli(
        "prepare-data", "--schema", "r1reward-rl", "--data", "rl-path.parquet", "--out", "none", cwd=tmp_path
    )  # no map: nothing converts, nothing is written
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["converted"] == 0 and not (tmp_path / "none" / "train.parquet").exists()


# ------------------------------------------------------------------------ Multimodal RewardBench


@pytest.fixture
def mmrb(tmp_path) -> tuple[Path, Path]:
    """all_data.json (one JSON array) and its image folder; one row nests its category under Meta."""
    folder = tmp_path / "images"
    (folder / "vqa").mkdir(parents=True)
    rows = []
    for i, (row_id, category, better) in enumerate(
        [
            ("math-1", "reasoning", "Output1"),
            ("pairs-2", "safety", "Output2"),
            ("vqa-3", "vqa", "Output2"),
            ("coding-4", None, "Output1"),
        ]
    ):
        (folder / "vqa" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
        row = {
            "ID": row_id,
            "Text": f"Question {i}?",
            "Image": f"vqa/{i}.jpg",
            "Output1": f"first {i}",
            "Output2": f"second {i}",
            "Better": better,
        }
        if category:
            row["Category"] = category
        else:
            row["Meta"] = {"Category": "reasoning"}
        rows.append(row)
    path = tmp_path / "all_data.json"
    path.write_text(json.dumps(rows, indent=2))
    return path, folder


def test_mmrb_all_data_json_loads_via_the_benchmark_loader(mmrb, tmp_path):
    path, folder = mmrb
    rows = read_benchmark(path, "multimodal-rewardbench")
    assert [r.id for r in rows] == ["math-1", "pairs-2", "vqa-3", "coding-4"]
    assert [r.label for r in rows] == [1, 2, 2, 1]
    assert [r.category for r in rows] == ["reasoning/math", "safety/bias", "vqa", "reasoning/coding"]
    assert not any(r.problem for r in check_rows(rows, folder))
    # What `r1reward eval --benchmark multimodal-rewardbench --data all_data.json --image-root DIR` runs
    # before loading the model.
    options = EvalOptions(
        "multimodal-rewardbench", str(path), str(tmp_path / "out"), model="/nonexistent", image_root=str(folder)
    )
    prepared = prepare_rows(options)
    assert len(prepared) == 4 and not any(r.problem for r in prepared)
    assert prepared[2].record.images == [str(folder / "vqa" / "2.jpg")]


def test_mmrb_check_data_with_image_root(mmrb, tmp_path):
    path, folder = mmrb
    proc = run_cli(
        "check-data",
        "--schema",
        "multimodal-rewardbench",
        "--data",
        path.name,
        "--image-root",
        folder.name,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["rows"], result["loaded"], result["labels"]) == (4, 4, {"1": 2, "2": 2})


def test_json_files_for_other_schemas(tmp_path):
    row = {"id": "p0", "question": "Q", "images": ["i.png"], "response_1": "a", "response_2": "b", "label": 2}
    (tmp_path / "array.json").write_text(json.dumps([row, {**row, "id": "p1"}, "not a row"]))
    (tmp_path / "lines.json").write_text(json.dumps(row) + "\n")  # JSON lines under a .json name
    ids = [r.id for r in read_records(tmp_path / "lines.json", "canonical")]
    assert ids == ["p0"]
    with pytest.raises(Exception, match="array.json:3: invalid-json"):
        list(read_records(tmp_path / "array.json", "canonical"))
    records, report = load_preferences(
        tmp_path / "array.json", "canonical", require_images=False, swap_seed=None, verbose=False
    )
    assert report.rows == 3 and dict(report.counts) == {"image-missing": 2, "invalid-json": 1}
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(Exception, match="broken.json is not valid JSON"):
        list(read_records(tmp_path / "broken.json", "canonical"))


def test_prompt_with_another_preamble_is_split_by_its_headings(tmp_path):
    prompt = format_prompt("What is shown?", "A cat.", "A dog.")
    variant = "<image>\nCompare the two answers carefully.\n\n" + prompt[prompt.index("###### [Question]") :]
    row = released_rows("base64")[0]
    row["message"] = json.dumps([{"role": "user", "content": [{"type": "text", "text": variant}]}])
    path = tmp_path / "rl.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (record,) = read_records(path, "r1reward-rl")
    assert (record.question, record.response_1, record.response_2) == ("What is shown?", "A cat.", "A dog.")
