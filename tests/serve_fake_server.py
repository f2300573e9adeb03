"""``r1reward serve`` with its real flags, app and uvicorn, on the fake engine of serve_fakes (no vLLM):
the server of the loopback abuse suite (tests/test_serve_abuse.py). Usage: python serve_fake_server.py
[serve flags]; the engine sleeps FAKE_ENGINE_DELAY seconds on calls with a prompt holding "SLOW", fails on
"POISON" (as vLLM fails on a prompt too long) and crashes on "CRASH"."""

import os
import sys

import r1reward.serve.cli as serve_cli
from r1reward.cli import main
from r1reward.eval.api import RewardModel
from serve_fakes import FakeEngine, FakeProcessor


def fake_model(args):
    engine = FakeEngine(float(os.environ.get("FAKE_ENGINE_DELAY", "1")), "POISON", "SLOW", "CRASH")
    return RewardModel(engine, FakeProcessor(), seed=args.seed)


serve_cli.load_reward_model = fake_model
sys.exit(main(["serve", *sys.argv[1:]]))
