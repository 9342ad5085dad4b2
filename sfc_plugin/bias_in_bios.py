"""The Bias in Bios dataset (``LabHC/bias_in_bios``) as SHIFT's splits, read offline.

Registered as ``bias_in_bios`` (professor vs nurse, the paper's pair) and ``bias_in_bios:A,B`` for two other
professions by name; ``dir=PATH`` among the options reads a local copy instead of the Hugging Face cache
(``bias_in_bios:dir=/data/bib``, ``bias_in_bios:surgeon,nurse,dir=/data/bib``).

Where the files come from, first found wins (no network; ``datasets`` cannot load a hub dataset offline from
the hub's snapshot cache alone, so the files are read directly):

1. ``dir=PATH``: a hub snapshot, a folder of the dataset's parquet/arrow files (split from the file or folder
   name: ``data/train-00000-of-00001-<hash>.parquet``, ``train/0000.parquet``, ``bias_in_bios-train.arrow``)
   or a ``save_to_disk`` directory;
2. the hub cache, as ``huggingface_hub`` lays it out: ``$HF_HUB_CACHE`` (default ``$HF_HOME/hub``)
   ``/datasets--LabHC--bias_in_bios/snapshots/<refs/main>/data/{train,dev,test}-00000-of-00001-<hash>.parquet``;
3. the ``datasets`` builder cache an online ``load_dataset`` wrote: ``$HF_DATASETS_CACHE`` (default
   ``$HF_HOME/datasets``) ``/LabHC___bias_in_bios/default/0.0.0/<hash>/bias_in_bios-{train,dev,test}.arrow``.

Schema (the dataset card): ``hard_text`` (string), ``profession`` (int64, 0–27, :data:`PROFESSIONS`),
``gender`` (int64, 0 male, 1 female); splits ``train`` (257,478), ``dev`` (39,642), ``test`` (99,069).

The splits, as the authors' ``experiments/bib_shift.ipynb`` builds them (:func:`build_splits`), profession A
paired with men and B with women in the ambiguous data:

- ``train`` (ambiguous; the probe and the attribution): A∧male and B∧female of the ``train`` split, each cut to
  the smaller count (in dataset order), concatenated, shuffled with ``random.Random(42)``;
- ``val`` (balanced; the oracle probe, the skylines and label-reading judges): the four (profession, gender)
  groups of the ``train`` split, each cut to the smallest count, shuffled with seed 42 — drawn from the same
  pool as ``train`` by design, as the authors' oracle is;
- ``test``: the same balanced cut of the ``test`` split first (``"balanced": true``: profession and gender
  accuracy), then the rest of every group (``"balanced": false``): worst-group accuracy over the four groups
  of ``test`` in full.

Records: ``{"text", "profession": <name>, "gender": "male" | "female"}`` (+ ``"balanced"`` in ``test``).
"""

from __future__ import annotations

import os
import random
import re
from functools import lru_cache
from pathlib import Path

from .errors import SFCError

NAME = "bias_in_bios"
REPO = "LabHC/bias_in_bios"
# The dataset card's label table (profession -> integer label)
PROFESSIONS = (
    "accountant",
    "architect",
    "attorney",
    "chiropractor",
    "comedian",
    "composer",
    "dentist",
    "dietitian",
    "dj",
    "filmmaker",
    "interior_designer",
    "journalist",
    "model",
    "nurse",
    "painter",
    "paralegal",
    "pastor",
    "personal_trainer",
    "photographer",
    "physician",
    "poet",
    "professor",
    "psychologist",
    "rapper",
    "software_engineer",
    "surgeon",
    "teacher",
    "yoga_teacher",
)
GENDERS = ("male", "female")  # the card's labels 0 and 1
DEFAULT_PAIR = ("professor", "nurse")  # the paper's: professor = 21, nurse = 13
SEED = 42
MIN_GROUP = 10  # fewer examples than this in a group of a split the run needs: refused
COLUMNS = ["hard_text", "profession", "gender"]
HUB_SPLITS = ("train", "dev", "test")
NEEDED = ("train", "test")  # dev is not used by the authors' recipe
SPLITS = ("train", "val", "test")


def _usage(arg: str) -> SFCError:
    return SFCError(
        f"{NAME}: expected {NAME}:PROFESSION_A,PROFESSION_B[,dir=PATH] (e.g. {NAME}:professor,nurse), got {arg!r}"
    )


def parse(arg: str | None) -> tuple[str, str, str | None]:
    """``(profession A, profession B, directory or None)`` from the text after ``bias_in_bios:``."""
    names, directory = [], None
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("dir="):
            directory = part[4:]
            if not directory:
                raise _usage(arg)
        elif "=" in part:
            raise SFCError(f"{NAME}: unknown option {part.split('=', 1)[0]!r} in {arg!r} (known: dir)")
        else:
            names.append(part.lower().replace(" ", "_").replace("-", "_"))
    if not names:
        names = list(DEFAULT_PAIR)
    if len(names) != 2:
        raise _usage(arg)
    for name in names:
        if name not in PROFESSIONS:
            raise SFCError(f"{NAME}: unknown profession {name!r} (known: {', '.join(PROFESSIONS)})")
    if names[0] == names[1]:
        raise SFCError(f"{NAME}: the two professions must differ, got {names[0]!r} twice")
    return names[0], names[1], directory


# ---------------------------------------------------------------------------------------------
# finding the files


def _hf_home() -> Path:
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "huggingface"


def hub_cache() -> Path:
    """Where ``huggingface_hub`` keeps downloads (read from the environment at each call)."""
    path = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(path).expanduser() if path else _hf_home() / "hub"


def datasets_cache() -> Path:
    path = os.environ.get("HF_DATASETS_CACHE")
    return Path(path).expanduser() if path else _hf_home() / "datasets"


_SPLIT_RE = re.compile(r"(?:^|[-_.])(train|test|dev|validation)(?:[-_.]|$)")


def split_of(rel: Path) -> str | None:
    """A data file's split by the hub's or ``datasets``' naming: a folder named for it (``train/0000.parquet``),
    else the name (``train-00000-of-00001-<hash>.parquet``, ``bias_in_bios-test.arrow``)."""
    for part in rel.parts[:-1]:
        if part in HUB_SPLITS or part == "validation":
            return part
    m = _SPLIT_RE.search(rel.name.rsplit(".", 1)[0].removeprefix(NAME))
    return m.group(1) if m else None


def split_files(root: Path) -> dict[str, list[Path]]:
    """``{split: [files]}`` of the parquet (else arrow) files under ``root``, in name order; ``datasets``'
    own scratch files (``cache-*.arrow``) are skipped."""
    out: dict[str, list[Path]] = {}
    for suffix in ("*.parquet", "*.arrow"):
        for f in sorted(root.rglob(suffix)):
            if f.name.startswith("cache-"):
                continue
            split = split_of(f.relative_to(root))
            if split is not None:
                out.setdefault(split, []).append(f)
        if out:
            break
    return out


def _complete(files: dict[str, list[Path]]) -> bool:
    return all(files.get(s) for s in NEEDED)


def _snapshot(repo: Path) -> Path | None:
    """The snapshot ``refs/main`` names, else the most recently written one."""
    snaps = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if (snaps / commit).is_dir():
            return snaps / commit
    found = (
        sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime) if snaps.is_dir() else []
    )
    return found[-1] if found else None


def locate(directory: str | None = None) -> tuple[str, Path, dict[str, list[Path]] | None]:
    """``(description, root, {split: files})`` of the dataset's files; ``files`` is None for a ``save_to_disk``
    directory (read through ``datasets``). One-line SFCError when there is none."""
    if directory is not None:
        root = Path(directory).expanduser()
        if not root.is_dir():
            raise SFCError(f"{NAME}: dir {directory!r} is not a directory")
        if (root / "dataset_dict.json").is_file():
            return f"{root} (save_to_disk)", root, None
        files = split_files(root)
        if not _complete(files):
            missing = [s for s in NEEDED if not files.get(s)]
            raise SFCError(
                f"{NAME}: dir {directory!r} has no {missing[0]} split (parquet/arrow files named for their split "
                f"were found for: {', '.join(sorted(files)) or 'none'})"
            )
        return str(root), root, files
    hub_repo = hub_cache() / ("datasets--" + REPO.replace("/", "--"))
    snapshot = _snapshot(hub_repo) if hub_repo.is_dir() else None
    if snapshot is not None:
        files = split_files(snapshot)
        if _complete(files):
            return f"{REPO} (hub cache, snapshot {snapshot.name[:12]})", snapshot, files
    built = datasets_cache() / REPO.replace("/", "___")
    if built.is_dir():
        candidates = sorted(
            (p for p in built.rglob("dataset_info.json")), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for info in candidates:
            files = split_files(info.parent)
            if _complete(files):
                return f"{REPO} (datasets cache, {info.parent.name[:12]})", info.parent, files
    looked = f"{hub_repo}" + ("" if snapshot is None else " (its snapshot lacks the train or test files)")
    raise SFCError(
        f"{NAME}: {REPO} is not in the Hugging Face cache (looked in {looked} and {built}); load it once online "
        f"(datasets.load_dataset({REPO!r}) or huggingface-cli download {REPO} --repo-type dataset) or give a "
        f"directory of its files: {NAME}:dir=PATH"
    )


# ---------------------------------------------------------------------------------------------
# reading and building


def _rows(root: Path, files: dict[str, list[Path]] | None, split: str, pair: tuple[int, int]) -> list[tuple]:
    """``(text, profession, gender)`` of the ``split`` rows whose profession is one of ``pair``, in order."""
    from .corpus import dataset_rows

    sources = (
        [dataset_rows(root, COLUMNS, split, what=NAME)]
        if files is None
        else [dataset_rows(f, COLUMNS, what=NAME) for f in files[split]]
    )
    out = []
    for rows in sources:
        for i, r in enumerate(rows):
            p, g = r["profession"], r["gender"]
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < len(PROFESSIONS):
                raise SFCError(f"{NAME} {split} row {i}: profession {p!r} is not a label 0-{len(PROFESSIONS) - 1}")
            if p not in pair:
                continue
            if g not in (0, 1) or isinstance(g, bool):
                raise SFCError(f"{NAME} {split} row {i}: gender {g!r} is not 0 (male) or 1 (female)")
            if not isinstance(r["hard_text"], str):
                raise SFCError(f"{NAME} {split} row {i}: hard_text is {type(r['hard_text']).__name__}, not text")
            out.append((r["hard_text"], p, g))
    return out


def _groups(rows: list[tuple], keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[str]]:
    out: dict[tuple[int, int], list[str]] = {k: [] for k in keys}
    for text, p, g in rows:
        if (p, g) in out:
            out[(p, g)].append(text)
    return out


def _cut_and_shuffle(groups: dict, seed: int) -> tuple[list[tuple[str, tuple[int, int]]], int]:
    """Every group cut to the smallest one's count (dataset order), concatenated in group order and permuted
    as the notebook does (``random.Random(seed).shuffle`` of the indices); and that count."""
    n = min(len(g) for g in groups.values())
    data = [(text, key) for key, texts in groups.items() for text in texts[:n]]
    idxs = list(range(len(data)))
    random.Random(seed).shuffle(idxs)
    return [data[i] for i in idxs], n


def build_splits(rows: dict[str, list[tuple]], a: int, b: int, names: tuple[str, str] | None = None) -> dict:
    """SHIFT's ``train``/``val``/``test`` records and their counts from ``rows[split] = [(text, profession,
    gender)]`` (the hub's ``train`` and ``test`` splits; profession and gender as integer labels); ``a`` is
    paired with men, ``b`` with women in the ambiguous split. See the module docstring."""
    names = names or (PROFESSIONS[a], PROFESSIONS[b])
    prof = {a: names[0], b: names[1]}
    label = lambda key: f"{prof[key[0]]}/{GENDERS[key[1]]}"  # noqa: E731
    four = [(a, 0), (a, 1), (b, 0), (b, 1)]
    spec = f"{NAME}:{names[0]},{names[1]}"
    for split in NEEDED:
        groups = _groups(rows[split], four)
        for key in four:
            if len(groups[key]) < MIN_GROUP:
                raise SFCError(
                    f"{spec}: too few examples: the {split} split has {len(groups[key])} {GENDERS[key[1]]} "
                    f"{prof[key[0]]} biographies (need at least {MIN_GROUP} in each profession-gender group)"
                )

    def record(text, key, **extra):
        return {"text": text, "profession": prof[key[0]], "gender": GENDERS[key[1]], **extra}

    train_groups = _groups(rows["train"], four)
    ambiguous, n_amb = _cut_and_shuffle({k: train_groups[k] for k in ((a, 0), (b, 1))}, SEED)
    balanced, n_val = _cut_and_shuffle(train_groups, SEED)
    test_groups = _groups(rows["test"], four)
    test_bal, n_test = _cut_and_shuffle(test_groups, SEED)
    rest = [(t, k) for k in four for t in test_groups[k][n_test:]]
    return {
        "train": [record(t, k) for t, k in ambiguous],
        "val": [record(t, k) for t, k in balanced],
        "test": [record(t, k, balanced=True) for t, k in test_bal] + [record(t, k, balanced=False) for t, k in rest],
        "counts": {
            "professions": {names[0]: a, names[1]: b},
            "seed": SEED,
            "train": {
                "from": "train",
                "kind": f"ambiguous ({names[0]}/male and {names[1]}/female, each cut to the smaller count)",
                "groups": {label(k): len(train_groups[k]) for k in ((a, 0), (b, 1))},
                "per_group": n_amb,
                "n": 2 * n_amb,
            },
            "val": {
                "from": "train",
                "kind": "balanced (the four groups, each cut to the smallest count)",
                "groups": {label(k): len(train_groups[k]) for k in four},
                "per_group": n_val,
                "n": 4 * n_val,
            },
            "test": {
                "from": "test",
                "kind": "balanced cut first (profession and gender accuracy), then every group in full (worst group)",
                "groups": {label(k): len(test_groups[k]) for k in four},
                "per_group": n_test,
                "balanced": 4 * n_test,
                "n": sum(len(g) for g in test_groups.values()),
            },
        },
    }


def _signature(root: Path, files: dict[str, list[Path]] | None) -> tuple:
    paths = [root] if files is None else [f for s in NEEDED for f in files[s]]
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


@lru_cache(maxsize=4)
def _built(spec: tuple[str, str, str | None], signature: tuple) -> dict:
    a, b, directory = spec
    where, root, files = locate(directory)
    pair = (PROFESSIONS.index(a), PROFESSIONS.index(b))
    rows = {split: _rows(root, files, split, pair) for split in NEEDED}
    out = build_splits(rows, *pair, names=(a, b))
    out["counts"] = {"dataset": REPO, "source": where, **out["counts"]}
    return out


def splits(arg: str | None = None) -> dict:
    """``{"train", "val", "test", "counts"}`` for ``bias_in_bios[:arg]`` (read once per file state)."""
    a, b, directory = parse(arg)
    _, root, files = locate(directory)
    return _built((a, b, directory), _signature(root, files))


def load(split: str | None = None, arg: str | None = None):
    """Records of one split (``train``, ``val``, ``test``; None means ``test``) of ``bias_in_bios[:arg]``, as a
    :class:`~sfc_plugin.data.Records` whose ``info`` holds the counts of every split."""
    from .data import Records

    split = "test" if split is None else split
    if split not in SPLITS:
        raise SFCError(f"unknown split {split!r} for dataset {NAME!r} (known: {', '.join(SPLITS)})")
    built = splits(arg)
    name = NAME if not arg else f"{NAME}:{arg}"
    info = {"counts": built["counts"], "split": split}
    if split == "val":
        info["drawn_from"] = "train"  # the authors' oracle data: the same pool as the ambiguous split
    return Records(built[split], None, name, info=info)


def describe(counts: dict) -> str:
    """One paragraph of what was built, for the command's output."""
    p = list(counts["professions"])
    tr, va, te = counts["train"], counts["val"], counts["test"]
    groups = lambda g: ", ".join(f"{k} {v:,}" for k, v in g.items())  # noqa: E731
    return (
        f"{NAME} ({p[0]} vs {p[1]}) from {counts['source']}, seed {counts['seed']}: "
        f"train {tr['n']:,} ambiguous = 2 x {tr['per_group']:,} (of {groups(tr['groups'])}); "
        f"val {va['n']:,} balanced from the train split = 4 x {va['per_group']:,}; "
        f"test {te['n']:,} ({te['balanced']:,} balanced = 4 x {te['per_group']:,}; in full: {groups(te['groups'])})"
    )
