"""A spurious concept described in words, and how much of a feature's evidence is about it.

A description is a list of words or short phrases separated by commas or new lines (``#`` starts a
comment): ``"he, she, his, her, him, Mr, Mrs"``. It can be given as that text, as a file, or as the
name of a description shipped in ``concepts/`` (``gender``). Matching ignores case and the
tokenizer's word-boundary marks (``Ġ``, ``▁``, spaces); a phrase of several words matches where its
words are the last tokens of a context.

Scores (fractions in [0, 1]) of a feature's :class:`~sfc_plugin.shifting.evidence.Evidence`:

- ``reads``: the share of its top-activating contexts whose activating token is a concept word;
- ``writes``: the share of the tokens it promotes most that are concept words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SFCError

CONCEPTS = Path(__file__).resolve().parent / "concepts"


@dataclass(frozen=True)
class Concept:
    """A described concept: ``terms`` are lower-cased word tuples; ``source`` says where they came from."""

    terms: tuple[tuple[str, ...], ...]
    source: str

    @property
    def words(self) -> frozenset[str]:
        return frozenset(t[0] for t in self.terms if len(t) == 1)

    def matches(self, tokens: list[str]) -> bool:
        """Whether a term ends at the last of ``tokens``."""
        norm = [normalize(t) for t in tokens]
        return any(len(t) <= len(norm) and tuple(norm[len(norm) - len(t) :]) == t for t in self.terms)


def normalize(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().lower()


def parse(text: str, source: str) -> Concept:
    """Terms from a description: separated by commas or new lines, ``#`` comments ignored."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    terms = []
    for item in re.split(r"[,\n]", "\n".join(lines)):
        words = tuple(normalize(w) for w in item.split())
        if words and words not in terms:
            terms.append(words)
    if not terms:
        raise SFCError(f"spurious-concept description {source!r} has no words")
    return Concept(tuple(terms), source)


def shipped() -> list[str]:
    """Names of the descriptions shipped with the package."""
    return sorted(p.stem for p in CONCEPTS.glob("*.txt"))


def load_concept(spec) -> Concept:
    """A :class:`Concept` from a ``Concept``, a list of words, a file path, a shipped name, or words as text."""
    if isinstance(spec, Concept):
        return spec
    if isinstance(spec, (list, tuple)):
        return parse("\n".join(map(str, spec)), "(list)")
    if spec is None or not str(spec).strip():
        raise SFCError(
            "the concept judge needs a description of the spurious concept "
            "(--spurious-concept WORDS|FILE, or judge_options={'concept': ...})"
        )
    text = str(spec)
    path = Path(text)
    if "\n" not in text and "," not in text and path.suffix and path.is_file():
        try:
            return parse(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise SFCError(f"spurious-concept file {text!r} cannot be read ({exc})".splitlines()[0]) from None
    if (
        "\n" not in text
        and "," not in text
        and path.suffix.lower() in (".txt", ".text", ".list")
        and not path.is_file()
    ):
        raise SFCError(f"spurious-concept file {text!r} does not exist")
    if text.strip() in shipped():
        return parse((CONCEPTS / f"{text.strip()}.txt").read_text(encoding="utf-8"), f"shipped:{text.strip()}")
    return parse(text, "(words)")


def reads_score(concept: Concept, evidence) -> float:
    """Share of the top contexts whose activating token (with the tokens before it, for phrases) is a concept term."""
    if not evidence.top:
        return 0.0
    return sum(concept.matches(c.tokens) for c in evidence.top) / len(evidence.top)


def writes_score(concept: Concept, evidence) -> float:
    """Share of the promoted tokens that are concept words."""
    if not evidence.promoted:
        return 0.0
    return sum(normalize(t) in concept.words for t in evidence.promoted) / len(evidence.promoted)
