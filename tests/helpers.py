"""Helpers shared by test modules (no tests here): test modules import these, never each other."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import threading
import time
from pathlib import Path

from PIL import Image

from r1reward.errors import UserError


def run_cli(argv: list[str]) -> int:
    """`r1reward ...` through r1reward.cli once eval is wired into it, else through add_commands alone."""
    from r1reward import cli
    from r1reward.eval.cli import add_commands

    cli.build_parser()  # once cli.py calls add_commands, building its parser registers our commands
    if "eval-metrics" in cli.COMMANDS:
        return cli.main(argv)
    parser, registry = argparse.ArgumentParser(), {}
    add_commands(
        parser.add_subparsers(dest="command", required=True), lambda name: lambda fn: registry.setdefault(name, fn)
    )
    args = parser.parse_args(argv)
    try:
        return registry[args.command](args) or 0
    except UserError as exc:
        print(f"r1reward {args.command}: error: {exc}")
        return 2


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def placeholder_images(root: Path, data: Path, limit: int | None = None, leave_out: int = 0) -> list[str]:
    """Write a small PNG at the image paths of the first ``limit`` rows, except the first ``leave_out``
    such rows; returns the ids of the rows left without an image."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), "gray").save(buf, format="PNG")
    missing = []
    for n, line in enumerate(data.read_text().splitlines()[:limit]):
        row = json.loads(line)
        if not row.get("image"):
            continue
        if n < leave_out:
            missing.append(row["id"])
            continue
        (root / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        (root / row["image"]).write_bytes(buf.getvalue())
    return missing


def frame_colour(index: int) -> tuple[int, int, int]:
    """Frame ``index``'s colour in ``write_video``: far from its neighbours', so that a lossy codec
    cannot blur one frame into the next."""
    return (16 * index % 256, 255 - 16 * index % 256, 128 if index % 2 else 32)


def write_video(path: Path, seconds: float = 2.0, fps: int = 8, size: tuple[int, int] = (56, 56)) -> int:
    """An MPEG-4 video of solid-colour frames (frame i in ``frame_colour(i)``); returns the frame count."""
    import av
    import numpy as np

    count = round(seconds * fps)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(count):
            rgb = np.zeros((size[1], size[0], 3), np.uint8) + np.array(frame_colour(index), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return count


MRB_ROWS = [  # (ID, Category, Better): one or two rows for each of the eight reported categories
    ("nocaps_1", "open_generation/correctness_task", "Output1"),
    ("visitbench_2", "open_generation/correctness_task", "Output2"),
    ("wildvision_3", "open_generation/preference_task", "Output2"),
    ("mmmu-pro_4", "knowledge", "Output1"),
    ("mathvista_5", "reasoning", "Output1"),
    ("EMMA-Coding_6", "reasoning", "Output2"),
    ("PAIRS_7", "safety", "Output1"),
    ("hateful_memes_8", "safety", "Output2"),
    ("RealworldQA_9", "vqa", "Output1"),
]


class StreamLines:
    """The lines a subprocess writes to one pipe, read by a thread (so the pipe never fills and blocks
    the process). Tests wait on events, a line that matches, with a generous deadline, not on sleeps."""

    def __init__(self, stream, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float, start: int = 0) -> tuple[int, re.Match]:
        """(index, match) of the first line from ``start`` on that matches ``pattern``. Fails with one
        line naming the wait when the deadline passes or the stream ends first."""
        regex, deadline, seen = re.compile(pattern), time.monotonic() + timeout_s, start
        with self._changed:
            while True:
                for index in range(seen, len(self.lines)):
                    if match := regex.search(self.lines[index]):
                        return index, match
                seen = max(seen, len(self.lines))
                if self._ended:
                    raise AssertionError(
                        f"{self.name} ended without a line matching {pattern!r}; last lines: {self.text()[-2000:]!r}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no line matching {pattern!r} on {self.name} within {timeout_s:g} s")
                self._changed.wait(left)

    def text(self) -> str:
        """Everything read so far."""
        with self._changed:
            return "".join(self.lines)

    def all_text(self, timeout_s: float = 60) -> str:
        """Everything the process wrote here, once it has exited (waits, bounded, for the pipe's end)."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.name} still open {timeout_s:g} s after the process exited")
        return self.text()


def wait_for_exit(proc: subprocess.Popen, timeout_s: float, what: str) -> int:
    """The process's exit code; a one-line TimeoutError naming ``what`` if it has not exited in time."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{what} still running after {timeout_s:g} s") from None


# --- bad input: one row of each kind the readers skip, after good rows ----------------------------
GOOD_ROWS = 8
BAD_KINDS = (
    "image-missing",
    "image-undecodable",
    "unparseable-prompt",
    "bad-label",
    "empty-response",
    "prompt-too-long",
    "duplicate-id",
    "video-unsupported",
)


def write_bad_corpus(synthetic_dir: Path, out: Path) -> tuple[Path, list[str]]:
    """An R1-Reward RL JSONL file: GOOD_ROWS good rows of the synthetic set (images relative to
    `synthetic_dir`, to be passed as data.image_root) with one row of each kind in BAD_KINDS after
    them; returns the file and the good rows' ids in file order."""
    import pyarrow.parquet as pq

    from r1reward.data.prompt import format_prompt

    out.mkdir(parents=True, exist_ok=True)
    (out / "broken.png").write_bytes(b"\x89PNG not really an image")
    source = pq.read_table(synthetic_dir / "train.parquet").to_pylist()[:GOOD_ROWS]
    good = [{**row, "id": f"good-{i}"} for i, row in enumerate(source)]

    def with_image(row: dict, image: str) -> dict:
        chat = json.loads(row["message"])
        for part in chat[0]["content"]:
            if part.get("type") == "image":
                part["image"] = image
        return {**row, "message": json.dumps(chat), "image": image}

    base = good[0]
    filled = format_prompt
    video_chat = [
        {
            "role": "user",
            "content": [{"type": "text", "text": base["question"]}, {"type": "video", "video": "clip.mp4"}],
        }
    ]
    bad = {
        "image-missing": with_image({**base, "id": "bad-1"}, "absent.png"),
        "image-undecodable": with_image({**base, "id": "bad-2"}, str(out / "broken.png")),
        "unparseable-prompt": {
            **base,
            "id": "bad-3",
            "question": "What is shown?",
            "message": json.dumps([{"role": "user", "content": "What is shown?"}]),
        },
        "bad-label": {**base, "id": "bad-4", "answer": ["<answer>3</answer>"]},
        "empty-response": {**base, "id": "bad-5", "question": filled("Which is better?", "A cat.", "  ")},
        "prompt-too-long": {**base, "id": "bad-6", "question": filled("word " * 3000, "A cat.", "A dog.")},
        "duplicate-id": {**good[1], "id": "good-0"},
        "video-unsupported": {**base, "id": "bad-8", "message": json.dumps(video_chat), "image": ""},
    }
    path = out / "corpus.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [*good, *bad.values()]))
    return path, [row["id"] for row in good]


class JudgeServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1 for the judge tests. `status(n)` gives
    the HTTP status of the n-th request (0-based), sent with the verdict "1", or None to hold the request
    unanswered until `close()`; `bodies` holds the requests' JSON."""

    def __init__(self, status) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                code = status(len(server.bodies) - 1)
                if code is None:
                    server.release.wait(60)
                    return
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(json.dumps({"choices": [{"message": {"content": "1"}}]}).encode())
                except OSError:
                    pass  # the client gave up

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def probe_prompts(trainer, count: int = 2) -> list[dict]:
    """The first ``count`` prompts of the trainer's data, as a rollout worker's generate takes them."""
    from r1reward.trainer.experience import prepare_prompt

    cfg = trainer.config
    return [
        {"prompt": p["prompt"], "images": p["images"]}
        for p in (
            prepare_prompt(trainer.processor, trainer.dataset[i], cfg.data.min_pixels, cfg.data.max_pixels)
            for i in range(count)
        )
    ]


def fixed_sample(trainer) -> dict:
    """A prompt from the trainer's data and a fixed completion: the same tokens are scored before and after."""
    from r1reward.trainer.experience import prepare_prompt

    cfg = trainer.config
    prompt = prepare_prompt(trainer.processor, trainer.dataset[0], cfg.data.min_pixels, cfg.data.max_pixels)
    completion = trainer.processor.tokenizer(
        "<think>The first response is right.</think><answer>1</answer>", add_special_tokens=False
    ).input_ids
    return {**{k: prompt[k] for k in ("prompt_ids", "pixel_values", "image_grid_thw")}, "completion_ids": completion}


def weights_sha(checkpoint: Path) -> str:
    """One digest of a checkpoint's exported weights (its hf/*.safetensors)."""
    files = sorted((checkpoint / "hf").glob("*.safetensors"))
    assert files, f"no safetensors in {checkpoint / 'hf'}"
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def synthetic_trace(caption: str, said_1: str, claim_1: str, said_2: str, claim_2: str, answer: int) -> str:
    """A reasoning trace in the synthetic task's shape, with whatever claims a test needs (r1reward.data
    .synthetic.reasoning_target writes only right ones)."""
    return (
        f"<think>The image shows {caption}. Response 1 says {said_1}, which {claim_1} the image. "
        f"Response 2 says {said_2}, which {claim_2} the image. Response {answer} is better.</think>"
        f"<answer>{answer}</answer>"
    )
