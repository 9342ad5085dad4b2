"""SHIFT on the toy world's biographies: the paper's qualitative result, with numbers recomputed here."""

from __future__ import annotations

import pytest
import torch

import sfc_plugin
from sfc_plugin import toy
from sfc_plugin.shifting.pipeline import ROWS, shift
from sfc_plugin.shifting.probe import labelled, pooled, train_probe
from sfc_plugin.shifting.probe_attribution import attribute
from sfc_plugin.splicing import build_submodules


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


def test_shift_removes_the_spurious_cue(result):
    rows = {r["name"]: r for r in result["rows"]}
    assert [r["name"] for r in result["rows"]] == list(ROWS)
    original, shifted, retrained, oracle = rows["original"], rows["shift"], rows["shift_retrain"], rows["oracle"]
    assert original["worst_group_acc"] < original["profession_acc"] - 0.15  # the probe leans on gender
    assert shifted["worst_group_acc"] >= original["worst_group_acc"] + 0.30
    assert abs(shifted["gender_acc"] - 0.5) < 0.1
    assert retrained["worst_group_acc"] >= oracle["worst_group_acc"] - 0.15
    assert abs(rows["random"]["worst_group_acc"] - original["worst_group_acc"]) < 0.1
    ablated = [f for f in result["features"] if f["decision"] == "ablate"]
    assert len(ablated) == result["n_ablated"] == len(result["edit"].to_dict()["features"]) > 0
    assert all(f["judge"] == "auto" for f in result["features"])


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
