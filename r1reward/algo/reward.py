"""The R1-Reward rule reward for one generation: format, result and consistency (paper §4.3).

``reward = result * (1 + 0.5 * consistency) + 0.5 * format`` (at most 2.0). Consistency normally
comes from a judge model; ``rule_consistency`` is a model-free stand-in. Unlike the released code,
which returned 1.0 on any exception, an exception here yields reward 0 and is flagged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from r1reward.algo.tags import answer_texts, first_answer_text, is_well_formed, think_text


@dataclass(frozen=True)
class RewardParts:
    reward: float
    format: float
    result: float
    consistency: int
    parse_failed: bool
    error: str | None = None  # set when scoring raised; the reward is then 0


def format_reward(text: str) -> float:
    """1.0 if the stripped text is exactly ``<think>...</think><answer>...</answer>`` with one of each
    opening tag, else 0.0."""
    return 1.0 if is_well_formed(text) else 0.0


def parse_answer(text: str) -> int | None:
    """The choice in the last ``<answer>...</answer>``: 1 or 2; None if absent or anything else."""
    found = answer_texts(text)
    if not found:
        return None
    content = found[-1].strip()
    return int(content) if content in ("1", "2") else None


def parse_choice_lenient(text: str) -> int | None:
    """The released evaluation rule: the first ``<answer>(.*?)</answer>`` (a number equal to 1 or 2),
    else the last character ``1`` or ``2`` anywhere in the text. None when nothing is found; the
    released scripts then count the pair as "2" (anything but 1 is 2), which is the caller's call."""
    content = first_answer_text(text)
    if content is not None:
        try:
            value = float(content.strip())
        except ValueError:
            return None
        return int(value) if value in (1.0, 2.0) else None
    digits = re.findall(r"[12]", text)
    return int(digits[-1]) if digits else None


def result_reward(text: str, label: int) -> float:
    """1.0 if the parsed answer equals the label; a parse failure is 0.0."""
    return 1.0 if parse_answer(text) == label else 0.0


def combine(result: float, format: float, consistency: int, w_consistency: float = 0.5, w_format: float = 0.5) -> float:
    """``result * (1 + w_consistency * consistency) + w_format * format``."""
    return result * (1.0 + w_consistency * consistency) + w_format * format


def _coerce_label(label: int | str) -> int:
    # Labels arrive as 1/2 or as released-data strings such as "2" or "<answer>2</answer>".
    if isinstance(label, str):
        stripped = label.strip()
        value = int(stripped) if stripped in ("1", "2") else parse_answer(stripped)
    elif isinstance(label, int) and not isinstance(label, bool):
        value = label
    else:
        value = None
    if value not in (1, 2):
        raise ValueError(f"label must be 1 or 2, got {label!r}")
    return value


def score_generation(
    text: str,
    label: int | str,
    consistency: int | None = None,
    *,
    w_consistency: float = 0.5,
    w_format: float = 0.5,
) -> RewardParts:
    """Score one generation. ``consistency`` is the judge's verdict (-1, 0, +1); None uses
    ``rule_consistency``. Never raises: an internal error gives reward 0 with ``error`` set."""
    try:
        gold = _coerce_label(label)
        fmt = format_reward(text)
        parsed = parse_answer(text)
        result = 1.0 if parsed == gold else 0.0
        cons = rule_consistency(text) if consistency is None else consistency
        if cons not in (-1, 0, 1):
            raise ValueError(f"consistency must be -1, 0 or 1, got {cons!r}")
        reward = combine(result, fmt, int(cons), w_consistency, w_format)
        return RewardParts(reward, fmt, result, int(cons), parse_failed=parsed is None)
    except Exception as exc:  # noqa: BLE001 - a reward must never be positive by accident
        return RewardParts(0.0, 0.0, 0.0, 0, parse_failed=True, error=f"{type(exc).__name__}: {exc}")


# --- rule_consistency: a judge without a model ------------------------------------------------
# Mentions of a response, normalised to the tokens "⟦1⟧" / "⟦2⟧":
#   "Response 1", "response #2", "Response2", "response one", "Answer 2", "the first/1st response",
#   "the second/2nd answer" (case-insensitive; markdown * _ ` are ignored).
_MENTIONS = (
    (re.compile(r"\b(?:response|answer)\s*#?\s*(?:1|one)\b"), "⟦1⟧"),
    (re.compile(r"\b(?:response|answer)\s*#?\s*(?:2|two)\b"), "⟦2⟧"),
    (re.compile(r"\b(?:the\s+)?(?:first|1st)\s+(?:response|answer)\b"), "⟦1⟧"),
    (re.compile(r"\b(?:the\s+)?(?:second|2nd)\s+(?:response|answer)\b"), "⟦2⟧"),
)


def _alt(*options: str) -> str:
    return "(?:" + "|".join(options) + ")"


_R = r"⟦(?P<r>[12])⟧(?:'s\s+\w+)?"  # "Response 1" or "Response 1's description"
_ADVERBS = _alt(
    "clearly",
    "much",
    "slightly",
    "significantly",
    "far",
    "overall",
    "definitely",
    "generally",
    "therefore",
    "thus",
    "also",
    "still",
    "indeed",
    "ultimately",
    "somewhat",
    "notably",
    "certainly",
)
_ADV = r"(?:\s+" + _ADVERBS + ")*"
_COP = r"(?:\s+(?:is|was|seems|appears|remains|proves)(?:\s+to\s+be)?)?"
_THE_GOOD = r"the\s+(?:better|best|stronger|superior|preferred|winner|clear\s+winner)"
_POS = _alt("better", "superior", "preferable", "preferred", "stronger", r"favou?red", _THE_GOOD)
_NEG = _alt("worse", "inferior", "weaker", r"the\s+(?:worse|weaker|inferior)")
_VERB = _alt("outperforms", "wins", "excels", "beats", "prevails", r"should\s+be\s+(?:chosen|preferred|selected)")
_GRADED = r"(?:the\s+)?(?:more|less)\s+\w+"  # polarity decided in _verdict
_CHOOSE = _alt("prefer", "choose", "select", "pick", r"favou?r", "recommend", r"go\s+with", r"in\s+favou?r\s+of")
_QUALITY = _alt(
    "better",
    "best",
    "preferred",
    "superior",
    "stronger",
    "winning",
    "winner",
    "worse",
    "weaker",
    "inferior",
    r"(?:more|less)\s+\w+",
)
# Verdict patterns; the group "pol" decides the polarity:
#   "Response 2 is (clearly) better / superior / the better one / more accurate / outperforms ..."
#   "Response 1 is worse / inferior / less accurate / weaker"
#   "I prefer / choose / select / pick / favor / recommend / go with Response 2", "in favor of Response 2"
#   "the better / best / preferred / more accurate response is Response 1", "winner: Response 1"
_VERDICTS = (
    re.compile(_R + _ADV + _COP + _ADV + r"\s+(?P<pol>" + _alt(_POS, _NEG, _VERB, _GRADED) + ")"),
    re.compile(r"(?<!not )(?<!n't )(?<!never )\b(?P<pol>" + _CHOOSE + r")\s+" + _R),
    re.compile(
        r"\b(?P<pol>" + _QUALITY + r")(?:\s+(?:response|answer|one|choice|option))?"
        r"\s*(?:is|would\s+be|:)\s+(?:clearly\s+|therefore\s+|thus\s+)?" + _R
    ),
)
# Words after "more"/"less" that are faults: "more errors" is bad, "less verbose" good.
_FAULTS = re.compile(
    _alt(
        "error",
        "mistake",
        "inaccura",
        "hallucinat",
        "issue",
        "flaw",
        "problem",
        "verbose",
        "irrelevant",
        "misleading",
        "confusing",
        "harmful",
        "vague",
        "incorrect",
        "redundant",
        "repetitive",
        "wrong",
    )
)
_CONCLUSION = re.compile(
    r"\b"
    + _alt(
        "overall",
        "in conclusion",
        "to conclude",
        "in summary",
        "to summarize",
        "therefore",
        "thus",
        "hence",
        "consequently",
        "ultimately",
        "finally",
        "in the end",
        "all things considered",
        "on balance",
    )
    + r"\b"
)


def _verdict(sentence: str) -> int | None:
    """The response a sentence prefers (1 or 2), or None if it names none or contradicts itself."""
    if sentence.rstrip().endswith("?"):
        return None  # "Which is better: Response 1 or Response 2?" asks, it does not conclude
    named: set[int] = set()
    for pattern in _VERDICTS:
        for m in pattern.finditer(sentence):
            response = int(m.group("r"))
            pol = m.group("pol")
            negative = re.match(_NEG, pol) is not None
            if re.match(r"(?:the\s+)?(?:more|less)\s", pol):
                negative = pol.split()[-2] == "less"  # "less accurate" is negative ...
                negative ^= _FAULTS.search(pol) is not None  # ... "less verbose"/"more errors" flip it
            named.add(3 - response if negative else response)
    return named.pop() if len(named) == 1 else None


def _conclusion_sentences(think: str, max_lines: int = 3, max_sentences: int = 5) -> list[str]:
    lines = [line for line in think.splitlines() if line.strip()][-max_lines:]
    sentences = [s for line in lines for s in re.split(r"(?<=[.!?])\s+", line) if s.strip()]
    return sentences[-max_sentences:]


def _normalise(sentence: str) -> str:
    sentence = re.sub(r"[*_`]", "", sentence.lower())
    for pattern, token in _MENTIONS:
        sentence = pattern.sub(token, sentence)
    return re.sub(r"\s+", " ", sentence)


def rule_consistency(text: str) -> int:
    """+1 if the reasoning's conclusion prefers the response the answer picks, -1 if it prefers the
    other, 0 if it names none, contradicts itself, or the answer does not parse.

    The conclusion is searched in the last 3 non-empty lines of ``<think>`` (at most 5 sentences, as
    the released judge saw the last 3 lines): first the last sentence with a conclusion marker
    ("overall", "in conclusion", "therefore", ...) that states a preference, else the last sentence
    that does. Negated preferences ("Response 1 is not better") state none.
    """
    answer = parse_answer(text)
    think = think_text(text)
    if answer is None or think is None:
        return 0
    sentences = [_normalise(s) for s in _conclusion_sentences(think)]
    marked = [s for s in sentences if _CONCLUSION.search(s)]
    for candidates in (marked, sentences):
        for sentence in reversed(candidates):
            named = _verdict(sentence)
            if named is not None:
                return 1 if named == answer else -1
    return 0
