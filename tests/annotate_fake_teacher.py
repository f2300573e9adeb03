"""A small OpenAI-compatible chat server on loopback for `r1reward annotate`'s failure modes.

`script(question, n)` says what the n-th request (0-based) about a question gets: ("answer", k) a chat
completion whose `<answer>` is k (None: no answer tag; "right" / "wrong": the slot that does / does not
hold the response saying "good", whatever order the pair was asked in), ("429", retry_after or None),
("500",), ("sleep", seconds) then a right answer, ("garbage",) a 200 that is not JSON, ("refuse",) a 401. Every
request is counted per question, so tests can prove which pairs were asked again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Action = tuple


def _section(body: dict, name: str) -> str:
    text = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
    return text.split(f"###### [{name}]:\n", 1)[1].split("  \n\n", 1)[0]


def question_of(body: dict) -> str:
    return _section(body, "Question")


class FakeTeacher:
    def __init__(self, script: Callable[[str, int], Action]) -> None:
        self.script = script
        self.requests: Counter[str] = Counter()
        self.images: list[int] = []  # image parts per request
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = question_of(body)
                with teacher.lock:
                    n = teacher.requests[question]
                    teacher.requests[question] += 1
                    teacher.images.append(sum(p["type"] == "image_url" for p in body["messages"][0]["content"]))
                action = teacher.script(question, n)
                if action[0] == "sleep":
                    time.sleep(action[1])
                    action = ("answer", "right")
                if action[0] == "answer" and action[1] in ("right", "wrong"):
                    right = 1 if "good" in _section(body, "Response 1") else 2
                    action = ("answer", right if action[1] == "right" else 3 - right)
                if action[0] == "answer":
                    tag = "" if action[1] is None else f"<answer>{action[1]}</answer>"
                    reply = {
                        "choices": [{"message": {"role": "assistant", "content": f"<think>{question}</think>{tag}"}}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    }
                    self._send(200, json.dumps(reply).encode())
                elif action[0] == "429":
                    self._send(429, b'{"error": "rate limited"}', {"Retry-After": action[1]} if action[1] else {})
                elif action[0] == "500":
                    self._send(500, b'{"error": "overloaded"}')
                elif action[0] == "garbage":
                    self._send(200, b"<html>proxy error</html>")
                elif action[0] == "refuse":
                    self._send(401, b'{"error": "invalid api key"}')

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    for key, value in (headers or {}).items():
                        self.send_header(key, str(value))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
