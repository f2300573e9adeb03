"""What the serve tests share: an engine whose answers depend only on the prompt and its seed (as vLLM's
seeded sampling does), a chat processor, images, and waiting for a server subprocess."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest
import requests
from PIL import Image


class FakeProcessor:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return json.dumps(messages, sort_keys=True)


class FakeEngine:
    """Sample j of a prompt with seed s answers from crc32(prompt) + s + j; records every call."""

    def __init__(
        self, delay: float = 0.0, fail_on: str | None = None, slow_on: str | None = None, crash_on: str | None = None
    ) -> None:
        self.calls: list[tuple[int, int]] = []  # (prompts, n) per call
        # delay: seconds per call (only for calls with a prompt holding ``slow_on`` when that is given);
        # fail_on: a ValueError as vLLM raises for a bad input; crash_on: any other engine error.
        self.delay, self.fail_on, self.slow_on, self.crash_on = delay, fail_on, slow_on, crash_on
        self.lock = threading.Lock()

    def generate(self, prompts, n=1, temperature=None, top_p=None, max_tokens=None, seeds=None):
        with self.lock:
            self.calls.append((len(prompts), n))
        if self.delay and (self.slow_on is None or any(self.slow_on in p["prompt"] for p in prompts)):
            time.sleep(self.delay)
        if self.fail_on and any(self.fail_on in p["prompt"] for p in prompts):
            raise ValueError("prompt too long")
        if self.crash_on and any(self.crash_on in p["prompt"] for p in prompts):
            raise RuntimeError("CUDA error at /opt/secret/engine.py line 7")
        out = []
        for prompt, seed in zip(prompts, seeds):
            base = zlib.crc32(prompt["prompt"].encode()) + seed
            texts = [
                f"<think>t{base + j}</think><answer>{1 + (base + j) % 2}</answer>" if (base + j) % 7 else "no answer"
                for j in range(n)
            ]
            out.append(
                {
                    "prompt_token_ids": [],
                    "generations": [
                        {"text": t, "token_ids": [], "logprobs": [], "finish_reason": "stop"} for t in texts
                    ],
                }
            )
        return out


def png_bytes(colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(colour: str = "red") -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(colour)).decode()


def huge_png(width: int, height: int) -> bytes:
    """A single-colour 1-bit greyscale PNG of width x height pixels, written row by row: a few hundred KB
    on disk however large it decodes (a decompression bomb), without the test holding its pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, limit_s: float, name: str = "r1reward serve") -> None:
    """Returns once the server at ``url`` answers /health; fails the test naming what it waited for
    (``name``) if the process exits first or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode} before /health answered:\n{tail(log)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting up
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: no /health within {limit_s:g} s:\n{tail(log)}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
