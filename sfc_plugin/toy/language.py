"""The toy world's synthetic English-like language (pure Python, seeded ``random.Random``).

Three kinds of sentences make up the language-model corpus:

* subject–verb agreement (SVA) sentences: a subject noun phrase, optionally followed by a
  prepositional phrase (``The author near the guards``) or an object relative clause
  (``The author that the guards like``), then a main verb that agrees in number with the head noun
  (``is/are``, ``was/were`` or a transitive verb such as ``likes/like``), then a predicate;
* filler sentences with no agreement signal, so the model must learn agreement among other text;
* biography-like sentences with a profession (``nurse``/``professor``, signalled by workplace and
  tasks, never by the profession word) and a gender (signalled by first names and pronouns).

Every word is one token of the toy tokenizer, so clean and patch prompts of a pair always have the
same token length and every answer (``" is"``, ``" are"``, ``" likes"``, ...) is one token.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

# ---------------------------------------------------------------------------------------------
# vocabulary

NOUNS: tuple[tuple[str, str], ...] = (
    ("author", "authors"),
    ("pilot", "pilots"),
    ("farmer", "farmers"),
    ("senator", "senators"),
    ("guard", "guards"),
    ("banker", "bankers"),
    ("dancer", "dancers"),
    ("singer", "singers"),
    ("officer", "officers"),
    ("skater", "skaters"),
    ("minister", "ministers"),
    ("architect", "architects"),
    ("baker", "bakers"),
    ("driver", "drivers"),
    ("manager", "managers"),
    ("customer", "customers"),
    ("painter", "painters"),
    ("soldier", "soldiers"),
    ("lawyer", "lawyers"),
    ("student", "students"),
)
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "with")
# transitive verbs: (3rd person singular, plural)
VERBS: tuple[tuple[str, str], ...] = (
    ("likes", "like"),
    ("hates", "hate"),
    ("sees", "see"),
    ("knows", "know"),
    ("admires", "admire"),
    ("helps", "help"),
    ("meets", "meet"),
    ("loves", "love"),
)
COPULAS: tuple[tuple[str, str], ...] = (("is", "are"), ("was", "were"))
ADJECTIVES: tuple[str, ...] = (
    "tall",
    "happy",
    "old",
    "young",
    "tired",
    "ready",
    "kind",
    "quiet",
    "brave",
    "busy",
    "late",
    "rich",
)

# filler text
WEATHER = ("cold", "warm", "dark", "windy", "sunny", "wet")
TIMES = ("Yesterday", "Today", "Later", "Then", "Often")
PLACES = ("market", "river", "station", "park", "library", "harbor")
THINGS = ("box", "lamp", "book", "cup", "coat", "key")
FURNITURE = ("table", "shelf", "chair", "desk")
COLORS = ("red", "blue", "green", "white")
PAST_VERBS = ("carried", "found", "painted", "sold", "opened")

# biographies
PROFESSIONS = ("nurse", "professor")
GENDERS = ("female", "male")
FIRST_NAMES = {
    "female": ("Maria", "Anna", "Sarah", "Emma", "Julia", "Laura", "Sofia", "Clara"),
    "male": ("John", "David", "Peter", "James", "Paul", "Mark", "Thomas", "Daniel"),
}
PRONOUNS = {"female": ("She", "she", "her"), "male": ("He", "he", "his")}  # subject (cap), subject, possessive
WORKPLACES = {
    "nurse": ("hospital", "clinic", "ward"),
    "professor": ("university", "college", "campus"),
}
TASKS = {  # one profession-specific activity each; most activities are shared (SHARED_TASKS)
    "nurse": ("cares for patients",),
    "professor": ("grades exams",),
}
SHARED_TASKS = ("reads books", "meets friends", "writes letters", "drinks coffee", "walks home", "cooks dinner")
FAMILY = ("sister", "brother", "parents", "dog", "cat")
YEARS = ("two", "three", "five", "ten")

CONDITIONS: tuple[str, ...] = ("simple", "nounpp", "rc", "within_rc")
NUMBERS = ("singular", "plural")


def _num(pair: tuple[str, str], number: str) -> str:
    return pair[0] if number == "singular" else pair[1]


# ---------------------------------------------------------------------------------------------
# SVA sentences and pairs


def _other(rng: random.Random, exclude: tuple[str, str]) -> tuple[str, str]:
    while True:
        n = rng.choice(NOUNS)
        if n != exclude:
            return n


def sva_prefix(
    condition: str,
    noun,
    number: str,
    attractor=None,
    attr_number: str = "singular",
    prep: str = "near",
    verb=("likes", "like"),
) -> list[str]:
    """The words of an SVA prompt (no answer) for one condition."""
    head = ["The", _num(noun, number)]
    if condition == "simple":
        return head
    if condition == "nounpp":
        return head + [prep, "the", _num(attractor, attr_number)]
    if condition == "rc":
        return head + ["that", "the", _num(attractor, attr_number), _num(verb, attr_number)]
    if condition == "within_rc":
        return head + ["that", "the", _num(attractor, attr_number)]
    raise ValueError(f"unknown condition {condition!r}")


def _sample_slots(rng: random.Random, condition: str) -> dict:
    noun = rng.choice(NOUNS)
    return {
        "noun": noun,
        "number": rng.choice(NUMBERS),
        "attractor": _other(rng, noun),
        "attr_number": rng.choice(NUMBERS),
        "prep": rng.choice(PREPOSITIONS),
        "verb": rng.choice(VERBS),
    }


def sva_sentence(rng: random.Random, condition: str) -> tuple[list[str], list[str]]:
    """One full SVA sentence and the prompt prefixes it contains (for held-out filtering)."""
    s = _sample_slots(rng, condition)
    if condition == "within_rc":
        condition = "rc"
    words = sva_prefix(condition, **s)
    prefixes = [" ".join(words)]
    if condition == "rc":
        prefixes.append(" ".join(words[:-1]))  # the within_rc prompt inside it
    kind = rng.random()
    if kind < 0.45:
        words += [_num(rng.choice(COPULAS), s["number"]), rng.choice(ADJECTIVES)]
    else:
        words += [_num(rng.choice(VERBS), s["number"]), "the", _num(rng.choice(NOUNS), rng.choice(NUMBERS))]
    return words + ["."], prefixes


def sva_pair(rng: random.Random, condition: str, case: str, slots: dict | None = None) -> dict:
    """One pair record; ``case`` is ``"<clean number>_<patch number>"``."""
    s = dict(slots or _sample_slots(rng, condition))
    clean_n, patch_n = case.split("_")
    if condition == "within_rc":
        # the embedded subject's number varies; the answer is the embedded verb
        clean = sva_prefix(condition, **{**s, "attr_number": clean_n})
        patch = sva_prefix(condition, **{**s, "attr_number": patch_n})
        answers = (_num(s["verb"], clean_n), _num(s["verb"], patch_n))
    else:
        clean = sva_prefix(condition, **{**s, "number": clean_n})
        patch = sva_prefix(condition, **{**s, "number": patch_n})
        answers = (_num(COPULAS[0], clean_n), _num(COPULAS[0], patch_n))
    return {
        "clean_prefix": " ".join(clean),
        "patch_prefix": " ".join(patch),
        "clean_answer": " " + answers[0],
        "patch_answer": " " + answers[1],
        "case": case,
    }


CASES = ("singular_plural", "plural_singular")


def sva_split(
    rng: random.Random,
    condition: str,
    n: int,
    exclude: set[str] | None = None,
    unique: bool = True,
    max_tries: int = 200_000,
) -> list[dict]:
    """``n`` pair records of one condition (cases alternate), none of whose prompts is in ``exclude``."""
    exclude = exclude or set()
    out: list[dict] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < max_tries:
        tries += 1
        rec = sva_pair(rng, condition, CASES[len(out) % 2])
        if rec["clean_prefix"] in exclude or rec["patch_prefix"] in exclude:
            continue
        if unique and rec["clean_prefix"] in seen:
            continue
        seen.add(rec["clean_prefix"])
        out.append(rec)
    return out


def simple_pairs() -> list[dict]:
    """Every simple-condition pair (one per noun and case): too few prompts to hold any out."""
    out = []
    for noun in NOUNS:
        for case in CASES:
            out.append(
                sva_pair(
                    random.Random(0),
                    "simple",
                    case,
                    slots={
                        "noun": noun,
                        "number": "singular",
                        "attractor": None,
                        "attr_number": "singular",
                        "prep": "near",
                        "verb": VERBS[0],
                    },
                )
            )
    return out


# ---------------------------------------------------------------------------------------------
# filler and biographies


def filler_sentence(rng: random.Random) -> list[str]:
    k = rng.randrange(5)
    if k == 0:
        return ["It", "was", rng.choice(WEATHER), "and", rng.choice(WEATHER), "."]
    if k == 1:
        return [rng.choice(TIMES), ",", "we", "walked", "to", "the", rng.choice(PLACES), "."]
    if k == 2:
        return ["A", rng.choice(COLORS), rng.choice(THINGS), "fell", "from", "the", rng.choice(FURNITURE), "."]
    if k == 3:
        return ["They", rng.choice(PAST_VERBS), "a", rng.choice(THINGS), "and", "a", rng.choice(THINGS), "."]
    return [
        "We",
        "left",
        "the",
        rng.choice(THINGS),
        "on",
        "the",
        rng.choice(FURNITURE),
        "near",
        "the",
        rng.choice(PLACES),
        ".",
    ]


def bio_words(rng: random.Random, profession: str, gender: str) -> list[str]:
    """A short biography. As in the paper's setting, the spurious cue is the salient one: gender is
    signalled by a first name and several pronouns, profession by a single workplace word, and the
    activities are shared by both professions."""
    name = rng.choice(FIRST_NAMES[gender])
    cap, low, poss = PRONOUNS[gender]
    place = rng.choice(WORKPLACES[profession])
    t1, t2 = rng.sample(TASKS[profession] + SHARED_TASKS, 2)
    k = rng.randrange(3)
    if k == 0:
        words = [name, "works", "at", "the", place, ".", cap] + t1.split() + ["and"] + t2.split() + ["."]
    elif k == 1:
        words = (
            [name, "has", "worked", "at", "the", place, "for", rng.choice(YEARS), "years", ".", cap]
            + t1.split()
            + ["."]
        )
    else:
        words = ["At", "the", place, ",", name] + t1.split() + [".", cap, "also"] + t2.split() + ["."]
    words += [cap, "lives", "with", poss, rng.choice(FAMILY), "."]
    if rng.random() < 0.5:
        words += [name, "says", low, "is", "happy", "."]
    return words


def detok(words: Iterable[str]) -> str:
    """Words joined as text (no space before punctuation); the tokenizer splits it back identically."""
    text = " ".join(words)
    for p in (".", ","):
        text = text.replace(" " + p, p)
    return text


def bios_split(
    rng: random.Random, n: int, groups: list[tuple[str, str]], exclude: set[str] | None = None
) -> list[dict]:
    """``n`` biographies cycling through ``groups`` of (profession, gender); texts unique, not in ``exclude``."""
    exclude = set(exclude or ())
    out: list[dict] = []
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        prof, gender = groups[len(out) % len(groups)]
        text = detok(bio_words(rng, prof, gender))
        if text in exclude:
            continue
        exclude.add(text)
        out.append({"text": text, "profession": prof, "gender": gender})
    return out


AMBIGUOUS_GROUPS = [("nurse", "female"), ("professor", "male")]
BALANCED_GROUPS = [(p, g) for p in PROFESSIONS for g in GENDERS]


# ---------------------------------------------------------------------------------------------
# datasets and corpus

SIZES_FULL = {
    "sva_test": 300,
    "within_rc_test": 200,
    "sva_train": 600,
    "bios_train": 800,
    "bios_test": 400,
    "bios_val": 400,
}
SIZES_REDUCED = {
    "sva_test": 40,
    "within_rc_test": 40,
    "sva_train": 60,
    "bios_train": 80,
    "bios_test": 40,
    "bios_val": 40,
}


def make_datasets(seed: int = 0, reduced: bool = False) -> dict[str, list[dict]]:
    """All shipped datasets: ``{"sva-<condition>.<split>": pairs, "bios.<split>": bios}``, deterministic in ``seed``."""
    sizes = SIZES_REDUCED if reduced else SIZES_FULL
    rng = random.Random(f"sfc-toy-data-{seed}")
    out: dict[str, list[dict]] = {}
    simple = simple_pairs()
    out["sva-simple.test"] = simple
    out["sva-simple.train"] = list(simple)
    test_prompts: set[str] = set()
    for cond in ("nounpp", "rc", "within_rc"):
        n_test = sizes["within_rc_test" if cond == "within_rc" else "sva_test"]
        test = sva_split(rng, cond, n_test, exclude=test_prompts)
        out[f"sva-{cond}.test"] = test
        for r in test:
            test_prompts.update((r["clean_prefix"], r["patch_prefix"]))
    for cond in ("nounpp", "rc", "within_rc"):
        out[f"sva-{cond}.train"] = sva_split(rng, cond, sizes["sva_train"], exclude=test_prompts)
    bios_test = bios_split(rng, sizes["bios_test"], BALANCED_GROUPS)
    out["bios.test"] = bios_test
    out["bios.train"] = bios_split(rng, sizes["bios_train"], AMBIGUOUS_GROUPS, exclude={b["text"] for b in bios_test})
    seen = {b["text"] for b in bios_test + out["bios.train"]}
    out["bios.val"] = bios_split(rng, sizes["bios_val"], BALANCED_GROUPS, exclude=seen)
    return out


def held_out_prompts(datasets: dict[str, list[dict]]) -> set[str]:
    """Prompts of the test splits (but simple ones, which cannot be held out) kept out of the LM corpus."""
    out: set[str] = set()
    for name, recs in datasets.items():
        if name.endswith(".test") and name.startswith("sva-") and name != "sva-simple.test":
            for r in recs:
                out.update((r["clean_prefix"], r["patch_prefix"]))
    return out


def sentences(
    rng: random.Random, exclude: set[str] | None = None, bios_texts: set[str] | None = None
) -> Iterator[list[str]]:
    """An endless stream of corpus sentences (word lists): 65% SVA, 15% filler, 20% biography."""
    exclude = exclude or set()
    bios_texts = bios_texts or set()
    sva_conditions = ("simple", "nounpp", "nounpp", "rc", "rc", "rc")
    while True:
        u = rng.random()
        if u < 0.65:
            words, prefixes = sva_sentence(rng, rng.choice(sva_conditions))
            if any(p in exclude for p in prefixes):
                continue
            yield words
        elif u < 0.80:
            yield filler_sentence(rng)
        else:
            words = bio_words(rng, rng.choice(PROFESSIONS), rng.choice(GENDERS))
            if detok(words) in bios_texts:
                continue
            yield words


def corpus(
    seed: int,
    n_sequences: int,
    length: int,
    exclude: set[str] | None = None,
    bios_texts: set[str] | None = None,
    stream: str = "train",
) -> list[list[str]]:
    """``n_sequences`` word sequences of exactly ``length`` words: packed sentences, each sequence
    starting at a sentence boundary (the BOS token is added by the caller)."""
    rng = random.Random(f"sfc-toy-corpus-{stream}-{seed}")
    gen = sentences(rng, exclude, bios_texts)
    out = []
    for _ in range(n_sequences):
        seq: list[str] = []
        while len(seq) < length:
            seq.extend(next(gen))
        out.append(seq[:length])
    return out


def vocabulary() -> list[str]:
    """Every word of the language, sorted (deterministic token ids)."""
    words: set[str] = {
        "The",
        "the",
        "that",
        ".",
        ",",
        "It",
        "was",
        "and",
        "we",
        "walked",
        "to",
        "A",
        "fell",
        "from",
        "They",
        "a",
        "We",
        "left",
        "on",
        "near",
        "works",
        "at",
        "has",
        "worked",
        "for",
        "years",
        "At",
        "also",
        "lives",
        "with",
    }
    for pair in NOUNS + VERBS + COPULAS:
        words.update(pair)
    for group in (
        PREPOSITIONS,
        ADJECTIVES,
        WEATHER,
        TIMES,
        PLACES,
        THINGS,
        FURNITURE,
        COLORS,
        PAST_VERBS,
        FAMILY,
        YEARS,
    ):
        words.update(group)
    for g in GENDERS:
        words.update(FIRST_NAMES[g])
        words.update(PRONOUNS[g])
    for p in PROFESSIONS:
        words.update(WORKPLACES[p])
        for t in TASKS[p]:
            words.update(t.split())
        words.add(p)  # not used in the bios texts, but lets users probe the word
    for t in SHARED_TASKS:
        words.update(t.split())
    words.update(("says", "is", "happy"))
    return sorted(words)
