"""The canonical preference record every reader produces and every consumer reads.

One record is one comparison: a question about some image(s), two responses, and which one is better
(``label`` 1 or 2, the answer the reward model should give for this order of responses).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from r1reward.errors import UserError

# A filesystem path (relative ones are resolved against an image root) or the encoded file's bytes.
ImageSource = str | Path | bytes

LABELS = (1, 2)


class DataError(UserError, ValueError):
    """Bad input data. ``reason`` is a short machine-readable tag (e.g. "image-missing") when one applies."""

    def __init__(self, message: str, reason: str = "") -> None:
        # One line, so that it reads well in logs and in the bad-row report.
        super().__init__(" ".join(str(message).split()))
        self.reason = reason


@dataclass(frozen=True)
class PreferenceRecord:
    id: str
    question: str
    images: list[ImageSource]
    response_1: str
    response_2: str
    # 1 if response_1 is better, 2 if response_2 is. Not checked here: readers pass bad values through
    # (as 0 when unparseable) so that load_preferences can count them as "bad-label" rows.
    label: int
    source: str = ""
    category: str = ""
    # The original image/video path string from the file; benchmarks derive categories from it.
    media: str = ""
    # A video row: its video (a file or a folder of frames) is at ``media`` and images stays empty.
    # Training loaders skip such rows unless allowed; evaluation reads them (r1reward.data.video).
    is_video: bool = False
    # Free-form extras from the file that are not part of the comparison (e.g. an SFT "target").
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def swapped(self) -> PreferenceRecord:
        """The same comparison with the responses in the other order (and the label flipped)."""
        label = 3 - self.label if self.label in LABELS else self.label
        return dataclasses.replace(self, response_1=self.response_2, response_2=self.response_1, label=label)
