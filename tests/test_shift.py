"""SHIFT on the toy world's biographies: the paper's qualitative result without labels, the labelled
skyline beside it, what every row used, and side effects recomputed by hand."""

from __future__ import annotations

import pytest
import torch

import sfc_plugin
from sfc_plugin import toy
from sfc_plugin.shifting.judges import concept_judge, labelled_judge
from sfc_plugin.shifting.pipeline import ROWS, format_table, judge_context, shift
from sfc_plugin.shifting.probe import labelled, pooled, train_probe
from sfc_plugin.shifting.probe_attribution import attribute
from sfc_plugin.shifting.records import FeatureInfo, JudgeContext, Labelled
from sfc_plugin.shifting.side_effects import edit_features
from sfc_plugin.shifting.texts import toy_text
from sfc_plugin.splicing import build_submodules

TABLE = ("original", "shift", "shift_retrain", "shift_labelled", "shift_labelled_retrain", "random", "neuron_skyline",
         "feature_skyline", "oracle")


@pytest.fixture(scope="module")
def world():
    return toy.load()


@pytest.fixture(scope="module")
def bios():
    return {s: sfc_plugin.load_dataset("toy/bios", s) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def result(world, bios):
    model, saes = world
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
    assert all(f["judge"] == "concept:shipped:gender" and f["shift_labelled"]["judge"] == "labelled"
               for f in result["features"])


def test_uses_field_is_correct_for_every_row(result):
    concept = ["ambiguous_train", "concept_description", "unlabelled_text"]
    want = {"original": ["ambiguous_train"], "shift": concept, "shift_retrain": concept,
            "shift_labelled": ["ambiguous_train", "balanced_labels"],
            "shift_labelled_retrain": ["ambiguous_train", "balanced_labels"],
            "random": concept,  # its number of features comes from SHIFT
            "neuron_skyline": concept + ["balanced_labels"], "feature_skyline": concept + ["balanced_labels"],
            "oracle": ["balanced_labels"]}
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
    infos = [FeatureInfo(f["id"], f["id"].split("/")[0], int(f["id"].split("/")[1]), f["effect"]) for f in result["features"]]
    got = concept_judge(infos, JudgeContext(model, subs, scrambled, options, texts=val.batch))
    assert [(d.id, d.decision, d.note) for d in got] == [(f["id"], f["decision"], f["note"]) for f in result["features"]]


def test_side_effects_equal_a_direct_computation(world, result):
    from sfc_plugin.toy.builder import agreement_accuracy

    model, saes = world
    se = result["side_effects"]
    tokens = toy_text(model).tokens
    with torch.no_grad():
        plain = model(tokens, return_type="loss").item()
    assert se["original"]["loss"] == pytest.approx(plain, rel=1e-5)
    circuit = sfc_plugin.discover(model, saes, sfc_plugin.load_dataset("toy/sva-rc", "train")[:40], edges=False,
                                  progress=False)
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
    for name, edit, probe in (("original", None, result["probe"]), ("shift", result["edit"], result["probe"]),
                              ("shift_retrain", result["edit"], result["retrained_probe"])):
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
