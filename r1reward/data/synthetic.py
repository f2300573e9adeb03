"""A synthetic multimodal preference set whose answer can only be known from the image.

Each example draws shapes on a canvas and asks about their colour, shape or count; one response is
right, the other names a wrong value. Written as the R1-Reward RL parquet schema (`question`,
`message`, `answer`, `image`), a canonical JSONL view (`pairs.jsonl`) and cold-start reasoning targets
in the R1-Reward output format (`sft.jsonl`).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from PIL import Image, ImageDraw

from r1reward.data.jsonl import write_jsonl
from r1reward.data.records import PreferenceRecord
from r1reward.data.writers import rl_row, write_rl_parquet

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 230), "yellow": (240, 220, 30)}
SHAPES = ["circle", "square", "triangle"]
COUNT_WORDS = ["one", "two", "three", "four"]
QUESTIONS = {
    "colour": "What colour is the shape in the image?",
    "shape": "What shape is drawn in the image?",
    "count": "How many shapes are in the image?",
}
IMAGE_SIZE = 56  # 4x4 merged patches of 14 px: the tiny model's minimum image


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], rgb) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=rgb)


def make_example(rng: random.Random, index: int) -> tuple[Image.Image, dict]:
    """One image and its pair: (image, dict with question, right/wrong answer, kind, facts)."""
    kind = rng.choice(list(QUESTIONS))
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    count = rng.randint(1, 4) if kind == "count" else 1
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    cells = rng.sample(range(4), count)  # 2x2 grid so shapes never overlap
    for cell in cells:
        size = IMAGE_SIZE // 2
        x, y = (cell % 2) * size, (cell // 2) * size
        if count == 1:  # a single shape fills most of the canvas
            x, y, size = 6, 6, IMAGE_SIZE - 12
        pad = 3 if count > 1 else 0
        _draw(draw, shape, (x + pad, y + pad, x + size - pad, y + size - pad), COLOURS[colour])
    value = {"colour": colour, "shape": shape, "count": COUNT_WORDS[count - 1]}[kind]
    pool = {"colour": list(COLOURS), "shape": SHAPES, "count": COUNT_WORDS}[kind]
    wrong = rng.choice([v for v in pool if v != value])
    template = {"colour": "The shape is {}.", "shape": "It is a {}.", "count": "I count {} shapes."}[kind]
    return image, {
        "kind": kind,
        "question": QUESTIONS[kind],
        "right": template.format(value),
        "wrong": template.format(wrong),
        "value": value,
        "wrong_value": wrong,
        "facts": f"a {colour} {shape}" if count == 1 else f"{COUNT_WORDS[count - 1]} {colour} {shape}s",
    }


def caption(example: dict) -> str:
    """What the picture shows, as the reasoning traces (and the tiny model's warm-up) say it."""
    return f"The image shows {example['facts']}."


def reasoning_target(example: dict, label: int) -> str:
    """A short cold-start trace in the R1-Reward format that names the better response."""
    right_n, wrong_n = label, 3 - label
    said = {right_n: example["value"], wrong_n: example["wrong_value"]}
    return (
        f"<think>{caption(example)} "
        f"Response 1 says {said[1]}, which {'matches' if right_n == 1 else 'does not match'} the image. "
        f"Response 2 says {said[2]}, which {'matches' if right_n == 2 else 'does not match'} the image. "
        f"Response {label} is better.</think><answer>{label}</answer>"
    )


def make_synthetic_data(out_dir: str | Path, num: int, seed: int = 0, teacher_bias: float = 0.0) -> dict[str, Path]:
    """Write `num` examples under `out_dir`; returns the paths of the files written.

    `teacher_bias` > 0 makes the cold-start traces (`sft.jsonl`) those of a teacher with a position bias,
    as LLM judges have: where Response 2 is the better one it answers 1 with this probability. As in the
    paper only the teacher's right traces are kept for SFT, so they lean towards answer 1; the RL and
    pair files keep every example."""
    if not 0.0 <= teacher_bias < 1.0:
        raise ValueError(f"teacher_bias must be in [0, 1), got {teacher_bias}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    teacher = random.Random(seed + 7919)  # its own stream: the data do not depend on the bias
    rl_rows, pairs, sft = [], [], []
    for i in range(num):
        image, ex = make_example(rng, i)
        rel = f"images/{i:06d}.png"
        image.save(out / rel, format="PNG", optimize=False)
        label = rng.choice([1, 2])
        r1, r2 = (ex["right"], ex["wrong"]) if label == 1 else (ex["wrong"], ex["right"])
        record = {
            "id": f"synthetic-{seed}-{i:06d}",
            "question": ex["question"],
            "images": [rel],
            "response_1": r1,
            "response_2": r2,
            "label": label,
            "source": "synthetic",
            "category": ex["kind"],
        }
        rl_rows.append(rl_row(PreferenceRecord(record["id"], ex["question"], [rel], r1, r2, label), rel))
        pairs.append(record)
        if not (label == 2 and teacher.random() < teacher_bias):  # the biased teacher got it right
            sft.append({**record, "target": reasoning_target(ex, label)})
    paths = {"rl": out / "train.parquet", "pairs": out / "pairs.jsonl", "sft": out / "sft.jsonl"}
    write_rl_parquet(rl_rows, paths["rl"])
    for key, rows in (("pairs", pairs), ("sft", sft)):
        write_jsonl(rows, paths[key])
    return paths


# --- checking a reasoning trace of this task (the shape `reasoning_target` writes) ----------------
CAPTION = re.compile(r"The image shows (.*?)\.")
CLAIM = re.compile(r"Response ([12]) says (.+?), which (matches|does not match) the image")


def names(words: list[str], value: str) -> bool:
    """Whether a description's words name `value` ("circle" in "two red circles"; a lone shape is "a ...")."""
    return value in words or value + "s" in words or (value == "one" and words[:1] in (["a"], ["an"]))


def caption_words(text: str) -> list[str] | None:
    caption = CAPTION.search(text)
    return caption.group(1).split() if caption else None


def follows_caption(text: str) -> bool:
    """Whether every "Response N says V, which matches / does not match the image" agrees with the
    reasoning's own "The image shows ...": the model used what it read. A trace without both does not."""
    words, claims = caption_words(text), CLAIM.findall(text)
    return bool(words and claims) and all(names(words, v) == (m == "matches") for _, v, m in claims)


def trace_picks(text: str) -> int | None:
    """The response a trace's claims pick when they hold together: they follow its caption and exactly
    one response matches. None otherwise."""
    if not follows_caption(text):
        return None
    matching = {int(n) for n, _, m in CLAIM.findall(text) if m == "matches"}
    return matching.pop() if len(matching) == 1 else None
