"""circuit-tracer graph files: the viewer's parse rules (fast, in Python), circuit-tracer's own schema when its
wheel is at hand, and the real viewer in headless Chromium (``.ci/run`` installs circuit-tracer's frontend, its
npm libraries and chromium; the browser test skips, saying which, only where one of them is missing)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.cli import main
from sfc_plugin.errors import SFCError
from sfc_plugin.export import export
from sfc_plugin.export.neuronpedia import cantor, circuit_to_neuronpedia

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("circuit_tracer_viewer", ROOT / "scripts" / "circuit_tracer_viewer.py")
viewer = importlib.util.module_from_spec(_spec)
sys.modules["circuit_tracer_viewer"] = viewer
_spec.loader.exec_module(viewer)

TOKENS = ["<bos>", "the", "cats", "near", "the", "dog"]
PROMPT = {
    "text": "the cats near the dog",
    "tokens": TOKENS,
    "token_ids": [0, 3, 6, 9, 3, 7],
    "answer": " are",
    "answer_id": 14,
    "answer_prob": 0.61,
    "patch_answer": " is",
    "patch_answer_id": 13,
    "patch_answer_prob": 0.2,
}


def node(sub, f, effect, pos=None):
    layer = -1 if sub == "embed" else int(sub.split("_")[1])
    nid = f"{sub}/{'err' if f is None else f}" + ("" if pos is None else f"@{pos}")
    return Node(nid, sub, f"hook.{sub}", layer, "error" if f is None else "feature", f, pos, effect)


def circuit(aggregation="sum", prompt=True) -> Circuit:
    """Every submodule kind, the same SAE index in several submodules of one layer, errors in each submodule."""
    p = (lambda q: q) if aggregation == "none" else (lambda q: None)
    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.5),
        node("embed", 3, 0.4, p(2)),
        node("embed", None, 0.1, p(2)),
        node("attn_0", 3, -0.7, p(2)),
        node("attn_0", None, 0.2, p(2)),
        node("mlp_0", 3, 0.9, p(2)),
        node("mlp_0", None, -0.3, p(2)),
        node("resid_0", 3, 1.2, p(5)),
        node("resid_0", None, 0.5, p(5)),
        node("attn_1", 8, 0.6, p(5)),
        node("resid_1", 3, -1.1, p(5)),
        node("resid_1", None, 0.25, p(5)),
    ]
    ids = [n.id for n in nodes]
    edges = [
        Edge(ids[1], ids[3], 0.3),
        Edge(ids[3], ids[5], -0.4),
        Edge(ids[5], ids[7], 0.8),
        Edge(ids[6], ids[7], 0.1),
        Edge(ids[7], ids[9], 0.5),
        Edge(ids[9], ids[10], -0.6),
        Edge(ids[8], ids[10], 0.2),
        Edge(ids[10], "y", -1.1),
        Edge(ids[11], "y", 0.25),
    ]
    prov = {"model": "tiny", "n_layers": 2, "saes": [{"submodule": "mlp_0", "hook": "hook.mlp_0"}]}
    if prompt:
        prov["prompt"] = dict(PROMPT, node_activations={ids[1]: 2.5, ids[7]: 0.75})
    return Circuit(nodes, edges, 1.5, "logit_diff", "ig", 10, aggregation, 0.1, 0.01, prov)


def _js_number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return math.nan  # JavaScript's +"n/a": NaN, no exception


def viewer_parse(graph: dict) -> list[str]:
    """The node ids circuit-tracer 0.5.0's viewer keeps, following ``formatData`` in its util-cg.js; raises where
    the viewer throws."""
    meta, nodes = graph["metadata"], graph["nodes"]
    threshold = meta.get("node_threshold")
    if threshold:  # pruning slider: influence <= threshold (JS: null <= x is true); embeddings and logits stay
        nodes = [d for d in nodes if d["feature_type"] in ("embedding", "logit") or (d["influence"] or 0) <= threshold]
    n_tok = len(meta["prompt_tokens"])
    groups: dict[str, list] = {}
    for d in nodes:
        if d["feature_type"] == "logit":  # +clerp.split('(p=')[1].split(')')[0]: a TypeError without "(p="
            assert "(p=" in d["clerp"], f"logit clerp {d['clerp']!r} lacks (p=…)"
            _js_number(d["clerp"].split("(p=")[1].split(")")[0])
        assert d["layer"] == "E" or math.isfinite(float(d["layer"])), d  # streamIdx (the row) must be a number
        assert 0 <= d["ctx_idx"] < n_tok, d
        fid = f"{d['layer']}_{d['feature']}_{d['ctx_idx']}"
        if "error" in d["feature_type"]:
            fid += f"__err_idx_{n_tok - d['ctx_idx']}"
        groups.setdefault(fid, []).append(d)
    kept = {d["node_id"] for g in groups.values() if len(g) <= n_tok * 2 / 3 for d in g}  # "very common" features go
    return [d["node_id"] for d in nodes if d["node_id"] in kept]


def test_parse_rules_reject_what_the_viewer_drops():
    """The Python port fails where the viewer fails: one-token prompts, thresholds below the influences, no (p=…)."""
    good = circuit_to_neuronpedia(circuit())
    assert len(viewer_parse(good)) == len(good["nodes"])
    one_token = json.loads(json.dumps(good))
    one_token["metadata"]["prompt_tokens"] = ["0"]
    for d in one_token["nodes"]:
        d["ctx_idx"] = 0
    assert viewer_parse(one_token) == []  # every feature is "present at more than 2/3 of the positions"
    low = json.loads(json.dumps(good))
    low["metadata"]["node_threshold"] = 0.1
    assert len(viewer_parse(low)) < len(good["nodes"])
    bad = json.loads(json.dumps(good))
    next(d for d in bad["nodes"] if d["feature_type"] == "logit")["clerp"] = "metric logit_diff"
    with pytest.raises(AssertionError, match="lacks"):
        viewer_parse(bad)


@pytest.mark.parametrize("aggregation", ["sum", "none"])
@pytest.mark.parametrize("prompt", [True, False])
def test_viewer_keeps_every_exported_node(aggregation, prompt):
    graph = circuit_to_neuronpedia(circuit(aggregation, prompt))
    assert viewer_parse(graph) == [d["node_id"] for d in graph["nodes"]]
    assert len({d["node_id"] for d in graph["nodes"]}) == len(graph["nodes"])
    ids = {d["node_id"] for d in graph["nodes"]}
    assert all(l["source"] in ids and l["target"] in ids for l in graph["links"])
    json.dumps(graph, allow_nan=False)


def test_mapping_follows_circuit_tracer_conventions():
    c = circuit("none")
    graph = circuit_to_neuronpedia(c, "g")
    meta, nodes = graph["metadata"], graph["nodes"]
    assert meta["prompt_tokens"] == TOKENS and meta["prompt"] == "the cats near the dog"
    assert meta["node_threshold"] == 1.0 and meta["sfc"]["node_threshold"] == 0.1
    by = {}
    for d in nodes:
        by.setdefault(d["feature_type"], []).append(d)
    # the prompt's tokens as embedding nodes with their vocabulary ids
    assert [(d["node_id"], d["layer"], d["feature"]) for d in by["embedding"]] == [
        (f"E_{v}_{p}", "E", p) for p, v in enumerate(PROMPT["token_ids"])
    ]
    # the logit: the clean answer's vocabulary id and probability, in the form the viewer parses
    (logit,) = by["logit"]
    assert logit["node_id"] == "3_14_5" and logit["feature"] == 14 and logit["layer"] == "3" and logit["ctx_idx"] == 5
    assert (
        logit["token_prob"] == 0.61
        and logit["is_target_logit"]
        and logit["clerp"].startswith('Output " are" (p=0.610)')
    )
    # features: model layers; the same SAE index in attn_0, mlp_0, resid_0 gets three distinct `feature`s
    feats = {d["clerp"]: d for d in by["cross layer transcoder"]}
    assert {feats[k]["layer"] for k in ("attn_0/3", "mlp_0/3", "resid_0/3")} == {"0"}
    assert [feats[k]["feature"] for k in ("attn_0/3", "mlp_0/3", "resid_0/3")] == [
        cantor(1, 3),
        cantor(2, 3),
        cantor(3, 3),
    ]
    assert feats["embed/3"]["layer"] == "-1" and feats["embed/3"]["feature"] == cantor(0, 3)
    assert feats["resid_1/3"]["feature"] == cantor(6, 3) and feats["mlp_0/3"]["node_id"] == f"0_{cantor(2, 3)}_2"
    assert feats["embed/3"]["activation"] == 2.5 and feats["resid_0/3"]["activation"] == 0.75
    assert feats["attn_1/8"]["activation"] is None
    # errors: one type per submodule kind; mlp errors keep circuit-tracer's id
    errors = {d["feature_type"] for t, ds in by.items() if "error" in t for d in ds}
    assert errors == {
        "embed reconstruction error",
        "attn reconstruction error",
        "mlp reconstruction error",
        "resid reconstruction error",
    }
    mlp_err = by["mlp reconstruction error"][0]
    assert mlp_err["node_id"] == "0_0_2" and mlp_err["feature"] == -1 and mlp_err["clerp"] == 'Err: mlp_0 "cats"'
    # influence: cumulative share of |effect|, largest first
    infl = {d["clerp"]: d["influence"] for d in nodes if d["influence"] is not None}
    assert infl["resid_0/3"] == pytest.approx(1.2 / 6.25) and max(infl.values()) == pytest.approx(1.0)


def test_summed_nodes_sit_at_the_last_position():
    graph = circuit_to_neuronpedia(circuit("sum"))
    body = [d for d in graph["nodes"] if d["feature_type"] != "embedding"]
    assert {d["ctx_idx"] for d in body} == {len(TOKENS) - 1}
    assert any(d["clerp"] == "Err: attn_0 (all positions)" for d in body)
    unknown = circuit_to_neuronpedia(circuit("sum", prompt=False))["metadata"]["prompt_tokens"]
    assert len(unknown) == 2  # a placeholder and the summed column: never a one-token prompt


def test_files_and_graph_metadata(tmp_path):
    c = circuit("none")
    export(c, tmp_path / "a.json", "circuit-tracer")
    export(circuit("sum"), tmp_path / "b.json", "neuronpedia")
    export(c, tmp_path / "a.json", "neuronpedia")  # re-export replaces its entry
    index = json.loads((tmp_path / "graph-metadata.json").read_text(encoding="utf-8"))
    assert [g["slug"] for g in index["graphs"]] == ["b", "a"]
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))["metadata"]["slug"] == "a"
    with pytest.raises(SFCError, match="end in .json"):
        export(c, tmp_path / "a.txt", "neuronpedia")
    with pytest.raises(SFCError, match="slug"):
        export(c, tmp_path / "c.json", "neuronpedia", slug="other")


def test_circuit_tracer_schema(tmp_path):
    """circuit-tracer's own pydantic models accept the file (its graph_models.py, loaded without the package)."""
    assets = viewer.assets_dir()
    if assets is None:
        pytest.skip("circuit-tracer is not installed (.ci/run puts it in .ci/vendor/circuit-tracer)")
    pytest.importorskip("pydantic")
    spec = importlib.util.spec_from_file_location("ct_graph_models", assets.parent / "graph_models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    for agg in ("sum", "none"):
        graph = circuit_to_neuronpedia(circuit(agg))
        parsed = models.Model(**graph)
        assert len(parsed.nodes) == len(graph["nodes"])
        for d in graph["nodes"]:  # circuit-tracer's own feature ids are Cantor pairs too
            if d["feature_type"] == "cross layer transcoder" and d["layer"] != "-1":
                assert isinstance(d["feature"], int)
        assert models._cantor_pairing(2, 3) == cantor(2, 3)


def test_cli_alias_and_default_name(tmp_path, capsys):
    path = tmp_path / "circuit.json"
    circuit("sum").to_json(path)
    assert main(["export", str(path), "--format", "circuit-tracer"]) == 0
    assert (tmp_path / "circuit.neuronpedia.json").is_file() and (tmp_path / "graph-metadata.json").is_file()
    graph = json.loads((tmp_path / "circuit.neuronpedia.json").read_text(encoding="utf-8"))
    assert graph["metadata"]["slug"] == "circuit.neuronpedia"
    assert "wrote" in capsys.readouterr().out


# --- the real viewer ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def discovered(tmp_path_factory):
    """Circuits discovered on the tiny test world, summed and per position, exported for the viewer."""
    from conftest import all_hooks, make_model, make_records, make_saes, make_tokenizer

    from sfc_plugin import discover

    tmp = tmp_path_factory.mktemp("viewer")
    tok = make_tokenizer(tmp)
    model, saes = make_model(tok), make_saes(all_hooks(2))
    records = [r for r in make_records(12) if len(r["clean_prefix"].split()) == 6]  # equal lengths (per position)
    out = {}
    for agg in ("sum", "none"):
        c = discover(
            model,
            saes,
            records,
            method="atp",
            node_threshold=0.02,
            edge_threshold=0.002,
            aggregation=agg,
            progress=False,
        )
        export(c, tmp / f"toy-{agg}.json", "circuit-tracer")
        out[agg] = c
    return tmp, out


def test_discover_records_the_prompt(discovered):
    _, circuits = discovered
    prompt = circuits["sum"].provenance["prompt"]
    assert prompt["tokens"][1:] == prompt["text"].split() and len(prompt["token_ids"]) == len(prompt["tokens"])
    assert 0 < prompt["answer_prob"] < 1 and prompt["answer"].strip() in ("is", "are")
    feats = [n for n in circuits["none"].nodes if n.kind == "feature"]
    assert set(circuits["none"].provenance["prompt"]["node_activations"]) == {n.id for n in feats}


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_viewer_draws_every_node(discovered, aggregation):
    why = viewer.missing()
    if why:
        pytest.skip(why)
    graph_dir, circuits = discovered
    graph = json.loads((graph_dir / f"toy-{aggregation}.json").read_text(encoding="utf-8"))
    assert len(graph["nodes"]) > 20 and graph["links"]
    report = viewer.open_graph(graph_dir, f"toy-{aggregation}")
    assert report["errors"] == []
    assert sorted(report["drawn"]) == sorted(d["node_id"] for d in graph["nodes"])
    assert report["title"] == f"Attribution Graph: {circuits[aggregation].provenance['prompt']['text']}"


def test_the_logit_node_sits_one_row_past_the_last_layer():
    """circuit-tracer's logit row is ``n_layers + 1``; a circuit that does not record ``n_layers`` takes the layer
    count from its deepest node (``resid_1``: two layers, so row 3)."""

    def logit_layer(c):
        return next(d for d in circuit_to_neuronpedia(c)["nodes"] if d["feature_type"] == "logit")["layer"]

    c = circuit()
    assert logit_layer(c) == "3"
    c.provenance["n_layers"] = 5
    assert logit_layer(c) == "6"
    del c.provenance["n_layers"]
    assert logit_layer(c) == "3"
    # nothing but the metric node and no recorded n_layers: no layer is known, so zero layers, logit row 1
    empty = Circuit([c.nodes[0]], [], 1.5, "logit_diff", "ig", 10, "sum", 0.1, 0.01, {"prompt": dict(PROMPT)})
    assert logit_layer(empty) == "1"


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_each_submodules_error_node_follows_its_features(aggregation):
    """Nodes are listed in model order, and within a submodule and position its features come before its error
    node (circuit-tracer's files list error nodes after the features)."""
    graph = circuit_to_neuronpedia(circuit(aggregation))
    body = [d for d in graph["nodes"] if d["feature_type"] not in ("embedding", "logit")]
    subs = [d["clerp"].split()[1] if d["clerp"].startswith("Err: ") else d["clerp"].split("/")[0] for d in body]
    assert list(dict.fromkeys(subs)) == ["embed", "attn_0", "mlp_0", "resid_0", "attn_1", "resid_1"]
    for sub in set(subs):
        kinds = ["error" in d["feature_type"] for d, s in zip(body, subs) if s == sub]
        assert kinds == sorted(kinds), (sub, kinds)  # features (False) first, then the error (True)
    assert sum("error" in d["feature_type"] for d in body) == 5
