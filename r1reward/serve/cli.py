"""``r1reward serve``: one process that owns the vLLM engine(s) and answers over HTTP (see serve/app.py).

``r1reward.cli`` calls ``add_command(subparsers, command)``; heavy imports happen inside the command.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from r1reward.errors import UserError
from r1reward.eval.cli import add_engine_options, load_reward_model
from r1reward.serve.from_flags import build_app, describe

_HELP = (
    "serve a trained reward model over HTTP: /v1/compare, /v1/rank, OpenRLHF's /get_reward, /health, "
    "/v1/models, /metrics; requests from concurrent clients are batched into the engine"
)


def add_command(subparsers: Any, command: Callable[[str], Callable]) -> None:
    p = subparsers.add_parser("serve", help=_HELP, description=_HELP)
    p.add_argument("--model", required=True, help="checkpoint folder (Hugging Face format)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="vLLM engines; more than 1 runs them as Ray actors")
    p.add_argument("--k", type=int, default=1, help="samples per pair when a request gives no k (default 1)")
    p.add_argument("--swap", action="store_true", help="judge both response orders unless a request says swap=false")
    p.add_argument(
        "--max-batch",
        type=int,
        default=256,
        help="generations (prompts x k) per engine call; a larger request gets 413 (default 256, vLLM's max_num_seqs)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=None,
        help="generations waiting for or in the engine; a request beyond gets 503 + Retry-After "
        "(default 4 x --max-batch)",
    )
    p.add_argument("--max-responses", type=int, default=32, help="responses one /v1/rank request may rank (default 32)")
    p.add_argument(
        "--max-body-mb", type=float, default=16.0, help="request body size; a larger body gets 413 (default 16)"
    )
    p.add_argument(
        "--image-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose images requests may name by path (repeatable; default: none, images come "
        "as base64 or data URIs only)",
    )
    p.add_argument("--max-image-mb", type=float, default=20.0, help="size of one image file (default 20)")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=25_000_000,
        help="pixels of one image, checked before decoding (default 25,000,000: 5000 x 5000)",
    )
    p.add_argument(
        "--decode-slots",
        type=int,
        default=2,
        help="requests that decode their images at once; with --max-image-pixels, bounds their memory (default 2)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("R1REWARD_API_KEY"),
        help="requests must send Authorization: Bearer KEY (/health and /metrics stay open); "
        "default: $R1REWARD_API_KEY, else no key",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long the first request of a batch waits for others to join (default 5 ms)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a request may wait for the engine before it gets 504 (default 300)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (paper: 1.0; 0: greedy)")
    p.add_argument("--max-tokens", type=int, default=1024, help="generation limit per sample (paper: 1024)")
    p.add_argument("--seed", type=int, default=0, help="seed of requests that give none")
    p.add_argument("--name", default=None, help="model id in /v1/models (default: the folder's name)")
    add_engine_options(p)
    p.add_argument(
        "--ray-serve",
        action="store_true",
        help="run the app as a Ray Serve deployment on the local Ray (or RAY_ADDRESS's cluster): one engine "
        "per replica, Ray Serve's routing and health checks, a replica that dies is replaced",
    )
    p.add_argument("--replicas", type=int, default=None, help="with --ray-serve: replicas to start (default 1)")
    p.add_argument(
        "--min-replicas", type=int, default=None, help="with --ray-serve: autoscale, never below N (default 1)"
    )
    p.add_argument(
        "--max-replicas", type=int, default=None, help="with --ray-serve: autoscale, never above N (default --replicas)"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    command("serve")(_serve)


class _Stop(Exception):
    """SIGTERM: leave the server loop and close the engines."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop()


def _check_replicas(args: argparse.Namespace) -> None:
    counts = (
        ("--replicas", args.replicas),
        ("--min-replicas", args.min_replicas),
        ("--max-replicas", args.max_replicas),
    )
    if not args.ray_serve:
        given = [name for name, value in counts if value is not None]
        if given:
            raise UserError(f"{given[0]} needs --ray-serve")
        return
    if args.workers != 1:
        raise UserError("--workers: with --ray-serve each replica has one engine; use --replicas")
    for name, value in counts:
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    low, high = args.min_replicas, args.max_replicas
    if low is not None and high is not None and low > high:
        raise UserError(f"--min-replicas ({low}) is above --max-replicas ({high})")
    if args.replicas is not None and not (low or 1) <= args.replicas <= (high or args.replicas):
        raise UserError(f"--replicas ({args.replicas}) must lie within --min-replicas and --max-replicas")


def _check(args: argparse.Namespace) -> None:
    if not Path(args.model).is_dir():
        raise UserError(f"model folder not found: {args.model}")
    for name, value in (
        ("--k", args.k),
        ("--workers", args.workers),
        ("--max-batch", args.max_batch),
        ("--max-tokens", args.max_tokens),
        ("--max-image-pixels", args.max_image_pixels),
        ("--decode-slots", args.decode_slots),
    ):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    _check_replicas(args)
    if args.max_responses < 2:
        raise UserError(f"--max-responses must be at least 2, got {args.max_responses}")
    if args.max_queue is not None and args.max_queue < args.max_batch:
        raise UserError(f"--max-queue ({args.max_queue}) must be at least --max-batch ({args.max_batch})")
    for name, value in (("--max-body-mb", args.max_body_mb), ("--max-image-mb", args.max_image_mb)):
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")
    for root in args.image_root:
        if not Path(root).is_dir():
            raise UserError(f"--image-root: folder not found: {root}")
    if args.api_key is not None and not args.api_key.strip():
        raise UserError("--api-key (or R1REWARD_API_KEY) is empty")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    # Fail now rather than after the model has loaded.
    try:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


def _serve(args: argparse.Namespace) -> int:
    _check(args)
    if args.ray_serve:
        from r1reward.serve.ray_serve import serve_on_ray

        return serve_on_ray(args)
    import uvicorn

    # uvicorn takes SIGTERM while it serves and raises it again once it has shut down; then this handler
    # turns it into _Stop, so the engines are closed and the command exits 0.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    model = None
    try:
        model = load_reward_model(args)
        signal.signal(signal.SIGTERM, _on_sigterm)  # ray.init (--workers > 1) installs its own, which exits 15
        _, app = build_app(args, model)
        print(describe(args, f"{args.workers} engine(s)"), flush=True)
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            timeout_graceful_shutdown=10,
        )
        uvicorn.Server(config).run()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if model is not None:
            model.close()
    print("r1reward serve: stopped", flush=True)
    return 0
