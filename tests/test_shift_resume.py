"""SHIFT at scale on the toy world: passes that resume after an interruption with the same result, a whole run
served from its cache, the memory budget that sizes the passes, and decisions files applied in full (the
authors' feature ids ship with the package)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_dictionary

import sfc_plugin
from sfc_plugin import toy
from sfc_plugin.errors import SFCError
from sfc_plugin.shifting.checkpoints import Checkpoints
from sfc_plugin.shifting.probe import labelled, pooled, train_probe
from sfc_plugin.shifting.probe_attribution import attribute
from sfc_plugin.splicing import build_submodules


@pytest.fixture(scope="module")
def world():
    return toy.load()


@pytest.fixture(scope="module")
def train(world):
    model, _ = world
    records = sfc_plugin.load_dataset("toy/bios", "train")[:40]
    return labelled(model, records, "profession", "gender", ("nurse", "female"), "cpu")


class Stop(Exception):
    pass


def interrupt_after(model, hook: str, n_calls: int):
    """A permanent hook that raises on its ``n_calls + 1``-th call (a run killed mid-pass)."""
    calls = {"n": 0}

    def fn(act, hook):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise Stop()
        return act

    model.add_hook(hook, fn, is_permanent=True)
    return calls


def test_pooled_resumes_where_it_stopped(world, train, tmp_path):
    model, _ = world
    hook = "blocks.2.hook_resid_post"
    want = pooled(model, train, hook, batch_size=8)
    store = Checkpoints(tmp_path, every_s=0)
    interrupt_after(model, "blocks.0.hook_resid_post", 3)
    try:
        with pytest.raises(Stop):
            pooled(model, train, hook, batch_size=8, store=store, key="k")
    finally:
        model.reset_hooks(including_permanent=True)
    assert (tmp_path / "pooled" / "k.partial.safetensors").is_file()
    calls = interrupt_after(model, "blocks.0.hook_resid_post", 10**6)
    try:
        got = pooled(model, train, hook, batch_size=8, store=Checkpoints(tmp_path), key="k")
    finally:
        model.reset_hooks(including_permanent=True)
    assert calls["n"] == 2  # 5 batches of 8: 3 were done
    assert torch.equal(got, want)
    assert (
        not (tmp_path / "pooled" / "k.partial.safetensors").exists()
        and (tmp_path / "pooled" / "k.safetensors").exists()
    )
    store = Checkpoints(tmp_path)
    assert torch.equal(pooled(model, train, hook, store=store, key="k"), want) and store.hits == {"pooled": 1}


def test_attribution_resumes_with_the_same_sums(world, train, tmp_path):
    model, saes = world
    subs = build_submodules(model, saes)
    hook = "blocks.2.hook_resid_post"
    probe = train_probe(pooled(model, train, hook), train.y)
    signs = 2 * train.y - 1
    kw = dict(steps=2, batch_size=8, progress=False)
    want = attribute(model, subs, train, hook, probe, signs, **kw)
    interrupt_after(model, "blocks.0.hook_resid_post", 7)  # 3 passes a batch: stopped in the third batch
    try:
        with pytest.raises(Stop):
            attribute(model, subs, train, hook, probe, signs, store=Checkpoints(tmp_path, every_s=0), key="a", **kw)
    finally:
        model.reset_hooks(including_permanent=True)
    assert json.loads((tmp_path / "attribution" / "a.partial.json").read_text()) == {"done": 16}
    store = Checkpoints(tmp_path, every_s=0)
    got = attribute(model, subs, train, hook, probe, signs, store=store, key="a", **kw)
    assert store.hits == {"attribution (partial)": 1}
    assert set(got) == set(want) and all(torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-7) for k in want)


def with_transcoders(saes: dict) -> dict:
    """The toy SAEs with transcoders in place of the MLP-output SAEs (three kinds, three read hooks)."""
    reads = {0: ("jumprelu_skip_transcoder", "blocks.0.hook_mlp_in"), 1: ("transcoder", "blocks.1.ln2.hook_normalized")}
    reads[2] = ("skip_transcoder", "blocks.2.hook_resid_mid")
    out = {h: sae for h, sae in saes.items() if "mlp_out" not in h}
    for layer, (kind, read) in reads.items():
        tc = make_dictionary(kind, read, d_in=64, d_sae=128, seed=layer, hook_out=f"blocks.{layer}.hook_mlp_out")
        with torch.no_grad():
            tc.b_enc.fill_(-1.0)  # toy activations are O(1) per dimension: a sparser code
        out[read] = tc.to(torch.float32)
    return out


@pytest.mark.parametrize("dictionaries", ["saes", "transcoders"])
def test_sparse_attribution_equals_the_dense_engine(world, train, dictionaries):
    """The sparse per-batch path (atp/ig) gives zero_ablation's effects (the dense reference), transcoder node
    sets (features read at the MLP's input, effects at its output) included."""
    from sfc_plugin.attribution.engine import zero_ablation
    from sfc_plugin.shifting.probe import pool

    model, saes = world
    subs = build_submodules(model, saes if dictionaries == "saes" else with_transcoders(saes))
    assert any(s.transcoder for s in subs) == (dictionaries == "transcoders")
    hook = "blocks.2.hook_resid_post"
    probe = train_probe(pooled(model, train, hook), train.y)
    data = train.head(8)
    signs = 2 * data.y - 1
    got = attribute(model, subs, data, hook, probe, signs, steps=3, batch_size=8, progress=False)

    def forward(tokens, fwd_hooks, batch):
        seen = {}
        model.run_with_hooks(
            tokens, fwd_hooks=fwd_hooks + [(hook, lambda a, hook: seen.setdefault("x", a))], stop_at_layer=3
        )
        return probe(pool(seen["x"], batch))[:, 0]

    metric = lambda out, b: out * signs.repeat(len(out) // len(signs))  # noqa: E731
    ref = zero_ablation(model, subs, data.batch, metric, "ig", steps=3, sum_examples=True, forward=forward).features
    for name in ref:
        torch.testing.assert_close(got[name], ref[name].float() / 8, rtol=1e-4, atol=1e-6)


def test_a_tiny_budget_sizes_the_passes_and_a_hopeless_one_says_so(world, train):
    from sfc_plugin.budget import MemoryBudget
    from sfc_plugin.shifting.probe import pooled_rows
    from sfc_plugin.shifting.probe_attribution import attribution_rows

    model, saes = world
    subs = build_submodules(model, saes)
    width = train.batch.clean.shape[1]
    big, small = MemoryBudget.resolve("4GB", model), MemoryBudget.resolve("2MB", model)
    assert pooled_rows(model, "blocks.2.hook_resid_post", width, None, big) == 64
    assert 1 <= pooled_rows(model, "blocks.2.hook_resid_post", width, None, small) < 64
    assert attribution_rows(model, subs, width, small, 16) < attribution_rows(model, subs, width, big, 16) == 16
    with pytest.raises(SFCError, match="max_memory 10.0 MB is too small: one probe-attribution row needs"):
        attribution_rows(model, subs, 4096, MemoryBudget.resolve("10MB", model), 16)


def test_decisions_files_are_applied_in_full_and_shipped(world, tmp_path):
    from sfc_plugin.presets import get_preset
    from sfc_plugin.shifting.judges import decisions_path, read_decisions, shipped_decisions

    model, saes = world
    bios = {s: sfc_plugin.load_dataset("toy/bios", s)[:24] for s in ("train", "val", "test")}
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "mlp_1/7", "decision": "ablate"}, {"id": "resid_0/3", "decision": "ablate"}]))
    kw = dict(steps=1, top_k=2, compare_judge=None, side_effects=False, progress=False, n_attribution=8)
    result = sfc_plugin.shift(
        model,
        saes,
        bios["train"],
        bios["test"],
        bios["val"],
        judge="file",
        judge_options={"decisions": str(path)},
        **kw,
    )
    ablated = sorted(f["id"] for f in result["features"] if f["decision"] == "ablate")
    assert ablated == ["mlp_1/7", "resid_0/3"] and len(result["features"]) == 4  # 2 ranked + 2 named by the file
    path.write_text(json.dumps([{"id": "resid_9/3", "decision": "ablate"}]))
    with pytest.raises(SFCError, match=r"judge 'shift' names feature 'resid_9/3', which is no feature of this run"):
        sfc_plugin.shift(
            model,
            saes,
            bios["train"],
            bios["test"],
            bios["val"],
            judge="file",
            judge_options={"decisions": str(path)},
            **kw,
        )

    assert shipped_decisions() == ["marks2024-gemma-2-2b", "marks2024-pythia-70m-deduped"]
    for name, preset, n in (
        ("marks2024-gemma-2-2b", "gemma-2-2b-sfc", 43),
        ("marks2024-pythia-70m-deduped", "pythia-70m-sfc", 55),
    ):
        table = read_decisions(decisions_path(name))
        p = get_preset(preset)
        subs = p.submodules()
        assert len(table) == n and set(table.values()) == {"ablate"}
        for fid in table:
            sub, j = fid.split("/")
            assert sub in subs and 0 <= int(j) < (16384 if "gemma" in name else 32768)
            assert sub == "embed" or int(sub.split("_")[1]) <= p.shift_layer
    assert decisions_path(str(path)) == str(path)  # an existing path is itself


def test_a_rerun_is_served_from_the_cache(tmp_path, capsys):
    from sfc_plugin.cli import main

    argv = ["shift", "--n-train", "32", "--n-eval", "16", "--steps", "1", "--top-k", "8", "--compare-judge", "none"]
    argv += ["--n-attribution", "16", "--max-memory", "1GB", "-o", str(tmp_path / "s")]
    assert main(argv) == 0
    first, _ = capsys.readouterr()
    shift_json = (tmp_path / "s" / "shift.json").read_text()
    cached = sorted(p.name for p in (tmp_path / "s" / "cache").rglob("*.json"))
    assert "resumed" not in first and any(n.endswith(".json") for n in cached)
    assert not any(".partial." in n for n in cached)  # finished passes leave no progress files
    assert main(argv) == 0  # the cache is the run's own: no --overwrite needed
    second, _ = capsys.readouterr()
    assert (tmp_path / "s" / "shift.json").read_text() == shift_json
    line = next(x for x in second.splitlines() if x.startswith("resumed from"))
    assert "attribution 3" in line and "pooled" in line and "side_effects" in line
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main([*argv[:-1], str(tmp_path / "other")]) == 2  # a foreign directory is still refused


def test_pooled_is_quiet_unless_asked_and_clears_its_bar(world, train, capsys):
    """No progress output by default; with ``progress`` a bar named by ``desc`` that is cleared when the pass ends
    (the terminal line is blank again, nothing left behind)."""
    model, _ = world
    hook = "blocks.0.hook_resid_post"
    quiet = pooled(model, train, hook, batch_size=16)
    assert capsys.readouterr().err == ""
    loud = pooled(model, train, hook, batch_size=16, progress=True, desc="pooling for the test")
    err = capsys.readouterr().err
    assert torch.equal(quiet, loud)
    assert "pooling for the test" in err
    assert "\n" not in err and err.rstrip("\r").split("\r")[-1].strip() == ""
