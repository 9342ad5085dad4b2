"""One table of bad inputs: each exits 2 (the API raises SFCError) with exactly the one line listed here.

Placeholders in the expected lines: ``{d}`` the test's world directory, ``{pkg}`` the installed package.
A few cases (marked ``accept``) are deliberately accepted; their comment says why.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch
from conftest import make_model, make_records, make_sae, save_world

import sfc_plugin
from sfc_plugin.cli import main
from sfc_plugin.errors import SFCError

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
PKG = Path(sfc_plugin.__file__).resolve().parent


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    """A saved tiny model, two SAEs, pair data, and a circuit discovered on them (with fingerprints)."""
    d = tmp_path_factory.mktemp("world")
    save_world(d, tokenizer, HOOKS)
    assert (
        main(
            [
                "discover",
                "--model",
                str(d / "model"),
                "--sae",
                str(d / "saes"),
                "--data",
                str(d / "pairs.jsonl"),
                "--method",
                "atp",
                "--node-threshold",
                "0.01",
                "--no-edges",
                "-o",
                str(d / "found"),
                "-q",
            ]
        )
        == 0
    )
    return d


def cli(capsys, argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def discover_args(d, data=None, saes=None, model=None, out=None):
    return [
        "discover",
        "--model",
        model or d / "model",
        "--sae",
        saes or d / "saes",
        "--data",
        data or d / "pairs.jsonl",
        "--method",
        "atp",
        "--no-edges",
        "-o",
        out or d / "out",
        "-q",
    ]


def evaluate_args(d, circuit=None, saes=None, out=None):
    return [
        "evaluate",
        circuit or d / "found" / "circuit.json",
        "--model",
        d / "model",
        "--sae",
        saes or d / "saes",
        "--data",
        d / "pairs.jsonl",
        "--n-thresholds",
        2,
        "--allow-overlap",
        "-o",
        out or d / "eval",
        "-q",
    ]


def write(c, name, text):
    path = c / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def copy_saes(d, c):
    shutil.copytree(d / "saes", c / "saes")
    return c / "saes"


def sae_file(c, name="sae_weights.safetensors"):
    return c / "saes" / HOOKS[0] / name


def circuit_data(d):
    return json.loads((d / "found" / "circuit.json").read_text())


def edited_circuit(d, c, edit):
    data = circuit_data(d)
    edit(data)
    return write(c, "circuit.json", json.dumps(data))


def first_feature(data):
    return next(n for n in data["nodes"] if n["kind"] == "feature")


def nan_sae(d, c, value):
    saes = copy_saes(d, c)
    from safetensors.torch import load_file, save_file

    state = load_file(str(saes / HOOKS[0] / "sae_weights.safetensors"))
    state["W_enc"][0, 0] = value
    save_file(state, str(saes / HOOKS[0] / "sae_weights.safetensors"))
    return saes


def saved_edit(d, c):
    """An edit of the world's model and SAEs, saved with the provenance ``sfc shift`` records."""
    from sfc_plugin.fingerprints import world_provenance
    from sfc_plugin.models import resolve_world
    from sfc_plugin.shifting.edit import FeatureEdit
    from sfc_plugin.splicing import build_submodules

    model, saes = resolve_world(str(d / "model"), [str(d / "saes")])
    subs = build_submodules(model, saes)
    edit = FeatureEdit(
        {s.name: s for s in subs},
        ablate={subs[0].name: [1]},
        provenance=world_provenance(model, subs, str(d / "model")),
    )
    edit.to_json(c / "edit.json")
    return c / "edit.json"


def other_saes(c):
    make_sae(HOOKS[0], seed=7).save_model(c / "saes" / HOOKS[0])
    make_sae(HOOKS[1], seed=1).save_model(c / "saes" / HOOKS[1])
    return c / "saes"


def bios(n):
    return jsonl(
        {"text": f"the cat {i}", "profession": "nurse" if i % 2 else "professor", "gender": "female"} for i in range(n)
    )


# (id, argv builder (world dir, case dir) -> argv, expected stderr line)
CASES = [
    # ---- data ----
    (
        "unknown word in an answer",
        lambda d, c: discover_args(
            d, data=write(c, "p.jsonl", jsonl([dict(make_records(2)[0], patch_answer=" zebra")]))
        ),
        "sfc: error: example 0 ({c}/p.jsonl:1): patch_answer ' zebra' contains the unknown token '<unk>' (a word outside "
        "the vocabulary); fix the data or allow it with allow_unk=True (--allow-unk)",
    ),
    (
        "unknown word in a prompt",
        lambda d, c: discover_args(
            d,
            data=write(
                c,
                "p.jsonl",
                jsonl(make_records(1) + [dict(make_records(2)[1], clean_prefix="the big zebra near the dog")]),
            ),
        ),
        "sfc: error: example 1 ({c}/p.jsonl:2): clean_prefix 'the big zebra near the dog' contains the unknown token "
        "'<unk>' (a word outside the vocabulary); fix the data or allow it with allow_unk=True (--allow-unk)",
    ),
    (
        "prompt longer than the context",
        lambda d, c: discover_args(
            d,
            data=write(
                c,
                "p.jsonl",
                jsonl(
                    [
                        dict(
                            make_records(1)[0],
                            clean_prefix="the " + "big " * 20 + "cat",
                            patch_prefix="the " + "big " * 20 + "cats",
                        )
                    ]
                ),
            ),
        ),
        "sfc: error: example 0 ({c}/p.jsonl:1): clean_prefix is 23 tokens, longer than the model's context (n_ctx 16)",
    ),
    (
        "non-UTF-8 data",
        lambda d, c: discover_args(
            d, data=write(c, "p.jsonl", jsonl(make_records(1)).encode() + b'{"clean_prefix": "the \xff cat"}\n')
        ),
        "sfc: error: {c}/p.jsonl:2: not UTF-8 text (byte 0xff at column 23)",
    ),
    (
        "empty data file",
        lambda d, c: discover_args(d, data=write(c, "p.jsonl", "")),
        "sfc: error: no examples in data {c}/p.jsonl",
    ),
    (
        "data file of blank lines",
        lambda d, c: discover_args(d, data=write(c, "p.jsonl", "\n  \n\n")),
        "sfc: error: no examples in data {c}/p.jsonl",
    ),
    (
        "NaN in a data file",
        lambda d, c: discover_args(d, data=write(c, "p.jsonl", '{"clean_prefix": NaN, "clean_answer": " is"}\n')),
        "sfc: error: {c}/p.jsonl:1: NaN is not valid JSON (numbers must be finite)",
    ),
    (
        "a number where text belongs",
        lambda d, c: discover_args(d, data=write(c, "p.jsonl", jsonl([dict(make_records(1)[0], clean_prefix=5)]))),
        "sfc: error: example 0 ({c}/p.jsonl:1): 'clean_prefix' must be a string, got 5",
    ),
    (
        "empty prompt",
        lambda d, c: discover_args(d, data=write(c, "p.jsonl", jsonl([dict(make_records(1)[0], patch_prefix=" ")]))),
        "sfc: error: example 0 ({c}/p.jsonl:1): 'patch_prefix' is empty",
    ),
    (
        "a JSON array instead of a record",
        lambda d, c: discover_args(d, data=write(c, "p.jsonl", jsonl(make_records(1)) + "[1, 2]\n")),
        "sfc: error: {c}/p.jsonl:2: expected a JSON object, got list",
    ),
    (
        "data path is a directory",
        lambda d, c: discover_args(d, data=c),
        "sfc: error: data '{c}' is a directory, expected a JSON-lines file or a dataset name",
    ),
    # ---- options ----
    (
        "NaN node threshold",
        lambda d, c: discover_args(d) + ["--node-threshold", "nan"],
        "sfc: error: --node-threshold must be a finite number, got nan",
    ),
    (
        "infinite edge threshold",
        lambda d, c: discover_args(d) + ["--edge-threshold", "inf"],
        "sfc: error: --edge-threshold must be a finite number, got inf",
    ),
    (
        "negative node threshold",
        lambda d, c: discover_args(d) + ["--node-threshold", "-0.5"],
        "sfc: error: --node-threshold must be non-negative, got -0.5",
    ),
    (
        "negative --n-examples",
        lambda d, c: discover_args(d) + ["--n-examples", "-3"],
        "sfc: error: --n-examples must be at least 1, got -3",
    ),
    (
        "--batch-size 0",
        lambda d, c: discover_args(d) + ["--batch-size", "0"],
        "sfc: error: --batch-size must be at least 1, got 0",
    ),
    ("--steps 0", lambda d, c: discover_args(d) + ["--steps", "0"], "sfc: error: --steps must be at least 1, got 0"),
    (
        "a CUDA device this machine lacks",
        lambda d, c: discover_args(d) + ["--device", "cuda:7"],
        "sfc: error: --device 'cuda:7': CUDA is not available on this machine"
        if not torch.cuda.is_available()
        else f"sfc: error: --device 'cuda:7': this machine has {torch.cuda.device_count()} CUDA device(s)",
    ),
    (
        "a device name torch does not know",
        lambda d, c: discover_args(d) + ["--device", "warp-drive"],
        "sfc: error: --device 'warp-drive' is not a torch device",
    ),
    (
        "wrong type in a config file",
        lambda d, c: discover_args(d) + ["--config", write(c, "run.toml", 'steps = "ten"\n')],
        "sfc: error: --steps (config file '{c}/run.toml') must be an integer, got 'ten'",
    ),
    (
        "NaN in a config file",
        lambda d, c: discover_args(d) + ["--config", write(c, "run.toml", "node_threshold = nan\n")],
        "sfc: error: --node-threshold (config file '{c}/run.toml') must be a finite number, got nan",
    ),
    (
        "non-UTF-8 config file",
        lambda d, c: discover_args(d) + ["--config", write(c, "run.toml", b"steps = 2\n# \xff\n")],
        "sfc: error: {c}/run.toml:2: not UTF-8 text (byte 0xff at column 3)",
    ),
    (
        "export: NaN node threshold",
        lambda d, c: [
            "export",
            d / "found" / "circuit.json",
            "--format",
            "dot",
            "-o",
            c / "c.dot",
            "--node-threshold",
            "nan",
        ],
        "sfc: error: node_threshold must be a finite number, got nan",
    ),
    (
        "evaluate: NaN threshold",
        lambda d, c: evaluate_args(d, out=c / "e") + ["--thresholds", "0.1", "nan"],
        "sfc: error: --thresholds must be a finite number, got nan",
    ),
    (
        "evaluate: negative start layer",
        lambda d, c: evaluate_args(d, out=c / "e") + ["--start-layer", "-1"],
        "sfc: error: --start-layer must be at least 0, got -1",
    ),
    (
        "shift: --top-k 0",
        lambda d, c: ["shift", "--top-k", "0", "-o", c / "s"],
        "sfc: error: --top-k must be at least 1, got 0",
    ),
    (
        "shift: wrong type in its config table",
        lambda d, c: ["shift", "--config", write(c, "run.toml", "[shift]\ntop_k = 'many'\n"), "-o", c / "s"],
        "sfc: error: --top-k (config file '{c}/run.toml') must be an integer, got 'many'",
    ),
    (
        "shift: an evaluate key in its config table",
        lambda d, c: ["shift", "--config", write(c, "run.toml", "[shift]\nablation = 'zero'\n"), "-o", c / "s"],
        "sfc: error: config file '{c}/run.toml': unknown key 'ablation' in [shift]",
    ),
    (
        "shift: one file for every split (evaluation examples are training examples)",
        lambda d, c: ["shift", "--data", write(c, "b.jsonl", bios(4)), "-q", "-o", c / "s"],
        "sfc: error: 4 of the 4 val examples are training examples: {c}/b.jsonl is one file, so every split reads it; "
        "use a dataset with train, val and test splits or pass --allow-overlap",
    ),
    (
        "edit-report: SAEs other than the edit's",
        lambda d, c: ["edit-report", saved_edit(d, c), "--sae", other_saes(c), "-o", c / "r"],
        "sfc: error: SAE at hook 'blocks.0.hook_resid_post' has other weights than the edit's (sha256 {h1} vs {h2}); "
        "pass force=True (--force) to use them anyway",
    ),
    (
        "edit-report: NaN in an edit file",
        lambda d, c: [
            "edit-report",
            write(c, "e.json", '{"schema": "sfc-edit/1", "features": [], "x": NaN}'),
            "-o",
            c / "r",
        ],
        "sfc: error: edit file '{c}/e.json' cannot be read (NaN is not valid JSON (numbers must be finite))",
    ),
    # ---- SAE files ----
    (
        "truncated SAE weights",
        lambda d, c: (
            copy_saes(d, c),
            sae_file(c).write_bytes(sae_file(c).read_bytes()[:-100]),
            discover_args(d, saes=c / "saes"),
        )[-1],
        "sfc: error: SAE weights '{c}/saes/blocks.0.hook_resid_post/sae_weights.safetensors' is truncated (its header "
        "names {n} bytes of data, the file holds {m})",
    ),
    (
        "SAE weights cut inside the header",
        lambda d, c: (
            copy_saes(d, c),
            sae_file(c).write_bytes(sae_file(c).read_bytes()[:40]),
            discover_args(d, saes=c / "saes"),
        )[-1],
        "sfc: error: SAE weights '{c}/saes/blocks.0.hook_resid_post/sae_weights.safetensors' is corrupt or truncated "
        "(header of {n} bytes in a 40-byte file)",
    ),
    (
        "SAE weights of random bytes",
        lambda d, c: (
            copy_saes(d, c),
            sae_file(c).write_bytes(struct.pack("<Q", 12) + b"not json at all"),
            discover_args(d, saes=c / "saes"),
        )[-1],
        "sfc: error: SAE weights '{c}/saes/blocks.0.hook_resid_post/sae_weights.safetensors' has a corrupt header",
    ),
    (
        "corrupt SAE cfg.json",
        lambda d, c: (
            copy_saes(d, c),
            sae_file(c, "cfg.json").write_text('{"d_in": 16,'),
            discover_args(d, saes=c / "saes"),
        )[-1],
        "sfc: error: SAE config '{c}/saes/blocks.0.hook_resid_post/cfg.json' is not valid JSON (Expecting property name "
        "enclosed in double quotes: line 1 column 13)",
    ),
    (
        "SAE cfg.json that is a list",
        lambda d, c: (copy_saes(d, c), sae_file(c, "cfg.json").write_text("[]"), discover_args(d, saes=c / "saes"))[-1],
        "sfc: error: SAE config '{c}/saes/blocks.0.hook_resid_post/cfg.json' must be a JSON object, got list",
    ),
    (
        "SAE cfg.json without its fields",
        lambda d, c: (
            copy_saes(d, c),
            sae_file(c, "cfg.json").write_text('{"architecture": "standard"}'),
            discover_args(d, saes=c / "saes"),
        )[-1],
        "sfc: error: cannot load SAE '{c}/saes/blocks.0.hook_resid_post' ({rest}",
    ),
    (
        "NaN in SAE weights",
        lambda d, c: discover_args(d, saes=nan_sae(d, c, float("nan"))),
        "sfc: error: SAE '{c}/saes/blocks.0.hook_resid_post': W_enc holds 1 non-finite value(s) (first at index [0, 0]: nan)",
    ),
    (
        "infinity in SAE weights",
        lambda d, c: discover_args(d, saes=nan_sae(d, c, float("inf"))),
        "sfc: error: SAE '{c}/saes/blocks.0.hook_resid_post': W_enc holds 1 non-finite value(s) (first at index [0, 0]: inf)",
    ),
    # ---- model ----
    (
        "corrupt model config.json",
        lambda d, c: (
            shutil.copytree(d / "model", c / "model"),
            write(c, "model/config.json", "{"),
            discover_args(d, model=c / "model"),
        )[-1],
        "sfc: error: model config '{c}/model/config.json' is not valid JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2)",
    ),
    (
        "truncated model weights",
        lambda d, c: (
            shutil.copytree(d / "model", c / "model"),
            (c / "model" / "model.safetensors").write_bytes((d / "model" / "model.safetensors").read_bytes()[:-8]),
            discover_args(d, model=c / "model"),
        )[-1],
        "sfc: error: model weights '{c}/model/model.safetensors' is truncated (its header names {n} bytes of data, the "
        "file holds {m})",
    ),
    # ---- circuit files ----
    (
        "circuit: text where a number belongs",
        lambda d, c: evaluate_args(d, circuit=edited_circuit(d, c, lambda x: first_feature(x).update(effect="abc"))),
        "sfc: error: {c}/circuit.json: corrupt circuit: node '{node}': 'effect' must be a finite number, got 'abc'",
    ),
    (
        "circuit: feature index as a string",
        lambda d, c: evaluate_args(d, circuit=edited_circuit(d, c, lambda x: first_feature(x).update(feature="3"))),
        "sfc: error: {c}/circuit.json: corrupt circuit: node '{node}': 'feature' must be an integer >= 0 or null, got '3'",
    ),
    (
        "circuit: NaN literal",
        lambda d, c: evaluate_args(
            d,
            circuit=write(
                c,
                "circuit.json",
                (d / "found" / "circuit.json").read_text().replace('"total_effect": ', '"total_effect": NaN, "x": ', 1),
            ),
        ),
        "sfc: error: circuit file '{c}/circuit.json': NaN is not valid JSON (numbers must be finite)",
    ),
    (
        "circuit: nodes not a list",
        lambda d, c: evaluate_args(d, circuit=edited_circuit(d, c, lambda x: x.update(nodes={"a": 1}))),
        "sfc: error: {c}/circuit.json: corrupt circuit: 'nodes' must be a list, got dict",
    ),
    (
        "circuit: a node twice",
        lambda d, c: evaluate_args(
            d, circuit=edited_circuit(d, c, lambda x: x["nodes"].append(dict(first_feature(x))))
        ),
        "sfc: error: {c}/circuit.json: corrupt circuit: node '{node}' appears twice",
    ),
    (
        "circuit: feature index past the SAE's width",
        lambda d, c: evaluate_args(
            d, circuit=edited_circuit(d, c, lambda x: first_feature(x).update(feature=999, id="resid_0/999"))
        ),
        "sfc: error: circuit node 'resid_0/999' names feature 999, but the SAE at blocks.0.hook_resid_post has 32 features",
    ),
    (
        "circuit: not UTF-8",
        lambda d, c: evaluate_args(d, circuit=write(c, "circuit.json", b'{"schema": "\xfe"}')),
        "sfc: error: circuit file '{c}/circuit.json' is not UTF-8 text (byte 0xfe at offset 12)",
    ),
    (
        "circuit: SAEs other than the circuit's",
        lambda d, c: (
            make_sae(HOOKS[0], seed=7).save_model(c / "saes" / HOOKS[0]),
            make_sae(HOOKS[1], seed=1).save_model(c / "saes" / HOOKS[1]),
            evaluate_args(d, saes=c / "saes", out=c / "e"),
        )[-1],
        "sfc: error: SAE at hook 'blocks.0.hook_resid_post' has other weights than the circuit's (sha256 {h1} vs {h2}); "
        "pass force=True (--force) to use them anyway",
    ),
    (
        "circuit: an SAE missing",
        lambda d, c: evaluate_args(d, saes=d / "saes" / HOOKS[0], out=c / "e"),
        "sfc: error: no SAE given for hook 'blocks.1.hook_resid_post', where the circuit was found with one; pass "
        "force=True (--force) to use them anyway",
    ),
    # ---- output paths ----
    (
        "output directory is a file",
        lambda d, c: discover_args(d, out=write(c, "f", "x")),
        "sfc: error: output directory '{c}/f' is a file",
    ),
    (
        "output directory holds someone else's files",
        lambda d, c: (write(c, "mine/notes.txt", "x"), discover_args(d, out=c / "mine"))[-1],
        "sfc: error: output directory '{c}/mine' is not empty and was not written by sfc (it holds 'notes.txt'); choose "
        "another directory or pass --overwrite to write into it",
    ),
    (
        "export onto a directory",
        lambda d, c: ["export", d / "found" / "circuit.json", "--format", "json", "-o", c],
        "sfc: error: output path '{c}' is a directory, expected a file",
    ),
    (
        "export below a file",
        lambda d, c: ["export", d / "found" / "circuit.json", "--format", "dot", "-o", write(c, "f", "x") / "c.dot"],
        "sfc: error: cannot write '{c}/f/c.dot': '{c}/f' is not a directory",
    ),
    # ---- toy build ----
    (
        "toy build into the installed package",
        lambda d, c: ["toy", "build", "--reduced", "-q", "-o", PKG / "toy" / "artifacts"],
        "sfc: error: refusing to build into '{pkg}/toy/artifacts', inside the installed package '{pkg}'; build elsewhere "
        "(default ./sfc-toy) and load it with toy.load(path=...)",
    ),
    (
        "toy build over someone else's files",
        lambda d, c: (write(c, "t/data/mine.txt", "keep me"), ["toy", "build", "--reduced", "-q", "-o", c / "t"])[-1],
        "sfc: error: output directory '{c}/t' is not empty and was not written by sfc (it holds 'data'); choose another "
        "directory or pass --overwrite to write (data, model, saes, report.json) into it",
    ),
]


def _pattern(expected: str, c: Path) -> re.Pattern:
    text = re.escape(expected.replace("{c}", str(c)).replace("{pkg}", str(PKG)))
    for name in ("n", "m", "node", "h1", "h2", "rest"):
        text = text.replace(re.escape("{" + name + "}"), r"[^\n]+?" if name != "rest" else r"[^\n]+")
    return re.compile(text)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_prints_one_exact_line(world, tmp_path, capsys, case):
    _, build, expected = case
    c = tmp_path / "case"
    c.mkdir()
    argv = build(world, c)
    code, out, err = cli(capsys, argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert _pattern(expected, c).fullmatch(lines[0]), f"\n got: {lines[0]}\nwant: {expected}"
    assert "Traceback" not in err


def test_toy_build_never_deletes_user_data_even_with_overwrite(tmp_path, capsys):
    mine = tmp_path / "t" / "data" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("keep me")
    code, _, err = cli(capsys, ["toy", "build", "--reduced", "-q", "--overwrite", "-o", tmp_path / "t"])
    assert code == 2 and err.strip() == (
        f"sfc: error: '{tmp_path / 't' / 'data'}' exists and was not written by sfc; "
        "move it away or choose another directory (sfc never deletes what it did not write)"
    )
    assert mine.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # the staging directory is gone too


# ---- accepted on purpose ----


def test_allow_unk_accepts_unknown_words(world, tmp_path, capsys):
    """An unknown word may be what a user wants to study (the model's <unk> behaviour): --allow-unk accepts it."""
    rec = [
        dict(
            r,
            clean_prefix=r["clean_prefix"].replace("big", "zebra"),
            patch_prefix=r["patch_prefix"].replace("big", "zebra"),
        )
        for r in make_records(4)
    ]
    data = write(tmp_path, "p.jsonl", jsonl(rec))
    code, _, err = cli(capsys, discover_args(world, data=data, out=tmp_path / "o") + ["--allow-unk"])
    assert code == 0, err


def test_force_evaluates_other_saes_and_records_it(world, tmp_path, capsys):
    for i, hook in enumerate(HOOKS):
        make_sae(hook, seed=7 + i).save_model(tmp_path / "saes" / hook)
    code, _, err = cli(capsys, evaluate_args(world, saes=tmp_path / "saes", out=tmp_path / "e") + ["--force"])
    assert code == 0, err
    assert "sfc: warning: --force: SAE at hook 'blocks.0.hook_resid_post' has other weights" in err
    report = json.loads((tmp_path / "e" / "faithfulness.json").read_text())
    assert report["provenance_check"]["status"] == "forced" and len(report["provenance_check"]["mismatches"]) == 2
    code, _, err = cli(capsys, evaluate_args(world, out=tmp_path / "e2"))
    assert code == 0, err
    assert json.loads((tmp_path / "e2" / "faithfulness.json").read_text())["provenance_check"] == {"status": "match"}


def test_a_circuit_without_fingerprints_is_evaluated_and_says_so(world, tmp_path, capsys):
    """Circuits written before fingerprints existed still work; the report says nothing was checked."""
    data = circuit_data(world)
    data["provenance"].pop("model_fingerprint")
    for s in data["provenance"]["saes"]:
        s.pop("fingerprint")
    path = write(tmp_path, "old.json", json.dumps(data))
    code, _, err = cli(capsys, evaluate_args(world, circuit=path, out=tmp_path / "e"))
    assert code == 0, err
    check = json.loads((tmp_path / "e" / "faithfulness.json").read_text())["provenance_check"]
    assert check["status"].startswith("unchecked")


# ---- the Python API ----


@pytest.fixture(scope="module")
def api_world(tokenizer):
    return make_model(tokenizer), {h: make_sae(h, seed=i) for i, h in enumerate(HOOKS)}, make_records(4)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"node_threshold": float("nan")}, "node_threshold must be a finite number, got nan"),
        ({"edge_threshold": float("-inf")}, "edge_threshold must be a finite number, got -inf"),
        ({"node_threshold": "0.1"}, "node_threshold must be a number, got '0.1'"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"n_examples": -1}, "n_examples must be at least 1, got -1"),
        ({"steps": 2.5}, "steps must be an integer, got 2.5"),
        ({"device": "cuda:9"}, None),
    ],
)
def test_discover_rejects_bad_options_before_any_work(api_world, kwargs, message):
    model, saes, records = api_world
    before = next(model.parameters()).device
    with pytest.raises(SFCError) as err:
        sfc_plugin.discover(model, saes, records, method="atp", edges=False, progress=False, **kwargs)
    if message is not None:
        assert str(err.value) == message
    assert next(model.parameters()).device == before  # a device that does not exist moves nothing


def test_discover_rejects_nan_in_sae_objects_and_model(api_world, tokenizer):
    model, saes, records = api_world
    bad = make_sae(HOOKS[0])
    with torch.no_grad():
        bad.b_dec[3] = float("nan")
    with pytest.raises(
        SFCError,
        match=r"^SAE at hook 'blocks.0.hook_resid_post': b_dec holds 1 non-finite value\(s\) "
        r"\(first at index \[3\]: nan\)$",
    ):
        sfc_plugin.discover(model, {HOOKS[0]: bad}, records, method="atp", edges=False, progress=False)
    broken = make_model(tokenizer)
    with torch.no_grad():
        broken.blocks[1].mlp.W_out[0, 0] = float("inf")
    with pytest.raises(SFCError, match=r"non-finite effects at|the metric is not finite"):
        sfc_plugin.discover(broken, saes, records, method="atp", edges=False, progress=False)


def test_evaluate_api_rejects_bad_thresholds(api_world):
    model, saes, records = api_world
    circuit = sfc_plugin.discover(model, saes, records, method="atp", edges=False, progress=False, node_threshold=0.01)
    with pytest.raises(SFCError, match=r"^threshold must be a finite number, got nan$"):
        sfc_plugin.evaluate(model, saes, circuit, records, thresholds=[float("nan")], progress=False)
    with pytest.raises(SFCError, match=r"^n_thresholds must be at least 1, got 0$"):
        sfc_plugin.evaluate(model, saes, circuit, records, n_thresholds=0, progress=False)


# ---- output safety and determinism ----


def test_links_from_data_are_http_only_and_text_is_escaped(world):
    from sfc_plugin.circuit import Circuit
    from sfc_plugin.export.dot import circuit_to_dot

    circuit = Circuit.from_json(world / "found" / "circuit.json")
    feats = [n for n in circuit.nodes if n.kind == "feature"][:3]
    circuit.provenance["node_info"] = {
        feats[0].id: {"url": "javascript:alert(1)"},
        feats[1].id: {"url": "https://example.org/f?a=1&b=2"},
        feats[2].id: {"url": "file:///etc/passwd"},
    }
    feats[0].label = 'evil" URL="javascript:alert(2)'
    dot = circuit_to_dot(circuit)
    assert "javascript:" not in dot.replace('\\"javascript:alert(2)', "") and "file://" not in dot
    assert 'URL="https://example.org/f?a=1&amp;b=2"' in dot  # & as Graphviz must copy it into SVG
    assert 'evil\\" URL=\\"javascript:alert(2)' in dot  # the label stays text inside one quoted string


def test_same_command_twice_gives_identical_files(world, tmp_path, capsys):
    import shutil as sh

    for name in ("a", "b"):
        code, _, err = cli(
            capsys,
            discover_args(world, out=tmp_path / name)[:-3] + ["-o", tmp_path / name, "-q", "--node-threshold", "0.01"],
        )
        assert code == 0, err
    a = json.loads((tmp_path / "a" / "circuit.json").read_text())
    b = json.loads((tmp_path / "b" / "circuit.json").read_text())
    assert set(a["provenance"]["timings"]) == {"seconds"}
    a["provenance"].pop("timings"), b["provenance"].pop("timings")
    assert a == b
    text = (tmp_path / "a" / "circuit.json").read_text()
    assert text.index('"timings"') > text.index('"model_fingerprint"')  # the one varying field, at the end
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"circuit.json", "circuit.dot"} <= set(names)
    for name in names:
        if name not in ("circuit.json", ".sfc-manifest.json"):  # the manifest hashes circuit.json (timings)
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in ("e1", "e2"):
        code, _, err = cli(capsys, evaluate_args(world, out=tmp_path / name))
        assert code == 0, err
    for f in ("faithfulness.json", "faithfulness.csv", "faithfulness.png"):
        assert (tmp_path / "e1" / f).read_bytes() == (tmp_path / "e2" / f).read_bytes(), f
    sh.rmtree(tmp_path / "e2")


# ---- output safety in every format: hostile text stays text, links stay http(s), JSON stays strict ----

HOSTILE = "</script><img src=x onerror=alert(1)>"
EVIL_URL = "javascript:alert(1)"


@pytest.fixture(scope="module")
def hostile_circuit(world):
    """The world's circuit with a markup label, a javascript: link and an https link on its features."""
    from sfc_plugin.circuit import Circuit

    circuit = Circuit.from_json(world / "found" / "circuit.json")
    feats = sorted((n for n in circuit.nodes if n.kind == "feature"), key=lambda n: -abs(n.effect))  # all drawn
    feats[0].label = HOSTILE
    circuit.provenance["node_info"] = {
        feats[0].id: {"url": EVIL_URL, "tooltip": HOSTILE},
        feats[1].id: {"url": "https://example.org/f?a=1&b=2"},
        feats[2].id: {"url": 'https://example.org/" onload="alert(1)'},
    }
    circuit.provenance["dataset"] = HOSTILE
    return circuit


def _dot(circuit, tmp):
    from sfc_plugin.export.dot import circuit_to_dot

    return circuit_to_dot(circuit)


def _svg(circuit, tmp):
    from sfc_plugin.export.render import dot_binary, render

    if not dot_binary():
        pytest.skip("Graphviz is not installed")
    return render(circuit, "svg", keep_isolated=True).decode("utf-8")


def _viewer(circuit, tmp):
    from sfc_plugin.viewer import build_site

    build_site(circuit, tmp / "site")
    return (tmp / "site" / "data.js").read_text()


def _graph(circuit, tmp):
    from sfc_plugin.export.neuronpedia import export_neuronpedia

    export_neuronpedia(circuit, tmp / "g.json")
    return (tmp / "g.json").read_text() + "\0" + (tmp / "graph-metadata.json").read_text()


def _clusters_page(circuit, tmp):
    from sfc_plugin.clusters.page import render_index

    cluster = {
        "id": 0,
        "size": 1,
        "answers": {HOSTILE: 1},
        "categories": {HOSTILE: {HOSTILE: HOSTILE}},
        "contexts": [{"prefix": HOSTILE, "answer_text": HOSTILE}],
        "top_features": [{"id": HOSTILE, "mean_effect": 0.5, "frequency": 1.0}],
        "n_nodes": 1,
        "n_edges": 0,
    }
    cfg = {
        "corpus": HOSTILE,
        "max_loss": 0.5,
        "algorithm": HOSTILE,
        "vectors": HOSTILE,
        "top_k": 3,
        "method": HOSTILE,
        "node_threshold": 0.1,
    }
    return render_index(
        {
            "config": cfg,
            "clusters": [cluster],
            "n_contexts": 1,
            "n_clusters": 1,
            "agreement": {HOSTILE: {"adjusted_rand_index": 0.1, "normalized_mutual_info": 0.2}},
        },
        set(),
    )


def _faithfulness(circuit, tmp):
    from sfc_plugin.evaluation import write_report

    result = {
        "ablation": "mean",
        "dataset": HOSTILE,
        "circuit": {"n_nodes": 1, "faithfulness": 0.5, "completeness": 0.0},
        "points": [{"node_threshold": 0.1, "n_nodes": 1, "faithfulness": 0.5, "completeness": 0.0}],
    }
    write_report(result, tmp / "f", title=HOSTILE + " $\\frac{1}{$")  # "$" from data is no mathtext either
    return (tmp / "f" / "faithfulness.json").read_text()


def _links_http_only(text: str) -> bool:
    return all(u.startswith(("http://", "https://")) for u in re.findall(r'(?:href|URL)="([^"]*)"', text))


def _graph_holds(text: str) -> bool:
    graph, index = (json.loads(part) for part in text.split("\0"))  # the graph is data: labels kept as they are
    assert index["graphs"][0]["slug"] == "g"
    return "javascript:" not in text and HOSTILE in {n["clerp"] for n in graph["nodes"]}


OUTPUTS = [  # (format, writer, what must hold of the text it writes)
    (
        "dot",
        _dot,
        lambda t: (
            _links_http_only(t)
            and 'URL="https://example.org/f?a=1&amp;b=2"' in t
            and 'URL="https://example.org/%22%20onload=%22alert(1)"' in t
            and "javascript:" not in t
        ),
    ),
    (
        "svg",
        _svg,
        lambda t: (
            "<img" not in t
            and "javascript:" not in t
            and "onload" not in t.replace("onload=%22", "")
            and _links_http_only(t)
            and "&lt;/script&gt;&lt;img" in t
            and 'href="https://example.org/f?a=1&amp;b=2"' in t
            and ElementTree.fromstring(t.encode()) is not None
        ),
    ),  # well-formed XML
    (
        "viewer data.js",
        _viewer,
        lambda t: (
            "<" not in t
            and "javascript:" not in t
            and {n["label"] for n in json.loads(t[len("window.SFC_VIEW = ") : -2])["nodes"]} >= {HOSTILE}
        ),
    ),
    ("circuit-tracer graph", _graph, _graph_holds),
    ("clusters page", _clusters_page, lambda t: "<img" not in t and "</script>" not in t and "&lt;img src=x" in t),
    ("faithfulness report", _faithfulness, lambda t: json.loads(t)["dataset"] == HOSTILE),
]


@pytest.mark.parametrize("name, writer, holds", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_hostile_text_and_links_through_every_format(hostile_circuit, tmp_path, name, writer, holds):
    text = writer(hostile_circuit, tmp_path)
    assert holds(text), text[:2000]


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in strict JSON")

    return json.loads(text, parse_constant=refuse)


NAN = float("nan")


def _nan_circuit(world):
    from sfc_plugin.circuit import Circuit

    circuit = Circuit.from_json(world / "found" / "circuit.json")
    circuit.provenance["note"] = {"x": [1.0, NAN]}
    return circuit


def _write_faithfulness(world, tmp):
    from sfc_plugin.evaluation import write_report

    write_report(
        {
            "ablation": "mean",
            "circuit": {"n_nodes": 1, "faithfulness": NAN, "completeness": float("inf")},
            "points": [{"node_threshold": 0.1, "n_nodes": 1, "faithfulness": NAN, "completeness": 0.0}],
        },
        tmp,
    )


def _write_dashboards(world, tmp):
    from sfc_plugin.dashboards import write_dashboards

    write_dashboards({"schema": "sfc-dashboards/1", "features": {"resid_0/1": {"max": NAN}}}, tmp)


def _write_site(world, tmp):
    from sfc_plugin.viewer import build_site

    circuit = _nan_circuit(world)
    circuit.nodes[1].effect = NAN
    build_site(circuit, tmp)


def _write_graph(world, tmp):
    from sfc_plugin.export.neuronpedia import export_neuronpedia

    circuit = _nan_circuit(world)
    circuit.provenance["prompt"]["answer_prob"] = NAN  # reaches the logit node's clerp and probability
    export_neuronpedia(circuit, tmp / "g.json")


def _write_bench(world, tmp):
    from sfc_plugin.bench import write_json

    write_json([{"name": "toy", "ours_s": NAN, "ratio": float("inf")}], tmp)


def _write_template(world, tmp):
    from sfc_plugin.shifting.cards import write_template
    from sfc_plugin.shifting.records import FeatureInfo

    write_template(
        tmp / "decisions.json", [FeatureInfo("resid_0/1", "resid_0", 1, NAN)], {"resid_0/1": ("label", "evidence")}
    )


def _write_edit(world, tmp):
    from sfc_plugin.shifting.edit import FeatureEdit

    FeatureEdit({}, provenance={"n": NAN}).to_json(tmp / "edit.json")


def _write_clusters(world, tmp):
    from sfc_plugin.clusters.pipeline import write_json

    write_json(tmp / "clusters.json", {"clusters": [{"score": NAN}]})


WRITERS = [  # (JSON file, its writer given a NaN-bearing object, how the NaN must appear)
    (
        "faithfulness.json",
        _write_faithfulness,
        lambda d: d["circuit"]["faithfulness"] is None and d["circuit"]["completeness"] is None,
    ),
    ("dashboards.json", _write_dashboards, lambda d: d["features"]["resid_0/1"]["max"] is None),
    ("data.js", _write_site, lambda d: d["nodes"][1]["effect"] is None),  # the page draws a null effect grey
    ("g.json", _write_graph, lambda d: [n["token_prob"] for n in d["nodes"] if n["feature_type"] == "logit"] == [None]),
    ("bench.json", _write_bench, lambda d: d["workloads"][0]["ours_s"] is None and d["workloads"][0]["ratio"] is None),
    ("decisions.json", _write_template, lambda d: d[0]["effect"] is None),
    ("edit.json", _write_edit, lambda d: d["provenance"]["n"] is None),
    ("clusters.json", _write_clusters, lambda d: d["clusters"][0]["score"] is None),
]


@pytest.mark.parametrize("filename, write_it, check", WRITERS, ids=[w[0] for w in WRITERS])
def test_nan_reaching_a_json_writer_gives_strict_json(world, tmp_path, filename, write_it, check):
    write_it(world, tmp_path)
    text = (tmp_path / filename).read_text()
    if filename.endswith(".js"):
        text = text[len("window.SFC_VIEW = ") : -2]
    assert check(_strict(text))


def test_nan_in_a_circuit_is_one_line_naming_the_field(world):
    from sfc_plugin.circuit import Circuit

    circuit = Circuit.from_json(world / "found" / "circuit.json")
    feats = [i for i, n in enumerate(circuit.nodes) if n.kind == "feature"]
    circuit.nodes[feats[0]].effect = NAN
    with pytest.raises(SFCError, match=rf"^circuit: nodes\[{feats[0]}\]\.effect is nan, not a finite number$"):
        circuit.to_json()


def test_edit_report_force_is_recorded_and_old_edits_say_unchecked(world, tmp_path, capsys):
    text = write(tmp_path, "text.txt", "".join(r["clean_prefix"] + r["clean_answer"] + "\n" for r in make_records(6)))
    common = ["--text", text, "--agreement-data", world / "pairs.jsonl", "--circuit", "none"]
    edit = saved_edit(world, tmp_path)
    code, out, err = cli(
        capsys, ["edit-report", edit, "--sae", other_saes(tmp_path), "--force", *common, "-o", tmp_path / "r"]
    )
    assert code == 0, err
    assert err.startswith("sfc: warning: --force: SAE at hook 'blocks.0.hook_resid_post' has other weights")
    check = json.loads((tmp_path / "r" / "edit-report.json").read_text())["provenance_check"]
    assert check["status"] == "forced" and len(check["mismatches"]) == 1  # only the edited hook matters
    old = json.loads(edit.read_text())
    old.pop("provenance")
    old_path = write(tmp_path, "old.json", json.dumps(old))
    code, out, err = cli(
        capsys,
        ["edit-report", old_path, "--model", world / "model", "--sae", world / "saes", *common, "-o", tmp_path / "r2"],
    )
    assert code == 0, err
    assert "model and SAEs: unchecked (the edit records no provenance) — nothing was checked" in out
    assert json.loads((tmp_path / "r2" / "edit-report.json").read_text())["provenance_check"]["status"].startswith(
        "unchecked"
    )
