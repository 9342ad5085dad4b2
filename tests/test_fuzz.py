"""Seeded fuzzing of data files, circuit files and SAE directories through the CLI.

Every run must exit 0 or 2 (never a traceback), print at most one error line, and write only strict JSON.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import make_records, save_world

from sfc_plugin.cli import main

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
WEIRD = [None, True, -1, 0, 10**30, 1e308, -0.5, "", "x", "the <unk> cat", "\u202e\x00", [], {}, [1, "a"], {"a": None}]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("fuzz")
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
                "-o",
                str(d / "found"),
                "-q",
            ]
        )
        == 0
    )
    return d


def run(capsys, argv) -> int:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    _, err = capsys.readouterr()
    assert code in (0, 2), err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sfc: error: "), err
    return code


def strict(path: Path):
    def refuse(const):
        raise AssertionError(f"{path} holds {const}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    raw = bytearray(raw)
    op = rng.randrange(5)
    if op == 0 and raw:  # truncate
        return bytes(raw[: rng.randrange(len(raw))])
    if op == 1 and raw:  # flip bytes
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if op == 2:  # insert junk
        at = rng.randrange(len(raw) + 1)
        return bytes(raw[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + raw[at:])
    if op == 3 and raw:  # duplicate a slice
        a = rng.randrange(len(raw))
        return bytes(raw[:a] + raw[a : a + 50] + raw[a:])
    return bytes(raw.replace(b"0.", b"NaN", 1) if rng.random() < 0.5 else raw.replace(b"1", b"Infinity", 1))


def mutate_json(rng: random.Random, value):
    """Replace one randomly chosen value anywhere in the structure with a weird one (or drop a key)."""
    paths = []

    def walk(v, path):
        paths.append(path)
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + [k])
        elif isinstance(v, list):
            for i, x in enumerate(v[:20]):
                walk(x, path + [i])

    walk(value, [])
    path = rng.choice(paths[1:] or paths)
    if not path:
        return rng.choice(WEIRD)
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.2:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice(WEIRD)
    return value


def test_fuzz_data_files(world, tmp_path, capsys):
    rng = random.Random(11)
    clean = (world / "pairs.jsonl").read_bytes()
    for i in range(24):
        f = tmp_path / f"d{i}.jsonl"
        if i % 2:
            f.write_bytes(mutate_bytes(rng, clean))
        else:
            records = make_records(4)
            f.write_text("".join(json.dumps(r) + "\n" for r in mutate_json(rng, records)))
        out = tmp_path / f"o{i}"
        code = run(
            capsys,
            [
                "discover",
                "--model",
                world / "model",
                "--sae",
                world / "saes",
                "--data",
                f,
                "--method",
                "atp",
                "--node-threshold",
                "0.01",
                "-o",
                out,
                "-q",
            ],
        )
        if code == 0:
            strict(out / "circuit.json")


def test_fuzz_circuit_files(world, tmp_path, capsys):
    rng = random.Random(12)
    text = (world / "found" / "circuit.json").read_bytes()
    codes = []
    for i in range(40):
        f = tmp_path / f"c{i}.json"
        if i % 3 == 0:
            f.write_bytes(mutate_bytes(rng, text))
        else:
            f.write_text(json.dumps(mutate_json(rng, json.loads(text))))
        codes.append(run(capsys, ["export", f, "--format", "dot", "-o", tmp_path / f"c{i}.dot"]))
        if i % 8 == 0:
            code = run(
                capsys,
                [
                    "evaluate",
                    f,
                    "--model",
                    world / "model",
                    "--sae",
                    world / "saes",
                    "--data",
                    world / "pairs.jsonl",
                    "--n-thresholds",
                    2,
                    "--allow-overlap",
                    "-o",
                    tmp_path / f"e{i}",
                    "-q",
                ],
            )
            if code == 0:
                report = strict(tmp_path / f"e{i}" / "faithfulness.json")
                assert report["points"]
    assert 2 in codes  # the fuzzer does reach the error paths


def test_fuzz_sae_directories(world, tmp_path, capsys):
    rng = random.Random(13)
    codes = []
    for i in range(16):
        saes = tmp_path / f"s{i}"
        shutil.copytree(world / "saes", saes)
        target = saes / rng.choice(HOOKS)
        if i % 2:
            f = target / "sae_weights.safetensors"
            f.write_bytes(mutate_bytes(rng, f.read_bytes()))
        else:
            cfg = json.loads((target / "cfg.json").read_text())
            (target / "cfg.json").write_text(json.dumps(mutate_json(rng, cfg)))
        out = tmp_path / f"o{i}"
        codes.append(
            run(
                capsys,
                [
                    "discover",
                    "--model",
                    world / "model",
                    "--sae",
                    saes,
                    "--data",
                    world / "pairs.jsonl",
                    "--method",
                    "atp",
                    "--node-threshold",
                    "0.01",
                    "-o",
                    out,
                    "-q",
                ],
            )
        )
        if codes[-1] == 0:
            strict(out / "circuit.json")
    assert 2 in codes
