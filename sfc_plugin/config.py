"""Settings as dataclasses: one default per setting, TOML files and validation in one place.

``DiscoverConfig``, ``EvaluateConfig`` and ``ShiftConfig`` hold the settings of ``sfc discover``, ``evaluate``
and ``shift`` (the world, the data, the pipeline's options, the output directory); ``ClusterConfig`` those of
:func:`~sfc_plugin.clusters.find_clusters`; ``WorldConfig`` the world options every model-loading command shares.
Each field's metadata holds its command-line help (``{default}`` is filled in) and argparse extras: the
commands' options are generated from these classes, and a test checks that the pipelines' keyword defaults
equal the fields' (all but the data selection: ``data``, ``split``, ``n_examples``, ``n_train``, ``n_eval``
say which records a command reads; a function uses the records it is given).

A TOML file (``--config FILE.toml``; keys as the long option names, with ``-`` or ``_``) gives a command's
settings in its ``[command]`` table; without one, its top-level keys are a discover config, of which other
commands take the keys they share with it (:attr:`WorldConfig.SHARED`). Command line over file over defaults.

Imports nothing heavy (the commands' ``--help`` reads it).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar

from .corpus import TEXT_HELP
from .errors import SFCError
from .models import DTYPES
from .presets import PRESETS

CHECKS = ("threshold", "thresholds", "positive", "non-negative", "string", "bool", "device")


def setting(default: Any = None, help: str = "", *, check: str | None = None, flags=None, **argparse) -> Any:
    """A dataclass field with its command-line option in the metadata: ``help`` (``{default}`` is filled in),
    ``check`` (one of :data:`CHECKS`, see :func:`validate`), ``flags`` (default ``--name-with-dashes``) and
    further ``add_argument`` keywords (``action``, ``choices``, ``nargs``, ``metavar``, ...)."""
    assert check in CHECKS or check is None, check
    return field(default=default, metadata={"help": help, "check": check, "flags": flags, "argparse": argparse})


@dataclass
class WorldConfig:
    """Where the model and its SAEs come from: what :meth:`sfc_plugin.World.load` takes."""

    SHARED: ClassVar[tuple[str, ...]] = (
        "model",
        "sae",
        "preset",
        "device",
        "dtype",
        "threads",
    )  # taken from a discover config

    model: str | None = setting(None, "model name or directory (default: the toy world)", check="string")
    sae: list[str] | None = setting(
        None,
        "SAELens SAE directory, directory of SAE directories, release:sae_id, release:* or release:PATTERN "
        "(a shell pattern over its ids, e.g. 'layer_*_width_16k_l0_big'; repeatable)",
        action="append",
    )
    preset: str | None = setting(None, f"model + SAEs by name (see sfc presets): {', '.join(PRESETS)}", check="string")
    device: str | None = setting(None, "torch device, e.g. cuda, cuda:1, cpu (default: the model's)", check="device")
    dtype: str | None = setting(
        None, "model dtype (effects accumulate in float32)", check="string", choices=list(DTYPES)
    )
    threads: int | None = setting(
        None,
        "torch CPU threads (default: the usable cores less those busy elsewhere; OMP_NUM_THREADS also sets it)",
        check="positive",
    )


@dataclass
class DiscoverConfig(WorldConfig):
    """``sfc discover``: :func:`sfc_plugin.discover` on a dataset's pairs."""

    data: str = setting(
        "toy/sva-rc", "dataset name (e.g. {default}) or JSON-lines file of pair records", check="string"
    )
    split: str = setting(
        "train", "dataset split for named datasets (default {default}; evaluate uses test)", check="string"
    )
    metric: str | None = setting(
        None, "metric name (default logit_diff with patch answers, else logprob)", check="string"
    )
    method: str = setting(
        "ig",
        "attribution method: atp, ig, exact, linear (circuit-tracer's convention) or a plugin's (default {default})",
        check="string",
    )
    steps: int = setting(10, "integrated-gradient steps (default {default})", check="positive")
    node_threshold: float = setting(0.1, "keep nodes with |effect| above this (default {default})", check="threshold")
    edge_threshold: float = setting(0.01, "keep edges with |weight| above this (default {default})", check="threshold")
    aggregation: str = setting(
        "sum", "sum over positions, or keep positions (default {default})", choices=["sum", "none"]
    )
    batch_size: int | None = setting(
        None, "examples per batch (default: at most 16, as many as the memory budget allows)", check="positive"
    )
    max_memory: str | None = setting(
        None,
        "working-memory budget that sizes every pass, e.g. 4GB (default: half the free GPU memory; on CPU at most 2GB)",
    )
    n_examples: int | None = setting(40, "use the first N examples (default {default})", check="positive")
    edges: bool = setting(True, "nodes only", check="bool", flags=("--no-edges",), action="store_const", const=False)
    evaluate: bool = setting(
        True,
        "do not evaluate the circuit on held-out pairs (default: faithfulness and completeness under mean ablation "
        "on the dataset's held-out split, recorded in circuit.json)",
        check="bool",
        flags=("--no-evaluate",),
        action="store_const",
        const=False,
    )
    eval_data: str | None = setting(
        None,
        "held-out pairs to evaluate on: a JSON-lines file or dataset name (default: --data's held-out split; "
        "needed when --data is a file)",
        check="string",
    )
    eval_split: str = setting("test", "held-out split of a named dataset (default {default})", check="string")
    n_eval: int | None = setting(
        40, "evaluate on the first N held-out pairs (default {default}, as sfc evaluate)", check="positive"
    )
    target_faithfulness: float | None = setting(
        None,
        "write the smallest circuit on the held-out faithfulness curve whose faithfulness is at least this "
        "(e.g. 0.8); exits 2 naming the best found when none is",
        check="threshold",
    )
    out: str = setting("sfc-out", "output directory (default ./{default})", check="string", flags=("-o", "--out"))

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sfc_plugin.discover`."""
        keys = ("metric", "method", "steps", "node_threshold", "edge_threshold", "aggregation", "edges")
        return {k: getattr(self, k) for k in (*keys, "batch_size", "n_examples", "max_memory")}


@dataclass
class EvaluateConfig(WorldConfig):
    """``sfc evaluate``: :func:`sfc_plugin.evaluate` of a circuit on held-out pairs."""

    SHARED: ClassVar[tuple[str, ...]] = (*WorldConfig.SHARED, "batch_size")

    data: str | None = setting(None, "dataset name or JSON-lines file (default: the circuit's dataset)", check="string")
    split: str = setting(
        "test", "split of a named dataset (default {default}: held out from discovery)", check="string"
    )
    ablation: str = setting("mean", "mean, zero, resample or a plugin's (default {default})", check="string")
    thresholds: list[float] | None = setting(
        None, "node thresholds (default: log-spaced over the circuit's effects)", check="thresholds", nargs="+"
    )
    n_thresholds: int = setting(15, "number of default thresholds (default {default})", check="positive")
    start_layer: int = setting(0, "never ablate submodules below this layer (default {default})", check="non-negative")
    features_only: bool = setting(False, "ablate every error term (features-only circuits)", check="bool")
    n_examples: int | None = setting(
        DiscoverConfig.n_examples, "use the first N examples (default {default}, as discover)", check="positive"
    )
    allow_overlap: bool = setting(
        False, "evaluate even on pairs the circuit was discovered on (refused by default)", check="bool"
    )
    batch_size: int | None = setting(None, "examples per batch (default 32)", check="positive")
    max_memory: str | None = setting(None, "working-memory budget that caps examples per pass, e.g. 4GB")
    out: str = setting("sfc-out", "output directory (default ./{default})", check="string", flags=("-o", "--out"))

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sfc_plugin.evaluate`."""
        keys = ("ablation", "thresholds", "n_thresholds", "start_layer", "batch_size", "max_memory")
        return {**{k: getattr(self, k) for k in keys}, "include_errors": not self.features_only}


# SHIFT trains and evaluates probes on whole splits by default (not discover's 40): with 40 balanced test
# examples worst-group accuracy rests on 10 per group, and the toy table then ranks the skylines below SHIFT.
@dataclass
class ShiftConfig(WorldConfig):
    """``sfc shift``: :func:`sfc_plugin.shift` on a dataset's train, val and test splits."""

    SHARED: ClassVar[tuple[str, ...]] = (*WorldConfig.SHARED, "batch_size")

    data: str = setting(
        "toy/bios",
        "dataset with train (ambiguous), val and test (balanced) splits of {text, profession, gender} records "
        "(default {default}); bias_in_bios[:PROF_A,PROF_B][,dir=PATH] builds the paper's splits of "
        "LabHC/bias_in_bios from the Hugging Face cache or a directory of its files",
        check="string",
    )
    layer: int | None = setting(
        None,
        "probe on blocks.<layer>.hook_resid_post (default: the preset's SHIFT layer, the authors' — 4 for "
        "pythia-70m-sfc, 22 for gemma-2-2b-sfc — else the last layer with SAEs)",
        check="non-negative",
    )
    judge: str = setting(
        "concept",
        "feature judge: concept (label-free, default), labelled, file, interactive or a plugin's",
        check="string",
    )
    compare_judge: str = setting(
        "labelled",
        "a second judge on the same candidates, reported beside SHIFT as shift_<name> rows "
        "(default {default}: a skyline that reads the balanced labels; 'none' to skip)",
        check="string",
    )
    spurious_concept: str | None = setting(
        None,
        "the spurious concept for the concept judge: words or short phrases ('he, she, his, her, Mr, Mrs'), a "
        "file of them, or a shipped name (default: the shipped description named like the spurious attribute, "
        "'gender')",
        check="string",
        metavar="WORDS|FILE",
    )
    evidence_text: str | None = setting(
        None,
        f"text the concept judge reads features' evidence from: {TEXT_HELP} "
        "(default: the toy corpus for the toy model, else the training texts)",
        check="string",
        metavar="SOURCE",
    )
    concept_threshold: float | None = setting(
        None,
        "concept judge: ablate at this share of concept words among promoted tokens (default 0.3)",
        check="threshold",
    )
    decisions: str | None = setting(None, "decisions file (JSON or CSV: id,decision) for --judge file", check="string")
    top_k: int | None = setting(50, "candidate features: the top K by |effect| (default {default})", check="positive")
    threshold: float | None = setting(None, "candidate features: |effect| above this", check="threshold")
    method: str = setting(
        "ig", "attribution method of the probe's logit: ig, atp or a plugin's (default {default})", check="string"
    )
    steps: int = setting(10, "integrated-gradient steps (default {default})", check="positive")
    n_attribution: int | None = setting(
        100,
        "attribute the probe on the first N training (and, for the skylines, validation) examples (default "
        "{default}, the authors')",
        check="positive",
    )
    probe_recipe: str = setting(
        "authors",
        "probe training: authors (AdamW lr 1e-2, one epoch, batch 32; default) or full-batch (Adam, 400 "
        "full-batch epochs: the earlier default)",
        check="string",
        choices=["authors", "full-batch"],
    )
    skyline_probe: str = setting(
        "original",
        "skylines rank units by how much they help the original probe predict the spurious label (original, "
        "default, the authors') or by |effect| on a probe trained for it (spurious)",
        check="string",
        choices=["original", "spurious"],
    )
    prepend_bos: bool = setting(
        True,
        "texts without BOS, as the authors' Pythia-70M runs had them (its Hugging Face tokenizer adds none; "
        "default: BOS first, as TransformerLens and the authors' Gemma-2-2B runs)",
        check="bool",
        flags=("--no-bos",),
        action="store_const",
        const=False,
    )
    n_train: int | None = setting(
        None,
        "use the first N training examples (default: the whole split; unlike discover's 40, a probe needs them)",
        check="positive",
    )
    n_eval: int | None = setting(
        None, "use the first N validation and N test examples (default: whole splits)", check="positive"
    )
    allow_overlap: bool = setting(
        False, "run even when validation or test examples are training examples (refused by default)", check="bool"
    )
    batch_size: int = setting(
        16,
        "examples per attribution batch, at most (the memory budget may take fewer; default {default})",
        check="positive",
    )
    max_memory: str | None = setting(
        None,
        "working-memory budget that sizes every pass, e.g. 4GB (default: half the free GPU memory; on CPU at most 2GB)",
    )
    seed: int = setting(
        42, "seed of the probes and the random row (default {default}, the authors')", check="non-negative"
    )
    cache: str | None = setting(
        None,
        "directory of finished and partial results (default OUT/cache): a run interrupted resumes there",
        check="string",
    )
    out: str = setting("sfc-out", "output directory (default ./{default})", check="string", flags=("-o", "--out"))

    def pipeline_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sfc_plugin.shift` (``compare_judge="none"``: None, no comparison)."""
        keys = ("layer", "judge", "top_k", "threshold", "method", "steps", "seed", "batch_size", "n_attribution")
        out = {k: getattr(self, k) for k in (*keys, "probe_recipe", "skyline_probe", "prepend_bos", "max_memory")}
        out["compare_judge"] = None if str(self.compare_judge).lower() == "none" else self.compare_judge
        options = {"decisions": self.decisions, "concept": self.spurious_concept, "evidence_text": self.evidence_text}
        if self.concept_threshold is not None:
            options["concept_threshold"] = self.concept_threshold
        out["judge_options"] = options
        return out


@dataclass
class ClusterConfig:
    """Every setting of :func:`~sfc_plugin.clusters.find_clusters` that changes the results (``config.json``)."""

    corpus: str = setting("toy", f"{TEXT_HELP} (default 'toy': labelled documents of the toy language)", check="string")
    n_contexts: int = setting(2000, "contexts to collect (default {default})")
    n_documents: int = setting(100000, "read at most this many documents")
    max_loss: float = setting(0.5, "keep predictions with loss below this, nats (default {default})")
    window: int = setting(64, "tokens per corpus window, BOS included (default {default})")
    vectors: str = setting("effects", "effects (SAE-feature effects, default) or gradients (∇x log p)")
    top_k: int = setting(64, "entries kept per behaviour vector (default {default})")
    submodules: list[str] | None = setting(
        None,
        "build vectors from this submodule only (e.g. resid_1; repeatable; default all)",
        flags=("--submodule",),
        action="append",
    )
    k: int = setting(8, "number of clusters (default {default})")
    algorithm: str = setting("kmeans", "kmeans (default) or spectral (on a cosine k-NN graph)")
    seed: int = setting(0, "seed of the toy corpus and the clustering (default {default})")
    shard_size: int = setting(256, "contexts per vector shard (default {default})")
    batch_size: int = setting(32, "contexts per batch (default {default})")
    method: str = setting("ig", "attribution method of the circuits (default {default})", check="string")
    steps: int = setting(10, "integrated-gradient steps (default {default})")
    node_threshold: float = setting(0.1, "circuit node threshold (default {default})")
    edge_threshold: float = setting(0.01, "circuit edge threshold (default {default})")
    circuit_examples: int = setting(64, "contexts per cluster used for its circuit (default {default})")
    edges: bool = setting(True, "circuits with nodes only", flags=("--no-edges",), action="store_const", const=False)
    n_examples_shown: int = field(default=8, metadata={"cli": False})
    model: str = field(default="toy", metadata={"cli": False})  # where the model came from (World.source)
    saes: list = field(default_factory=list, metadata={"cli": False})  # [hook, d_sae] per SAE, set by the run

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validate(self) -> None:
        """Raise :class:`SFCError` naming the first bad setting."""
        from .clusters.grouping import ALGORITHMS
        from .clusters.vectors import KINDS

        for name in (
            "n_contexts",
            "n_documents",
            "top_k",
            "k",
            "shard_size",
            "batch_size",
            "steps",
            "circuit_examples",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SFCError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.max_loss, bool) or not isinstance(self.max_loss, (int, float)) or not self.max_loss > 0:
            raise SFCError(f"max_loss must be positive, got {self.max_loss!r}")
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 2:
            raise SFCError(f"window must be at least 2 tokens, got {self.window!r}")
        if self.algorithm not in ALGORITHMS:
            raise SFCError(f"unknown clustering algorithm {self.algorithm!r} (known: {', '.join(ALGORITHMS)})")
        if self.vectors not in KINDS:
            raise SFCError(f"unknown behaviour vector kind {self.vectors!r} (known: {', '.join(KINDS)})")


COMMANDS: dict[str, tuple[type, ...]] = {  # the settings classes of each command that reads a config file
    "discover": (DiscoverConfig,),
    "evaluate": (EvaluateConfig,),
    "shift": (ShiftConfig,),
    "clusters": (WorldConfig, ClusterConfig),
    "dashboards": (WorldConfig,),
    "edit-report": (WorldConfig,),
}


def options(*classes: type) -> list[Field]:
    """The fields of ``classes`` that are options (command line and config file), in order, without repeats."""
    out: dict[str, Field] = {}
    for cls in classes:
        for f in fields(cls):
            if f.metadata.get("cli", True) and "help" in f.metadata:
                out.setdefault(f.name, f)
    return list(out.values())


def default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def help_text(f: Field) -> str:
    """The field's help with its default filled in."""
    return f.metadata["help"].replace("{default}", str(default(f)))


def load_config(path: str | None, command: str = "discover") -> dict[str, Any]:
    """The ``[command]`` table of a TOML file, else its top-level keys (for other commands than discover: only
    those they share with a discover config, so one run.toml serves all). Keys as Python names."""
    if not path:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from .validation import read_text_lines

    try:
        raw = tomllib.loads("\n".join(line for _, line in read_text_lines(path, "config file")))
    except tomllib.TOMLDecodeError as exc:
        raise SFCError(f"config file {path!r} is not valid TOML ({exc})") from None
    known = {f.name for f in options(*COMMANDS[command])}
    table = raw.get(command)
    if table is not None and not isinstance(table, dict):
        raise SFCError(f"config file {path!r}: {command!r} must be a table ([{command}])")
    top = {k.replace("-", "_"): v for k, v in raw.items() if k not in COMMANDS}
    if table is None and command != "discover":
        discover_keys = {f.name for f in options(DiscoverConfig)}
        unknown = sorted(set(top) - discover_keys - known)
        if unknown:
            raise SFCError(f"config file {path!r}: unknown key {unknown[0]!r}")
        return {k: v for k, v in top.items() if k in COMMANDS[command][0].SHARED}
    config = top if table is None else {k.replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SFCError(
            f"config file {path!r}: unknown key {unknown[0]!r}" + (f" in [{command}]" if table is not None else "")
        )
    return config


def validate(values: dict[str, Any], classes: tuple[type, ...], config: str | None = None, from_config=()) -> None:
    """Check values by their fields' ``check`` before anything is loaded: one-line :class:`SFCError` naming the
    option (``--node-threshold``), and the config file for values read from it (``from_config``)."""
    from . import validation as check

    for f in options(*classes):
        value, kind = values.get(f.name), f.metadata.get("check")
        if value is None or kind is None:
            continue
        name = "--" + f.name.replace("_", "-") + (f" (config file {config!r})" if f.name in from_config else "")
        if kind == "threshold":
            check.threshold(value, name)
        elif kind == "thresholds":
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise SFCError(f"{name} must be a list of numbers, got {value!r}")
            for t in value:
                check.threshold(t, name)
        elif kind in ("positive", "non-negative"):
            check.integer(value, name, minimum=1 if kind == "positive" else 0)
        elif kind == "device":
            check.device(value, name)
        elif kind == "string" and not isinstance(value, str):
            raise SFCError(f"{name} must be a string, got {value!r}")
        elif kind == "bool" and not isinstance(value, bool):
            raise SFCError(f"{name} must be true or false, got {value!r}")


def resolve(command: str, given: dict[str, Any], config: str | None = None) -> dict[str, Any]:
    """A command's settings: ``given`` (command-line values, None where not given) over the config file over
    the defaults; validated (see :func:`validate`)."""
    classes = COMMANDS[command]
    from_file = load_config(config, command)
    from_config = {k for k in from_file if given.get(k) is None}
    values = {
        f.name: given.get(f.name) if given.get(f.name) is not None else from_file.get(f.name) for f in options(*classes)
    }
    validate(values, classes, config, from_config)
    return {f.name: default(f) if values[f.name] is None else values[f.name] for f in options(*classes)}
