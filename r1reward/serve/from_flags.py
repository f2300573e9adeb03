"""The service and app of ``r1reward serve``'s flags: the one-process server (serve/cli.py) and each Ray
Serve replica (serve/ray_serve.py) build the same app, with the same limits, API key and error hygiene."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def build_app(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    """(RewardService, FastAPI app) of these flags on ``model`` (its engine stays the caller's)."""
    from r1reward.data.images import ImagePolicy
    from r1reward.serve.app import create_app
    from r1reward.serve.service import RewardService

    service = RewardService(
        model,
        model_name(args),
        k=args.k,
        swap=args.swap,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_responses=args.max_responses,
        wait_s=args.batch_wait_ms / 1000,
        timeout_s=args.timeout,
        images=ImagePolicy(
            roots=tuple(Path(root) for root in args.image_root),
            max_bytes=int(args.max_image_mb * 2**20),
            max_pixels=args.max_image_pixels,
        ),
        decode_slots=args.decode_slots,
        info={"workers": args.workers},  # no path: clients must not learn where the weights are
    )
    return service, create_app(service, api_key=args.api_key, max_body_bytes=int(args.max_body_mb * 2**20))


def model_name(args: argparse.Namespace) -> str:
    return args.name or Path(args.model).resolve().name


def describe(args: argparse.Namespace, engines: str) -> str:
    """The start-up line: what a client may send and what the server will refuse."""
    roots = ", ".join(args.image_root) or "none (base64 images only)"
    return (
        f"r1reward serve: {model_name(args)} on http://{args.host}:{args.port} (k={args.k}, swap={args.swap}, "
        f"max batch {args.max_batch} generations, timeout {args.timeout:g} s, {engines}, "
        f"image roots: {roots}, API key: {'yes' if args.api_key else 'no'})"
    )
