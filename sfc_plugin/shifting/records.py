"""The plain records SHIFT's stages pass along: candidate features, judges' decisions, what a judge may see.

Nothing heavy is imported here, so judges (loaded during plugin discovery) can use these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FeatureInfo:
    """One candidate feature: ``id`` is ``<submodule>/<feature>``, ``effect`` its effect on the probe."""

    id: str
    submodule: str
    feature: int
    effect: float
    contexts: list[str] = field(default_factory=list)
    label: str | None = None


@dataclass
class Decision:
    """A judge's verdict on one feature; ``judge`` names who or what decided, ``note`` says why."""

    id: str
    decision: str  # "ablate" | "keep"
    judge: str
    note: str | None = None


@dataclass
class Labelled:
    """Tokenised texts with binary intended (``y``) and spurious (``z``) labels; ``balanced`` (bool ``[n]``, or
    None for all) marks the rows that intended and spurious accuracy count (worst group counts every row)."""

    batch: Any  # sfc_plugin.data.Batch
    y: Any  # torch.Tensor [n]
    z: Any  # torch.Tensor [n]
    balanced: Any = None  # torch.Tensor [n] (bool) or None

    def head(self, n: int | None) -> Labelled:
        """The first ``n`` texts (all when ``n`` is None)."""
        if n is None or n >= len(self.batch):
            return self
        part = next(self.batch.split(n))  # padding trimmed to the longest of the n
        return Labelled(part, self.y[:n], self.z[:n], None if self.balanced is None else self.balanced[:n])

    def split(self, size: int):
        for lo, part in zip(range(0, len(self.batch), size), self.batch.split(size)):
            yield part, self.y[lo : lo + size], self.z[lo : lo + size]


@dataclass
class JudgeContext:
    """What a judge may consult.

    ``texts``: unlabelled texts to read features' evidence from (a ``Batch``); ``val``: the balanced,
    labelled validation data — given only to judges that declare ``"balanced_labels"`` in their
    ``uses`` (see :func:`judge_uses`), ``None`` otherwise; ``options``: user options.
    """

    model: Any
    submodules: dict[str, Any]
    val: Labelled | None
    options: dict[str, Any]
    texts: Any = None
    budget: Any = None  # a MemoryBudget that sizes the judge's passes over text (None: its own defaults)


# What a row of the SHIFT table may have used, from least to most (``uses`` in shift.json).
USES = {
    "ambiguous_train": "training data where intended and spurious attributes agree, with its intended labels",
    "concept_description": "a user's description of the spurious concept (words or short phrases)",
    "unlabelled_text": "generic unlabelled text that features' evidence is read from (e.g. the toy corpus)",
    "human_review": "a person's decisions (interactive review or a decisions file)",
    "balanced_labels": "balanced validation data labelled with both attributes",
    "test_labels": "the test labels the table is measured on",
    "undeclared": "a user's judge function that does not say what it used",
}


def judge_uses(judge) -> tuple[str, ...]:
    """What a judge declares it uses (its ``uses`` attribute). A judge that declares nothing is given
    the labelled validation data and counted as using it."""
    uses = getattr(judge, "uses", None)
    return ("balanced_labels",) if uses is None else tuple(uses)
