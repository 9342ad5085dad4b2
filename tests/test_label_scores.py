"""Scored automatic labels: each ``auto`` label's AUROC on held-out contexts, a wrong label near chance."""

from __future__ import annotations

import pytest

from sfc_plugin.dashboards.autolabel import LOW, clean, label_rule
from sfc_plugin.dashboards.labels import auto_label
from sfc_plugin.dashboards.scoring import score_contexts, summary

FEATURE = "resid_0/216"  # a toy-world feature of singular job nouns (its top contexts all fire on one of them)


def test_summary_is_the_activation_weighted_auroc():
    rule = {"tokens": ["a"], "after": None}
    # 10 firing tokens (4 predicted, carrying 60% of the activation), 90 silent (9 predicted)
    s = summary(4, 6, 9, 81, n_contexts=5, mass_hit=6.0, mass=10.0, rule=rule)
    assert (
        s["auroc"] == pytest.approx((1 + 0.6 - 0.1) / 2) and s["recall"] == 0.4 and s["precision"] == round(4 / 13, 4)
    )
    assert s["low"] is False and s["rule"] == "fires on 'a'"
    assert summary(0, 10, 0, 90, 5, 0.0, 10.0, rule)["auroc"] == 0.5  # predicts nothing: chance
    assert summary(0, 5, 0, 90, 5, 0.0, 1.0, rule)["low"] is None  # too few firings to flag
    assert summary(0, 0, 3, 90, 5, 0.0, 0.0, rule)["auroc"] is None  # never fires on held-out text
    assert score_contexts(10, 4) == [0, 2, 5, 7] and score_contexts(3, 8) == [0, 1, 2] and score_contexts(5, 0) == []


@pytest.fixture(scope="module")
def toy_dashboards():
    from sfc_plugin import dashboards
    from sfc_plugin.world import World

    world = World.load()
    return world, dashboards.compute_dashboards(world, [FEATURE], n_contexts=384, progress=False)


def test_auto_labels_carry_held_out_scores_and_a_wrong_label_scores_near_chance(toy_dashboards):
    from sfc_plugin.dashboards.scoring import label_score

    world, data = toy_dashboards
    rec = data["features"][FEATURE]
    scored = rec["auto_label"]
    assert scored["label"] == auto_label(rec) and scored["rule"].startswith("fires on")
    top = {c["context"] for c in rec["top"]}
    assert scored["n_contexts"] == 384 - len(top & set(score_contexts(384, 1024)))  # made-from contexts left out
    assert 0.0 <= scored["auroc"] <= 1.0 and isinstance(scored["low"], bool) and scored["n_firing"] > 50

    made_from = top | {c["context"] for b in rec["quantiles"] for c in b["contexts"]}
    kw = {"n_contexts": 384, "exclude": made_from}
    # the nouns it fires on in its dashboard contexts: a label naming the class
    nouns = sorted(
        {clean(c["tokens"][c["position"]]) for b in rec["quantiles"] for c in b["contexts"]}
        | {clean(c["tokens"][c["position"]]) for c in rec["top"]}
    )
    right = label_score(world, feature=FEATURE, rule={"tokens": nouns}, **kw)
    wrong = label_score(world, feature=FEATURE, rule={"tokens": ["near"]}, **kw)  # a preposition
    after = label_score(world, feature=FEATURE, rule={"tokens": [], "after": "near"}, **kw)
    assert abs(wrong["auroc"] - 0.5) < 0.03 and wrong["low"] is True
    assert abs(after["auroc"] - 0.5) < 0.1
    assert right["auroc"] > 0.65 and right["auroc"] > wrong["auroc"] + 0.15
    assert right["auroc"] > scored["auroc"]  # the two-token auto label covers less of the class
    assert LOW == 0.7


def test_auto_label_scores_reach_the_provider_figure_and_viewer(toy_dashboards):
    from sfc_plugin.circuit import Circuit, Edge, Node
    from sfc_plugin.export import apply_labels
    from sfc_plugin.viewer import site_data

    _, data = toy_dashboards
    rec = data["features"][FEATURE]
    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node(FEATURE, "resid_0", "blocks.0.hook_resid_post", 0, "feature", 216, None, 0.5),
    ]
    circuit = Circuit(nodes, [Edge(FEATURE, "y", 0.5)], 1.0, "logit_diff", "ig", 10, "sum", 0.1, 0.01, {})
    out = apply_labels(circuit, "auto", dashboards=data)
    info = out.provenance["node_info"][FEATURE]
    assert info["source"] == "auto" and info["score"] == rec["auto_label"]["auroc"]
    assert info["score_low"] == rec["auto_label"]["low"] and "label score: AUROC" in info["tooltip"]
    dot = out.to_dot()
    assert (f"⚠ score {info['score']:.2f}" in dot) == bool(info["score_low"])
    node = {n["id"]: n for n in site_data(circuit, data)["nodes"]}[FEATURE]  # unlabelled: the viewer's auto label
    assert node["label"] == auto_label(rec) and node["score"] == info["score"] and node["source"] == "auto"
    stale = {**rec, "auto_label": {**rec["auto_label"], "label": "something else"}}
    assert label_rule(stale) == label_rule(rec)
    relabelled = apply_labels(circuit, "auto", dashboards={**data, "features": {FEATURE: stale}})
    assert "score" not in relabelled.provenance["node_info"][FEATURE]  # a score of another label is not shown
