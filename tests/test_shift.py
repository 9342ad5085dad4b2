"""SHIFT on the toy world's biographies: the paper's qualitative result without labels, the labelled
skyline beside it, what every row used, and side effects recomputed by hand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import sfc_plugin
from sfc_plugin import toy
from sfc_plugin.shifting.judges import concept_judge, labelled_judge
from sfc_plugin.shifting.pipeline import ROWS, format_table, judge_context, shift
from sfc_plugin.shifting.probe import labelled, pooled, train_probe
from sfc_plugin.shifting.probe_attribution import attribute
from sfc_plugin.shifting.records import FeatureInfo, JudgeContext, Labelled
from sfc_plugin.shifting.side_effects import edit_features, resolve_text
from sfc_plugin.splicing import build_submodules

TABLE = (
    "original",
    "shift",
    "shift_retrain",
    "shift_labelled",
    "shift_labelled_retrain",
    "random",
    "neuron_skyline",
    "feature_skyline",
    "oracle",
)


@pytest.fixture(scope="module")
def world():
    return toy.load()


@pytest.fixture(scope="module")
def bios():
    return {s: sfc_plugin.load_dataset("toy/bios", s) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def attributions():
    """(data, signs, neurons) of every attribution the ``result`` run made, in order."""
    return []


@pytest.fixture(scope="module")
def result(world, bios, attributions):
    from sfc_plugin.shifting import pipeline

    model, saes = world
    real = pipeline.attribute

    def recording(model, subs, data, hook, probe, signs, **kw):
        attributions.append((data, signs.clone(), kw.get("neurons", False)))
        return real(model, subs, data, hook, probe, signs, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "attribute", recording)
        return shift(model, saes, bios["train"], bios["test"], bios["val"], steps=4, progress=False)


def test_shift_removes_the_spurious_cue_without_labels(result):
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["name"] for r in result["rows"]] == list(TABLE) and set(ROWS) <= set(rows)
    original, shifted, retrained = rows["original"], rows["shift"], rows["shift_retrain"]
    assert original["worst_group_acc"] < original["profession_acc"] - 0.15  # the probe leans on gender
    assert shifted["worst_group_acc"] >= original["worst_group_acc"] + 0.20
    assert shifted["gender_acc"] < original["gender_acc"] - 0.10
    assert retrained["worst_group_acc"] >= original["worst_group_acc"] + 0.15
    assert abs(rows["random"]["worst_group_acc"] - original["worst_group_acc"]) < 0.1
    assert rows["shift_labelled"]["worst_group_acc"] >= original["worst_group_acc"] + 0.30  # the labelled skyline
    ablated = [f for f in result["features"] if f["decision"] == "ablate"]
    assert len(ablated) == result["n_ablated"] == len(result["edit"].to_dict()["features"]) > 0
    assert all(
        f["judge"] == "concept:shipped:gender" and f["shift_labelled"]["judge"] == "labelled"
        for f in result["features"]
    )


def test_each_probe_is_attributed_signed_by_its_own_label(result, attributions):
    """The profession probe's logit on the training set signed +1/−1 by profession; the skylines' gender probe on
    the balanced validation set signed by gender (neurons, then features), never by profession."""
    calls = []
    for data, signs, neurons in attributions:
        assert set(signs.tolist()) <= {-1.0, 1.0}
        calls.append((neurons, torch.equal(signs, 2 * data.y - 1), torch.equal(signs, 2 * data.z - 1)))
    assert len(calls) == 3 and calls[0][:2] == (False, True)
    assert calls[1:] == [(True, False, True), (False, False, True)]


def test_uses_field_is_correct_for_every_row(result):
    concept = ["ambiguous_train", "concept_description", "unlabelled_text"]
    want = {
        "original": ["ambiguous_train"],
        "shift": concept,
        "shift_retrain": concept,
        "shift_labelled": ["ambiguous_train", "balanced_labels"],
        "shift_labelled_retrain": ["ambiguous_train", "balanced_labels"],
        "random": concept,  # its number of features comes from SHIFT
        "neuron_skyline": concept + ["balanced_labels"],
        "feature_skyline": concept + ["balanced_labels"],
        "oracle": ["balanced_labels"],
    }
    assert {r["name"]: r["uses"] for r in result["rows"]} == want
    table = format_table(result).splitlines()
    assert table[1].endswith("train") and table[2].endswith("train + concept + unlabelled text")
    assert table[4].endswith("train + val labels") and table[-1].endswith("  val labels")


def test_concept_judge_never_sees_labels(world, bios, result):
    model, saes = world
    subs = {s.name: s for s in build_submodules(model, saes)}
    pos = (result["intended"][1], result["spurious"][1])
    val = labelled(model, bios["val"], "profession", "gender", pos, "cpu")
    options = {"concept": "gender"}
    assert judge_context(concept_judge, model, subs, val, options, val.batch).val is None
    assert judge_context(labelled_judge, model, subs, val, options, val.batch).val is val
    # handed labels anyway (scrambled and flipped), it decides exactly as in the run, which gave it none
    perm = torch.randperm(len(val.y), generator=torch.Generator().manual_seed(0))
    scrambled = Labelled(val.batch, 1 - val.y[perm], val.z[perm])
    infos = [
        FeatureInfo(f["id"], f["id"].split("/")[0], int(f["id"].split("/")[1]), f["effect"]) for f in result["features"]
    ]
    got = concept_judge(infos, JudgeContext(model, subs, scrambled, options, texts=val.batch))
    assert [(d.id, d.decision, d.note) for d in got] == [
        (f["id"], f["decision"], f["note"]) for f in result["features"]
    ]


def test_side_effects_equal_a_direct_computation(world, result):
    from sfc_plugin.toy.builder import agreement_accuracy

    model, saes = world
    se = result["side_effects"]
    tokens = resolve_text(model, None).tokens
    with torch.no_grad():
        plain = model(tokens, return_type="loss").item()
    assert se["original"]["loss"] == pytest.approx(plain, rel=1e-5)
    circuit = sfc_plugin.discover(
        model, saes, sfc_plugin.load_dataset("toy/sva-rc", "train")[:40], edges=False, progress=False
    )
    nodes = {n.id for n in circuit.nodes if n.kind == "feature"}
    assert set(se["edits"]) == {"shift", "shift_labelled", "random", "neuron_skyline", "feature_skyline"}
    assert "in_circuit" not in se["edits"]["neuron_skyline"]  # neurons are not circuit nodes
    for name in ("shift", "shift_labelled"):
        edit = result["edits"][name]
        with torch.no_grad(), edit.applied(model):
            edited = model(tokens, return_type="loss").item()
        got = se["edits"][name]
        assert got["loss_change"] == pytest.approx(edited - plain, rel=1e-4, abs=1e-6) and got["loss_change"] > 0
        for cond in toy.CONDITIONS:
            recs = sfc_plugin.load_dataset(f"toy/sva-{cond}", "test")
            assert got["agreement"][f"toy/sva-{cond}"] == pytest.approx(agreement_accuracy(model, recs, edit.hooks()))
        assert got["in_circuit_features"] == [f for f in edit_features(edit) if f in nodes]
        assert got["in_circuit"] == len(got["in_circuit_features"]) and got["n_features"] == len(edit_features(edit))


def test_table_rows_come_from_predictions(world, bios, result):
    model, saes = world
    pos = (result["intended"][1], result["spurious"][1])
    test = labelled(model, bios["test"], "profession", "gender", pos, "cpu")
    hook = result["probe_hook"]
    for name, edit, probe in (
        ("original", None, result["probe"]),
        ("shift", result["edit"], result["probe"]),
        ("shift_retrain", result["edit"], result["retrained_probe"]),
    ):
        with torch.no_grad():
            pred = (probe(pooled(model, test, hook, edit))[:, 0] > 0).float()
        groups = [(pred[(test.y == a) & (test.z == b)] == a).float().mean().item() for a in (0, 1) for b in (0, 1)]
        row = next(r for r in result["rows"] if r["name"] == name)
        assert row["profession_acc"] == pytest.approx((pred == test.y).float().mean().item())
        assert row["gender_acc"] == pytest.approx((pred == test.z).float().mean().item())
        assert row["worst_group_acc"] == pytest.approx(min(groups))


def test_probe_and_attribution_are_deterministic(world, bios):
    model, saes = world
    subs = [s for s in build_submodules(model, saes) if s.layer <= 2][:4]
    data = labelled(model, bios["train"][:24], "profession", "gender", ("professor", "male"), "cpu")
    hook = "blocks.2.hook_resid_post"
    X = pooled(model, data, hook)
    a, b = train_probe(X, data.y, seed=3), train_probe(X, data.y, seed=3)
    assert torch.equal(a.weight, b.weight)
    e1 = attribute(model, subs, data, hook, a, 2 * data.y - 1, steps=3, progress=False)
    e2 = attribute(model, subs, data, hook, b, 2 * data.y - 1, steps=3, progress=False)
    assert all(torch.equal(e1[k], e2[k]) for k in e1) and max(float(t.abs().max()) for t in e1.values()) > 0


# ---- the command: config, defaults, overlap, provenance, and edit-report reusing it ----


def _sfc(capsys, *argv):
    from sfc_plugin.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_shift_defaults_and_config(tmp_path):
    from sfc_plugin.cli import build_parser
    from sfc_plugin.commands.options import settings

    parse = build_parser().parse_args
    s = settings(parse(["shift"]), "shift")
    assert (s["data"], s["n_train"], s["n_eval"], s["top_k"], s["steps"], s["batch_size"], s["allow_overlap"]) == (
        "toy/bios",
        None,
        None,
        50,
        10,
        16,
        False,
    )  # whole splits: see the README on why not discover's 40
    assert s["prepend_bos"] is True and settings(parse(["shift", "--no-bos"]), "shift")["prepend_bos"] is False
    cfg = tmp_path / "run.toml"
    cfg.write_text("method = 'atp'\nmodel = 'm'\npreset = 'p'\nbatch-size = 4\nn_examples = 40\n")  # a discover config
    s = settings(parse(["shift", "--config", str(cfg), "--batch-size", "2"]), "shift")
    assert (s["model"], s["preset"], s["batch_size"], s["n_train"]) == ("m", "p", 2, None)  # shared keys only
    cfg.write_text("model = 'm'\n[shift]\nn_train = 48\ntop-k = 7\n")
    s = settings(parse(["shift", "--config", str(cfg)]), "shift")
    assert (s["model"], s["n_train"], s["top_k"]) == (None, 48, 7)  # a [shift] table is the whole story


def test_overlapping_splits_are_refused(bios):
    from sfc_plugin.commands.shift import check_overlap

    train, val, test = bios["train"][:20], bios["val"][:20], bios["test"][:20]
    check_overlap(train, {"val": val, "test": test}, "toy/bios")  # held out: accepted
    relabelled = dict(train[3], gender="other")  # the same text under other labels is the same example
    with pytest.raises(sfc_plugin.SFCError) as err:
        check_overlap(train, {"val": val, "test": test[:5] + [relabelled]}, "toy/bios")
    assert str(err.value) == (
        "1 of the 6 test examples of toy/bios are training examples (SHIFT finds its features "
        "and trains its probe on those): give held-out splits or pass --allow-overlap"
    )


def test_cli_shift_records_provenance_and_edit_report_reuses_it(world, tmp_path, capsys):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from sfc_plugin.commands.edit_report import recorded_text
    from sfc_plugin.fingerprints import model_fingerprint, sae_fingerprint

    model, saes = world
    cfg = tmp_path / "run.toml"
    cfg.write_text("[shift]\nn_train = 48\nn_eval = 24\nsteps = 1\ntop_k = 20\ncompare_judge = 'none'\n")
    code, out, err = _sfc(capsys, "shift", "--config", cfg, "--no-side-effects", "-q", "-o", tmp_path / "s")
    assert code == 0, err
    shift_json = json.loads((tmp_path / "s" / "shift.json").read_text())
    edit_json = json.loads((tmp_path / "s" / "edit.json").read_text())
    prov = shift_json["provenance"]
    assert edit_json["provenance"] == prov and "provenance" not in shift_json["edit"]
    assert (prov["dataset"], prov["splits"], prov["n_examples"], prov["model_source"]) == (
        "toy/bios",
        {"train": "train", "val": "val", "test": "test"},
        {"train": 48, "val": 24, "test": 24},
        "toy",
    )
    assert prov["model_fingerprint"] == model_fingerprint(model)  # as discover records them in circuit.json
    assert {s["hook"]: s["fingerprint"] for s in prov["saes"]} == {h: sae_fingerprint(sae) for h, sae in saes.items()}
    assert recorded_text(prov) == [r["text"] for r in sfc_plugin.load_dataset("toy/bios", "train")[:48]]

    report = ["edit-report", tmp_path / "s" / "edit.json", "--circuit", "none", "--agreement-data", "toy/sva-simple"]
    code, out, err = _sfc(capsys, *report, "-o", tmp_path / "r")  # no --model/--sae: the edit's world
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "edit-report.json").read_text())["provenance_check"] == {"status": "match"}
    assert "model and SAEs: match" in out

    hook = edit_json["hooks"][-1]  # an SAE whose features the edit ablates, with other weights
    pkg = Path(sfc_plugin.__file__).parent / "toy" / "artifacts"
    shutil.copytree(pkg / "saes", tmp_path / "saes")
    weights = tmp_path / "saes" / hook / "sae_weights.safetensors"
    state = load_file(str(weights))
    state["W_dec"][0, 0] += 0.5
    save_file(state, str(weights))
    other = [*report, "--model", pkg / "model", "--sae", tmp_path / "saes", "-o", tmp_path / "r2"]
    code, out, err = _sfc(capsys, *other)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.fullmatch(
        rf"sfc: error: SAE at hook '{re.escape(hook)}' has other weights than the edit's \(sha256 "
        r"[0-9a-f]{12} vs [0-9a-f]{12}\); pass force=True \(--force\) to use them anyway",
        err.strip(),
    )
    code, out, err = _sfc(capsys, *other, "--force")
    assert code == 0 and f"sfc: warning: --force: SAE at hook '{hook}'" in err
    check = json.loads((tmp_path / "r2" / "edit-report.json").read_text())["provenance_check"]
    assert check["status"] == "forced" and hook in check["mismatches"][0] and "model and SAEs: forced" in out
