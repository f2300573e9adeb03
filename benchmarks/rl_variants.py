"""RL settings side by side from one SFT checkpoint, scored per question kind (issue #11's sweep).

Each variant is `NAME:key=value,key=value` (config overrides on configs/pipeline-tiny.yaml) and trains
on the seed folder's hard examples from its SFT checkpoint, as the pipeline's RL stage does. Every model
(SFT, then each variant) answers the held-out pairs greedily; per question kind the table gives the
accuracy, how often the reasoning's caption names the asked fact right, and how often the reasoning's
claims about the responses follow its own caption: this tells a model that misreads the image from one
that reads it and then compares the responses wrongly.

    make demo   # writes runs/pipeline/seed-0
    .venv/bin/python -m benchmarks.rl_variants --from runs/pipeline/seed-0 \\
        "lr5e-4:learner.lr=5e-4,trainer.num_steps=32,trainer.rollout_batch_size=32"

`--from` may repeat (one entry per seed folder in the file, and the report's paired gain of each model
over SFT across them); a folder's own RL model, when it has one, is scored as "pipeline RL".
`--heldout N` scores N fresh held-out pairs drawn as the pipeline draws that seed's (its first pairs are the
folder's own): a 256-pair set cannot tell a gain of a few points from its own noise.

Writes benchmarks/results/rl_variants.json (`--name` another file there). Not part of CI. Whether an
update follows the advantages is checked by tests/test_learner_nonfinite.py; a constant label cannot
check it here, because training swaps response positions to balance the labels (half of them would
become the other answer).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from r1reward.data.synthetic import CLAIM, caption_words, follows_caption, names


def response_value(response: str, category: str) -> str:
    """The value a synthetic response states ("I count three shapes." -> "three", "It is a circle." -> "circle")."""
    return response.split()[2] if category == "count" else response.rstrip(".").split()[-1]


def caption_names(text: str, pair: dict) -> bool:
    """Whether the reasoning's "The image shows ..." names the right response's value."""
    right = pair["response_1"] if pair["label"] == 1 else pair["response_2"]
    return names(caption_words(text) or [], response_value(right, pair["category"]))


def quotes_responses(text: str, pair: dict) -> bool:
    """Whether the reasoning's claims quote both responses right ("Response 1 says V" with V the value
    response 1 states): a chain can hold together by misquoting a response, which a judge that sees the
    reasoning alone cannot tell."""
    said = {int(n): v for n, v, _ in CLAIM.findall(text)}
    return said == {n: response_value(pair[f"response_{n}"], pair["category"]) for n in (1, 2)}


SEED_FOLDER = re.compile(r"seed-(\d+)")
RESERVED = ("SFT", "pipeline RL")  # the models every folder scores besides the variants


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", help="NAME:key=value,key=value")
    parser.add_argument(
        "--from", dest="sources", action="append", help="a seed folder of `r1reward pipeline` (repeatable)"
    )
    parser.add_argument("--heldout", type=int, default=0, help="score N fresh held-out pairs (0: the folder's own)")
    parser.add_argument("--config", default="configs/pipeline-tiny.yaml")
    parser.add_argument(
        "--train-on", default="hard", choices=["hard", "all"], help="hard examples or every training pair"
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default="rl_variants.json", help="the results file's name under --out")
    args = parser.parse_args()
    if Path(args.name).name != args.name or not args.name.endswith(".json"):
        parser.error(f"--name must be a .json file name without a folder, got {args.name!r}")
    sources = [Path(s) for s in args.sources or ["runs/pipeline/seed-0"]]
    if args.heldout < 0:
        parser.error(f"--heldout must be 0 or more, got {args.heldout}")
    if args.heldout and any(not SEED_FOLDER.fullmatch(s.name) for s in sources):
        parser.error("--heldout draws a seed's pairs: every --from must be a seed folder named seed-N")
    if len({s.name for s in sources}) < len(sources):
        parser.error("each --from must be another seed folder")
    names = [spec.partition(":")[0] for spec in args.variants]
    for name in names:
        if not name or Path(name).name != name or name in RESERVED or names.count(name) > 1:
            parser.error(f"a variant's NAME must be a new plain name (not {', '.join(RESERVED)}), got {name!r}")

    from r1reward.config import load_config
    from r1reward.placement.ray_init import ensure_ray
    from r1reward.trainer.pipeline import machine

    out = Path(args.out)
    config = load_config(args.config)
    ensure_ray(config, out / "rl-variants-runs" / "logs")
    stamp = machine()
    folders: dict[str, dict] = {}
    for source in sources:  # the file is rewritten after each folder: a stopped run keeps those done
        folders[source.name] = score_folder(source, args, config)
        results = next(iter(folders.values())) if len(sources) == 1 else dict(folders)
        (out / args.name).write_text(json.dumps({**results, "machine": stamp}, indent=1))
    return 0


def heldout_pairs(source: Path, count: int, out: Path) -> Path:
    """The folder's own held-out pairs, or `count` fresh ones drawn as the pipeline draws that seed's."""
    if not count:
        return source / "data" / "heldout" / "pairs.jsonl"
    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.trainer.pipeline import heldout_data_seed

    seed = int(SEED_FOLDER.fullmatch(source.name).group(1))
    return make_synthetic_data(out, num=count, seed=heldout_data_seed(seed))["pairs"]


def score_folder(source: Path, args: argparse.Namespace, config) -> dict:
    """Each variant trained from the folder's SFT checkpoint, then every model scored on held-out pairs."""
    from benchmarks.ablation import run_variant
    from r1reward.algo import parse_answer
    from r1reward.data.jsonl import read_jsonl
    from r1reward.trainer.checkpoint import latest_checkpoint
    from r1reward.trainer.hard_examples import Sampler, records_of

    runs = Path(args.out) / "rl-variants-runs" / source.name
    data = source / "data" / ("hard.parquet" if args.train_on == "hard" else "train/train.parquet")
    sft = str(latest_checkpoint(source / "sft") / "hf")
    models = {RESERVED[0]: sft}
    own_rl = latest_checkpoint(source / "rl")
    if own_rl is not None:
        models[RESERVED[1]] = str(own_rl / "hf")
    results = {"source": str(source), "train_on": args.train_on, "variants": {}}
    for spec in args.variants:
        name, _, overrides = spec.partition(":")
        run = run_variant(args.config, data, sft, runs / name, [o for o in overrides.split(",") if o], seed=0)
        rates = run["result_rate_curve"]
        quarter = max(1, len(rates) // 4)
        results["variants"][name] = {
            "overrides": overrides,
            "train_result_rate_first_quarter": statistics.fmean(rates[:quarter]),
            "train_result_rate_last_quarter": statistics.fmean(rates[-quarter:]),
        }
        models[name] = run["model"]

    heldout = heldout_pairs(source, args.heldout, runs / "heldout")
    pairs = list(read_jsonl(heldout))
    results["heldout_pairs"] = len(pairs)
    records = records_of(heldout, "canonical", config)
    with Sampler(sft, config) as sampler:
        for name, model in models.items():
            sampler.load(model)
            texts = [row[0] for row in sampler.texts(records, k=1, temperature=0.0, seed=7)]
            checks = {
                "accuracy": lambda text, pair: parse_answer(text) == pair["label"],
                "caption_right": caption_names,
                "follows_caption": lambda text, pair: follows_caption(text),
                "quotes_responses": quotes_responses,
            }
            kinds: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
            for text, pair in zip(texts, pairs):
                for key, check in checks.items():
                    kinds[pair["category"]][key].append(check(text, pair))
            scores = {key: statistics.fmean(x for v in kinds.values() for x in v[key]) for key in checks}
            for key in checks:
                scores |= {f"{k}/{key}": statistics.fmean(v[key]) for k, v in sorted(kinds.items())}
            results["variants"].setdefault(name, {}).update(scores)
            print(
                source.name,
                name,
                json.dumps(
                    {k: round(v, 3) if isinstance(v, float) else v for k, v in results["variants"][name].items()}
                ),
                flush=True,
            )
    return results


if __name__ == "__main__":
    sys.exit(main())
