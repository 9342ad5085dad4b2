"""Graph export: DOT structure (pydot, no binary), rendering (with Graphviz), escaping, viewer JSON,
label providers and the ``sfc export`` command. Circuits are built directly; no model except for ``summary``."""

from __future__ import annotations

import json
import random
import shutil
import xml.etree.ElementTree as ET

import pydot
import pytest

from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.cli import main
from sfc_plugin.errors import SFCError
from sfc_plugin.export import apply_labels, export
from sfc_plugin.export.dot import circuit_to_dot, row_key
from sfc_plugin.export.render import render
from sfc_plugin.plugins import registry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot")  # pydot's own pyparsing calls
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
TRICKY = 'say "hi" <b> & c\\d &lt; ünï✓\nline two'


def feat(sub, f, effect, pos=None, label=None):
    layer = -1 if sub == "embed" else int(sub.split("_")[1])
    nid = f"{sub}/{f}" + ("" if pos is None else f"@{pos}")
    return Node(nid, sub, f"hook.{sub}", layer, "feature", f, pos, effect, label)


def err(sub, effect, pos=None):
    layer = -1 if sub == "embed" else int(sub.split("_")[1])
    return Node(
        f"{sub}/err" + ("" if pos is None else f"@{pos}"), sub, f"hook.{sub}", layer, "error", None, pos, effect
    )


def small(aggregation="sum", provenance=None) -> Circuit:
    pos = (lambda p: p) if aggregation == "none" else (lambda p: None)
    nodes = [
        Node("y", None, None, None, "metric", None, None, 2.0),
        feat("embed", 7, 0.3, pos(0)),
        feat("attn_0", 12, -0.8, pos(1)),
        err("attn_0", 0.15, pos(1)),
        feat("mlp_0", 3, 1.6, pos(1)),
        feat("resid_0", 40, -2.0, pos(2)),
        feat("resid_0", 5, 0.05, pos(2)),
        err("resid_0", 1.0, pos(2)),
    ]
    ids = [n.id for n in nodes]
    edges = [
        Edge(ids[1], ids[2], 0.5),
        Edge(ids[1], ids[4], -0.2),
        Edge(ids[2], ids[5], -1.0),
        Edge(ids[3], ids[5], 0.05),
        Edge(ids[4], ids[5], 0.9),
        Edge(ids[4], ids[7], -0.3),
        Edge(ids[5], "y", -2.0),
        Edge(ids[6], "y", 0.05),
        Edge(ids[7], "y", 1.0),
    ]
    return Circuit(nodes, edges, 2.0, "logit_diff", "ig", 10, aggregation, 0.01, 0.01, dict(provenance or {}))


def synthetic(n_nodes: int, n_edges: int, n_layers: int = 4, seed: int = 0) -> Circuit:
    """A random layered circuit (the same generator as benchmarks/bench_export.py, smaller)."""
    rng = random.Random(seed)
    subs = ["embed"] + [f"{k}_{l}" for l in range(n_layers) for k in ("attn", "mlp", "resid")]
    nodes, by_sub = [Node("y", None, None, None, "metric", None, None, 1.0)], {}
    while len(nodes) <= n_nodes:
        s = subs[len(nodes) % len(subs)]
        f = rng.randrange(30000)
        if any(n.id == f"{s}/{f}" for n in by_sub.get(s, [])):
            continue
        n = feat(s, f, rng.choice([-1, 1]) * rng.uniform(0.1, 3))
        nodes.append(n)
        by_sub.setdefault(s, []).append(n)
    edges, seen = [], set()
    while len(edges) < n_edges:
        i = rng.randrange(len(subs) - 1)
        u, d = rng.choice(by_sub[subs[i]]), rng.choice(by_sub[subs[min(len(subs) - 1, i + rng.choice([1, 1, 2]))]])
        if (u.id, d.id) not in seen:
            seen.add((u.id, d.id))
            edges.append(Edge(u.id, d.id, rng.choice([-1, 1]) * rng.uniform(0.02, 1)))
    edges += [Edge(n.id, "y", n.effect) for n in by_sub[subs[-1]]]
    return Circuit(nodes, edges, 1.0, "logit_diff", "ig", 10, "sum", 0.1, 0.01, {})


def parse(dot_text: str) -> pydot.Dot:
    graphs = pydot.graph_from_dot_data(dot_text)
    assert graphs and len(graphs) == 1
    return graphs[0]


def graph_attrs(g) -> dict:
    """Graph attributes, from ``graph [...]`` statements too (pydot keeps those as a node named graph)."""
    out = dict(g.get_attributes())
    for n in g.get_node("graph"):
        out.update(n.get_attributes())
    return out


def unq(s: str | None) -> str | None:
    return None if s is None else s[1:-1] if s.startswith('"') else s


def all_nodes(g) -> dict:
    out = {unq(n.get_name()): n for n in g.get_nodes()}
    for sub in g.get_subgraphs():
        out.update({unq(n.get_name()): n for n in sub.get_nodes()})
    return out


def all_edges(g) -> list:
    return g.get_edges() + [e for s in g.get_subgraphs() for e in s.get_edges()]


def hexcolor(s: str) -> tuple[int, int, int]:
    s = unq(s).lstrip("#")
    return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)


# --- DOT structure (no binary) ------------------------------------------------------------------


def test_registries_hold_builtins():
    assert {"dot", "svg", "png", "pdf", "json", "neuronpedia"} <= set(registry("exporter"))
    assert {"annotations", "summary", "neuronpedia"} <= set(registry("label_provider"))


def test_rows_ranks_shapes_and_colours():
    c = small()
    g = parse(c.to_dot())
    assert unq(graph_attrs(g)["rankdir"]) == "BT"
    rows = [s for s in g.get_subgraphs() if s.get("rank") == "same"]
    names = [unq(s.get_name()) for s in rows]
    assert names == ["row_embed", "row_attn_0", "row_mlp_0", "row_resid_0", "row_y"]  # bottom → top, y last
    members = {unq(s.get_name()): {unq(n.get_name()) for n in s.get_nodes()} for s in rows}
    assert members["row_resid_0"] == {"row:resid_0", "resid_0/40", "resid_0/5", "resid_0/err"}
    assert "y" in members["row_y"]
    nodes = all_nodes(g)
    assert nodes["attn_0/err"].get("shape") == "triangle" and nodes["attn_0/12"].get("shape") == "box"
    assert nodes["y"].get("shape") == "ellipse"
    r, gg, b = hexcolor(nodes["mlp_0/3"].get("fillcolor"))  # positive: blue
    assert b > r and b > gg
    r, gg, b = hexcolor(nodes["resid_0/40"].get("fillcolor"))  # negative, the largest |effect|: full red
    assert r > b and r > gg
    assert hexcolor(nodes["resid_0/5"].get("fillcolor"))[1] > 240  # near zero: near white
    spine = [
        e
        for e in all_edges(g)
        if unq(e.get_source()).startswith("row:") and unq(e.get_destination()).startswith("row:")
    ]
    assert [unq(e.get_source()) for e in spine] == ["row:embed", "row:attn_0", "row:mlp_0", "row:resid_0"]
    visible = {(unq(e.get_source()), unq(e.get_destination())): e for e in all_edges(g) if e.get("style") != "invis"}
    assert len(visible) == len(c.edges)
    pos, neg = visible[("embed/7", "attn_0/12")], visible[("attn_0/12", "resid_0/40")]
    assert hexcolor(pos.get("color"))[2] > hexcolor(pos.get("color"))[0]
    assert hexcolor(neg.get("color"))[0] > hexcolor(neg.get("color"))[2]
    assert float(neg.get("penwidth")) > float(pos.get("penwidth"))  # |−1.0| > |0.5|


def test_index_order_pins_features_by_index():
    g = parse(circuit_to_dot(small(), order="index"))
    chain = [
        e for e in all_edges(g) if unq(e.get_source()) == "row:resid_0" or unq(e.get_source()).startswith("resid_0/")
    ]
    order = ["row:resid_0"] + [
        unq(e.get_destination())
        for e in chain
        if e.get("style") == "invis" and not unq(e.get_destination()).startswith("row:")
    ]
    assert order[:4] == ["row:resid_0", "resid_0/5", "resid_0/40", "resid_0/err"]
    with pytest.raises(SFCError):
        circuit_to_dot(small(), order="random")


def _bottleneck(node: str, edges: list, sink: str = "y") -> float:
    """The widest path's width from ``node`` to ``sink``, found independently of :mod:`sfc_plugin.paths`: the
    largest edge weight w such that ``sink`` is reachable over edges with |weight| >= w (0 when unreachable)."""
    for w in sorted({abs(e.weight) for e in edges}, reverse=True):
        seen, stack = {node}, [node]
        while stack:
            u = stack.pop()
            for e in edges:
                if e.source == u and abs(e.weight) >= w and e.target not in seen:
                    seen.add(e.target)
                    stack.append(e.target)
        if sink in seen:
            return w
    return 0.0


def test_max_edges_keeps_each_nodes_strongest_path_to_the_metric():
    c = synthetic(60, 400)
    by_key = {(e.source, e.target): e for e in c.edges}
    edge_key = lambda e: (unq(e.get_source()), unq(e.get_destination()))  # noqa: E731
    text = circuit_to_dot(c, max_edges=120)
    g = parse(text)
    shown = [by_key[edge_key(e)] for e in all_edges(g) if e.get("style") != "invis"]
    label = unq(graph_attrs(g)["label"])
    assert len(shown) == 120 and f"120 of {len(c.edges)} edges: each node's strongest path to y" in label
    legend = next(line for line in text.splitlines() if line.strip().startswith('"legend"'))
    assert f"edges: 120 of {len(c.edges)} shown:" in legend and "each node's strongest path to y" in legend
    for n in c.nodes:  # every node that reaches y keeps a path in the figure as wide as its widest in the circuit
        if n.kind != "metric":
            assert _bottleneck(n.id, shown) == pytest.approx(_bottleneck(n.id, c.edges)), n.id
    rest = sorted(c.edges, key=lambda e: -abs(e.weight))
    assert rest[0] in shown  # then the strongest
    # a budget below the paths: whole paths of the strongest nodes first, never more edges than asked
    g = parse(circuit_to_dot(c, max_edges=10))
    shown = [by_key[edge_key(e)] for e in all_edges(g) if e.get("style") != "invis"]
    strongest = max((n for n in c.nodes if n.kind != "metric"), key=lambda n: abs(n.effect))
    assert len(shown) == 10 and _bottleneck(strongest.id, shown) == pytest.approx(_bottleneck(strongest.id, c.edges))
    assert circuit_to_dot(c) == c.to_dot() and "strongest path" not in c.to_dot()  # DOT text keeps every edge
    g = parse(circuit_to_dot(c, max_edges="auto"))
    auto = [e for e in all_edges(g) if e.get("style") != "invis"]
    nodes = [n for n in all_nodes(g) if "/" in n or n == "y"]  # nodes without edges are left out
    assert len(auto) == min(len(c.edges), max(150, 3 * len(nodes)))


def test_per_position_figures_keep_the_cross_position_path():
    """The paper's per-position picture: number read at the subject, moved by attention to the last token. The
    cross-position edge is far weaker than the edges within positions but is the only way to the metric."""
    nodes = [Node("y", None, None, None, "metric", None, None, 1.0)]
    edges = []

    def node(sub, f, pos, effect):
        layer = -1 if sub == "embed" else int(sub.split("_")[1])
        nodes.append(Node(f"{sub}/{f}@{pos}", sub, "h", layer, "feature", f, pos, effect))
        return nodes[-1].id

    subject = [node("embed", f, 2, 2.0 + f / 10) for f in range(6)]
    resid0 = [node("resid_0", f, 2, 2.0) for f in range(6)]
    edges += [Edge(u, d, 1.0 + (i + j) / 100) for i, u in enumerate(subject) for j, d in enumerate(resid0)]
    attn = node("attn_1", 7, 6, 0.5)
    out = node("resid_1", 3, 6, 0.6)
    edges += [Edge(resid0[0], attn, 0.03), Edge(attn, out, 0.4), Edge(out, "y", 0.6)]
    c = Circuit(nodes, edges, 1.0, "logit_diff", "ig", 10, "none", 0.1, 0.01, {"tokens": list("abcdefg")})
    g = parse(circuit_to_dot(c, max_edges=len(nodes)))  # a budget of one edge per node: far below the 36 strong ones
    shown = {(unq(e.get_source()), unq(e.get_destination())) for e in all_edges(g) if e.get("style") != "invis"}
    assert (resid0[0], attn) in shown and (attn, out) in shown and (out, "y") in shown
    assert all(any(s == u for s, _ in shown) for u in subject)  # every subject feature keeps its way up


def test_row_key_orders_submodules():
    subs = ["resid_1", "embed", "mlp_0", "attn_1", "resid_0", "attn_0", "mlp_10", "mlp_2", "custom"]
    assert sorted(subs, key=row_key) == [
        "embed",
        "attn_0",
        "mlp_0",
        "resid_0",
        "attn_1",
        "resid_1",
        "mlp_2",
        "mlp_10",
        "custom",
    ]


def test_deterministic_output():
    a = synthetic(80, 200)
    b = Circuit.from_dict(json.loads(a.to_json()))
    b.nodes.reverse()
    b.edges.reverse()
    assert a.to_dot() == b.to_dot() == a.to_dot()
    assert circuit_to_dot(small("none")) == circuit_to_dot(small("none"))


def test_position_grid_layout():
    c = small("none", {"tokens": ["The", " cats", " are"]})
    g = parse(c.to_dot())
    assert unq(graph_attrs(g)["layout"]) == "neato"
    nodes = all_nodes(g)

    def xy(nid):
        x, y = unq(nodes[nid].get("pos")).rstrip("!").split(",")
        return float(x), float(y)

    for p, tok in enumerate(["The", " cats", " are"]):
        assert unq(nodes[f"tok:{p}"].get("label")).startswith(tok)
    cols = {p: [xy(n.id)[0] for n in c.nodes if n.position == p] for p in range(3)}
    assert max(cols[0]) < min(cols[1]) and max(cols[1]) < min(cols[2])  # columns in position order
    for p in range(3):  # tokens under their columns
        tx, ty = xy(f"tok:{p}")
        assert min(cols[p]) - 40 <= tx <= max(cols[p]) + 40
        assert ty < min(xy(n.id)[1] for n in c.nodes if n.kind != "metric")
    ys = [xy(n)[1] for n in ("embed/7@0", "attn_0/12@1", "mlp_0/3@1", "resid_0/40@2", "y")]
    assert ys == sorted(ys) and len(set(ys)) == 5  # embedding at the bottom, y on top
    assert xy("attn_0/12@1")[1] == xy("attn_0/err@1")[1]


def test_position_grid_without_tokens_shows_numbers():
    g = parse(small("none").to_dot())
    labels = {unq(n.get("label")) for name, n in all_nodes(g).items() if name.startswith("tok:")}
    assert labels == {"pos 0", "pos 1", "pos 2"}


def test_labels_escaped_in_dot():
    c = small()
    c.nodes[2].label = TRICKY
    c.nodes[2].id = 'attn_0/12:weird "id" \\ \n'
    c.edges[0].target = c.edges[2].source = c.nodes[2].id
    text = c.to_dot()
    assert "\n" not in text.split("attn_0/12:weird", 1)[1].split("]", 1)[0].replace("\\n", "")
    g = parse(text)
    node = all_nodes(g)['attn_0/12:weird \\"id\\" \\\\ \\n']
    label = unq(node.get("label"))
    assert '\\"hi\\"' in label and "&amp;" in label and "&amp;lt;" in label and "ünï✓" in label and "<b>" in label
    assert "\\\\d" in label
    weird = [e for e in all_edges(g) if "weird" in e.get_source() + e.get_destination() and e.get("style") != "invis"]
    assert len(weird) == 2


def test_ids_with_slash_and_colon():
    c = small()
    ids = {"embed/7": "embed/7:a/b", "attn_0/12": "attn_0/12::x"}
    for n in c.nodes:
        n.id = ids.get(n.id, n.id)
    for e in c.edges:
        e.source, e.target = ids.get(e.source, e.source), ids.get(e.target, e.target)
    g = parse(c.to_dot())
    assert {"embed/7:a/b", "attn_0/12::x"} <= set(all_nodes(g))
    assert ("embed/7:a/b", "attn_0/12::x") in {(unq(e.get_source()), unq(e.get_destination())) for e in all_edges(g)}


def test_neuronpedia_ids_come_only_from_entries_naming_a_submodule_and_an_id():
    """A result may record local SAEs (no id), entries without a submodule or entries that are not objects at all:
    only entries with both give an id, and the others are skipped rather than failing."""
    from sfc_plugin.export.neuronpedia import neuronpedia_ids

    saes = [
        {"submodule": "mlp_0", "neuronpedia_id": "gpt2-small/0-mlp"},
        {"submodule": "attn_0", "hook": "blocks.0.hook_z"},  # a local SAE: no id
        {"neuronpedia_id": "gpt2-small/0-res"},  # no submodule
        {"submodule": "resid_0", "neuronpedia_id": ""},
        "not an object",
    ]
    assert neuronpedia_ids(small(provenance={"saes": saes})) == {"mlp_0": "gpt2-small/0-mlp"}


def test_neuronpedia_links_in_dot():
    c = small(provenance={"saes": [{"submodule": "mlp_0", "hook": "hook.mlp_0", "neuronpedia_id": "gpt2-small/0-mlp"}]})
    labelled = apply_labels(c, "neuronpedia")
    assert c.provenance.get("node_info") is None  # apply_labels copies
    node = all_nodes(parse(labelled.to_dot()))["mlp_0/3"]
    assert unq(node.get("URL")) == "https://www.neuronpedia.org/gpt2-small/0-mlp/3"
    assert "Neuronpedia" in unq(node.get("tooltip"))
    assert all_nodes(parse(labelled.to_dot()))["attn_0/12"].get("URL") is None


# --- rendering (needs Graphviz) ---------------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF")])
def test_render_formats(tmp_path, fmt, magic):
    out = export(small(), tmp_path / f"c.{fmt}", fmt)
    assert out.read_bytes().startswith(magic)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@needs_dot
def test_render_grid_and_large_circuit(tmp_path):
    assert render(small("none", {"tokens": ["a", "<b>", "&"]}), "svg").startswith(b"<?xml")
    assert render(synthetic(100, 300), "png").startswith(b"\x89PNG")


@needs_dot
def test_large_circuit_figure_stays_readable():
    """A 450-node circuit: rows capped at 20, so the figure is a few thousand pixels wide, not ten thousand."""
    import struct

    png = render(synthetic(450, 2000, seed=3), "png")
    width, height = struct.unpack(">II", png[16:24])
    assert width < 3500 and height < 3000, (width, height)


@needs_dot
def test_tricky_labels_render_escaped_svg():
    c = apply_labels(small(provenance={"saes": [{"submodule": "attn_0", "neuronpedia_id": "m/1-att"}]}), "neuronpedia")
    c.nodes[2].label = TRICKY
    c.nodes[2].id = "attn_0/12:x"
    c.edges[0].target = c.edges[2].source = "attn_0/12:x"
    c.provenance["node_info"]["attn_0/12:x"] = c.provenance["node_info"].pop("attn_0/12")
    root = ET.fromstring(render(c, "svg"))  # well-formed XML
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert 'say "hi" <b> & c\\d' in texts  # first wrapped line, literal characters
    assert any(t and t.startswith("&lt; ünï✓") for t in texts)  # "&lt;" stays literal text
    titles = [a.get(f"{XLINK}title") for a in root.iter(f"{SVG}a")]
    assert any(t and TRICKY in t for t in titles)  # full label in the tooltip
    assert "https://www.neuronpedia.org/m/1-att/12" in [a.get(f"{XLINK}href") for a in root.iter(f"{SVG}a")]


@needs_dot
def test_repr_mimebundle_shows_summary_and_pruned_figure():
    c = synthetic(450, 2000)
    bundle = c._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"} and bundle["text/plain"] == c.summary()
    page = bundle["text/html"]
    assert page.startswith("<pre>nodes: 450") and "<svg" in page and "<?xml" not in page and "digraph" not in page
    assert "+" in page and "more" in page and "showing" in page  # rows capped, the title says so
    drawn = page.count('class="node"')
    assert (
        drawn <= 13 * 20 + 13 + 13 + 3
    )  # 13 rows: 20 nodes a row, "+N more" markers, row names, y, its row name, legend
    assert repr(c).startswith("<Circuit logit_diff (ig, sum): 450 nodes, ") and len(repr(c)) < 120


# --- figures that scale ------------------------------------------------------------------------------------


def test_nodes_without_edges_left_out_unless_kept():
    c = small()
    c.nodes.append(feat("mlp_0", 99, 0.7))
    text = circuit_to_dot(c)
    assert '"mlp_0/99"' not in text and "showing 7 of 8 nodes (1 without edges hidden)" in unq(
        graph_attrs(parse(text))["label"]
    )
    assert '"mlp_0/99"' in circuit_to_dot(c, keep_isolated=True)
    no_edges = small()
    no_edges.edges = []
    assert '"mlp_0/3"' in circuit_to_dot(no_edges)  # a nodes-only circuit keeps its nodes


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_row_cap_keeps_the_strongest_with_a_marker(aggregation):
    c = synthetic(200, 900, seed=1)
    if aggregation == "none":
        for i, n in enumerate(c.nodes[1:]):
            n.position = i % 4
    g = parse(circuit_to_dot(c, max_nodes_per_row=5))
    nodes = all_nodes(g)
    for sub in {n.submodule for n in c.nodes if n.kind != "metric"}:
        row = sorted((n for n in c.nodes if n.submodule == sub), key=lambda n: -abs(n.effect))
        linked = {e.source for e in c.edges} | {e.target for e in c.edges}
        row = [n for n in row if n.id in linked]
        shown = [n for n in row if n.id in nodes]
        assert [n.id for n in shown] == [n.id for n in row[:5]] or {n.id for n in shown} == {n.id for n in row[:5]}
        head = unq(nodes[f"row:{sub}"].get("label"))
        assert head == (f"{sub}\\n+{len(row) - 5} more" if len(row) > 5 else sub)
    visible = [e for e in all_edges(g) if e.get("style") != "invis"]
    assert all(unq(e.get_source()) in nodes and unq(e.get_destination()) in nodes for e in visible)
    assert "top 5 per row by |effect|" in unq(graph_attrs(g)["label"])


def test_wrap_stacks_long_rows():
    c = synthetic(120, 300, n_layers=1, seed=2)
    g = parse(circuit_to_dot(c, wrap=8, keep_isolated=True))
    rows = [unq(s.get_name()) for s in g.get_subgraphs() if s.get("rank") == "same"]
    n_mlp = sum(n.submodule == "mlp_0" for n in c.nodes)
    assert rows.count("row_mlp_0") == 1 and sum(r.startswith("row_mlp_0_") for r in rows) == -(-n_mlp // 8) - 1
    sizes = [
        len([n for n in s.get_nodes() if "/" in unq(n.get_name())])
        for s in g.get_subgraphs()
        if unq(s.get_name()).startswith("row_mlp_0")
    ]
    assert max(sizes) <= 8 and sum(sizes) == n_mlp
    grid = small("none")
    for i in range(12):
        grid.nodes.append(feat("mlp_0", 100 + i, 0.2 + i / 100, 1))
        grid.edges.append(Edge(f"mlp_0/{100 + i}@1", "resid_0/40@2", 0.1))
    nodes = all_nodes(parse(circuit_to_dot(grid, wrap=4)))
    ys = {float(unq(nodes[f"mlp_0/{100 + i}@1"].get("pos")).split(",")[1].rstrip("!")) for i in range(12)}
    assert len(ys) == 4  # 13 nodes in one cell, four a line: four lines


def test_legend_and_sign_without_colour():
    c = small()
    g = parse(circuit_to_dot(c))
    legend = unq(all_nodes(g)["legend"].get("label"))
    for word in ("feature", "SAE error", "metric", "positive", "negative", "|weight|", "dashed"):
        assert word in legend
    assert "legend" not in all_nodes(parse(circuit_to_dot(c, legend=False)))
    visible = {(unq(e.get_source()), unq(e.get_destination())): e for e in all_edges(g) if e.get("style") != "invis"}
    assert visible[("attn_0/12", "resid_0/40")].get("style") == "dashed"  # negative
    assert visible[("embed/7", "attn_0/12")].get("style") is None
    assert "dashed" in unq(all_nodes(g)["resid_0/40"].get("style")) and all_nodes(g)["mlp_0/3"].get("style") is None


def _simulate(rgb_, kind):
    """Colour-vision deficiency on linear RGB (Machado et al. 2009, severity 1)."""
    m = {
        "protan": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
        "deutan": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
        "tritan": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
    }[kind]
    lin = [(c / 255) ** 2.2 for c in rgb_]
    return [max(0.0, min(1.0, sum(m[i][j] * lin[j] for j in range(3)))) ** (1 / 2.2) * 255 for i in range(3)]


def test_edge_colours_stay_apart_for_colour_blind_readers():
    from sfc_plugin.export.dot import NEG_RGB, POS_RGB

    for kind in ("protan", "deutan", "tritan"):
        p, n = _simulate(POS_RGB, kind), _simulate(NEG_RGB, kind)
        assert sum((a - b) ** 2 for a, b in zip(p, n)) ** 0.5 > 80, kind


def test_missing_binary(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(SFCError) as info:
        render(small(), "svg")
    msg = str(info.value)
    assert (
        "\n" not in msg
        and "apt-get install graphviz" in msg
        and "brew install graphviz" in msg
        and "--format dot" in msg
    )
    assert small()._repr_mimebundle_() == {"text/plain": small().summary()}
    path = tmp_path / "c.json"
    small().to_json(path)
    assert main(["export", str(path), "--format", "png", "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install graphviz" in err
    assert main(["export", str(path), "--format", "dot", "-o", str(tmp_path / "c.dot")]) == 0  # dot needs no binary


# --- circuit-tracer / Neuronpedia graph JSON -------------------------------------------------------

# (circuit-tracer graph files: tests/test_circuit_tracer.py)


# --- label providers ---------------------------------------------------------------------------------


def test_annotations_provider(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"Name": "resid_0/40", "Annotation": "plural nouns"}),
                json.dumps({"Name": "mlp_0/3", "Annotation": 'quote " & <tag>'}),
                json.dumps({"Name": "resid_9/1", "Annotation": "not in the circuit"}),
                "",
                json.dumps({"id": "attn_0/12@1", "label": "our id with position"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    c = apply_labels(small(), "annotations", path=path)
    assert c.node("resid_0/40").label == "plural nouns" and c.node("mlp_0/3").label == 'quote " & <tag>'
    assert c.node("embed/7").label is None and small().node("resid_0/40").label is None
    g = apply_labels(small("none"), "annotations", path=path)
    assert g.node("resid_0/40@2").label == "plural nouns"  # paper names match every position
    assert g.node("attn_0/12@1").label == "our id with position"
    path.write_text('{"Name": "x"}\n', encoding="utf-8")
    with pytest.raises(SFCError, match="line 1"):
        apply_labels(small(), "annotations", path=path)
    path.write_text("not json\n", encoding="utf-8")
    with pytest.raises(SFCError, match="line 1"):
        apply_labels(small(), "annotations", path=path)
    with pytest.raises(SFCError, match="does not exist"):
        apply_labels(small(), "annotations", path=tmp_path / "missing.jsonl")


def test_apply_labels_with_callable_and_unknown_name():
    c = apply_labels(
        small(), lambda circuit, **kw: {"embed/7": {"label": kw["prefix"] + "!", "tooltip": "tip"}}, prefix="hey"
    )
    assert c.node("embed/7").label == "hey!" and c.provenance["node_info"]["embed/7"] == {"tooltip": "tip"}
    with pytest.raises(SFCError, match="unknown label_provider"):
        apply_labels(small(), "nope")


def test_summary_provider(tokenizer):
    import torch
    from conftest import make_model, make_sae

    model = make_model(tokenizer)
    hook = "blocks.0.hook_resid_post"
    sae = make_sae(hook)
    texts = ["the big cats like the dog", "a dog that the cat likes is old", "the old dogs are near a cat"]
    with torch.no_grad():  # the features that fire most, found directly
        acts = [sae.encode(model.run_with_cache(model.to_tokens(t), names_filter=[hook])[1][hook][0]) for t in texts]
    total = torch.cat(acts).sum(0)
    f_on, f_off = int(total.argmax()), int(total.argmin())
    nodes = [
        Node("y", None, None, None, "metric", None, None, None),
        Node(f"resid_0/{f_on}", "resid_0", hook, 0, "feature", f_on, None, 0.5),
        Node(f"resid_0/{f_off}", "resid_0", hook, 0, "feature", f_off, None, -0.5),
    ]
    c = Circuit(nodes, [], None, "logprob", "ig", 10, "sum", 0.1, 0.01, {})
    out = apply_labels(c, "summary", model=model, saes={hook: sae}, texts=texts, k=3)
    best_t, best_p = max(
        ((ti, p) for ti in range(3) for p in range(acts[ti].shape[0])), key=lambda tp: acts[tp[0]][tp[1], f_on]
    )
    top_token = model.to_str_tokens(model.to_tokens(texts[best_t])[0])[best_p].strip()
    label = out.node(f"resid_0/{f_on}").label
    assert label.split(" · ")[0] == top_token
    assert "[" in out.provenance["node_info"][f"resid_0/{f_on}"]["tooltip"]
    if float(total[f_off]) == 0:
        assert out.node(f"resid_0/{f_off}").label == "(inactive on these texts)"
    with pytest.raises(SFCError, match="needs model"):
        apply_labels(c, "summary")


# --- sfc export ---------------------------------------------------------------------------------------


def test_cli_round_trip(tmp_path, capsys):
    path = tmp_path / "circuit.json"
    c = small()
    c.to_json(path)
    assert main(["export", str(path), "--format", "dot", "-o", str(tmp_path / "c.dot")]) == 0
    assert (tmp_path / "c.dot").read_text(encoding="utf-8") == Circuit.from_json(path).to_dot()
    assert main(["export", str(path), "-o", str(tmp_path / "same.json"), "--node-threshold", "0.5"]) == 0
    pruned = Circuit.from_json(tmp_path / "same.json")
    assert {n.id for n in pruned.nodes} == {"y", "attn_0/12", "mlp_0/3", "resid_0/40", "resid_0/err"}
    ann = tmp_path / "ann.jsonl"
    ann.write_text(json.dumps({"Name": "mlp_0/3", "Annotation": "verbs <&>"}) + "\n", encoding="utf-8")
    assert (
        main(["export", str(path), "--format", "neuronpedia", "-o", str(tmp_path / "g.json"), "--labels", str(ann)])
        == 0
    )
    graph = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert "verbs <&>" in {n["clerp"] for n in graph["nodes"]}
    assert "wrote" in capsys.readouterr().out


@needs_dot
def test_cli_svg(tmp_path):
    path = tmp_path / "circuit.json"
    small().to_json(path)
    assert main(["export", str(path), "-o", str(tmp_path / "c.svg")]) == 0  # format from the suffix
    ET.fromstring((tmp_path / "c.svg").read_bytes())
    assert main(["export", str(path), "--format", "svg"]) == 0
    assert (tmp_path / "circuit.svg").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--format", "nope"], "unknown exporter 'nope'"),
        (["--format", "dot", "--node-threshold", "0.001"], "cannot lower thresholds"),
        (["--format", "dot", "--labels", "no-such-file.jsonl"], "no-such-file.jsonl"),
        (["-o", "out.xyz"], "out.xyz"),
    ],
)
def test_cli_errors_exit_2(tmp_path, capsys, argv, needle):
    path = tmp_path / "circuit.json"
    small().to_json(path)
    argv = [a if a != "out.xyz" else str(tmp_path / a) for a in argv]
    assert main(["export", str(path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sfc: error:") and needle in err and err.count("\n") == 1


def test_cli_bad_circuit_file_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.json"), "--format", "dot"]) == 2
    (tmp_path / "bad.json").write_text('{"schema": "other"}', encoding="utf-8")
    assert main(["export", str(tmp_path / "bad.json"), "--format", "dot"]) == 2
    assert capsys.readouterr().err.count("\n") == 2


# --- command-line ergonomics ----------------------------------------------------------------------------------


@pytest.fixture
def csv_plugin():
    """An in-process plugin (``get_plugin_manager().register(module)``): a ``csv`` exporter and a label provider."""
    import types

    from sfc_plugin import get_plugin_manager, hookimpl

    def export_csv(circuit, path, **_options):
        lines = ["id,effect"] + [f"{n.id},{n.effect}" for n in circuit.nodes]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def prefixed(circuit, prefix="f", upper=False):
        return {
            n.id: (f"{prefix}{n.feature}".upper() if upper else f"{prefix}{n.feature}")
            for n in circuit.nodes
            if n.kind == "feature"
        }

    mod = types.ModuleType("csv_plugin_for_tests")
    mod.sfc_exporters = hookimpl(lambda: {"csv": export_csv})
    mod.sfc_label_providers = hookimpl(lambda: {"prefixed": prefixed})
    pm = get_plugin_manager()
    pm.register(mod)
    yield mod
    pm.unregister(mod)


def test_cli_infers_a_plugin_format_from_the_suffix(tmp_path, csv_plugin):
    path = tmp_path / "circuit.json"
    small().to_json(path)
    assert main(["export", str(path), "-o", str(tmp_path / "nodes.csv")]) == 0
    assert (tmp_path / "nodes.csv").read_text(encoding="utf-8").startswith("id,effect\ny,2.0\n")
    assert main(["export", str(path), "-o", str(tmp_path / "g.neuronpedia.json")]) == 0
    assert "nodes" in json.loads((tmp_path / "g.neuronpedia.json").read_text(encoding="utf-8"))
    assert main(["export", str(path), "-o", str(tmp_path / "x.unknownfmt")]) == 2


def test_cli_label_options(tmp_path, csv_plugin, capsys):
    path = tmp_path / "circuit.json"
    small().to_json(path)
    out = tmp_path / "labelled.json"
    assert (
        main(
            [
                "export",
                str(path),
                "-o",
                str(out),
                "--labels",
                "prefixed",
                "--label-option",
                "prefix=feat-",
                "--label-option",
                "upper=true",
            ]
        )
        == 0
    )
    assert Circuit.from_json(out).node("mlp_0/3").label == "FEAT-3"
    assert main(["export", str(path), "-o", str(out), "--labels", "prefixed", "--label-option", "colour=red"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["export", str(path), "-o", str(out), "--labels", "prefixed", "--label-option", "no-equals"]) == 2
    assert main(["export", str(path), "-o", str(out), "--label-option", "prefix=x"]) == 2  # needs --labels


def test_cli_figure_options(tmp_path):
    path = tmp_path / "circuit.json"
    c = synthetic(120, 400, seed=4)
    c.to_json(path)
    assert (
        main(
            [
                "export",
                str(path),
                "-o",
                str(tmp_path / "c.dot"),
                "--max-nodes-per-row",
                "3",
                "--wrap",
                "2",
                "--no-legend",
                "--keep-isolated",
            ]
        )
        == 0
    )
    g = parse((tmp_path / "c.dot").read_text(encoding="utf-8"))
    nodes = all_nodes(g)
    assert "legend" not in nodes and sum("/" in n for n in nodes) == 3 * 13
    assert any(unq(s.get_name()).endswith("_1") for s in g.get_subgraphs())  # wrapped
    for bad in (["--max-nodes-per-row", "0"], ["--wrap", "0"]):
        assert main(["export", str(path), "-o", str(tmp_path / "d.dot"), *bad]) == 2


def test_rows_are_ordered_embedding_then_attn_mlp_resid_per_layer_then_unknown():
    names = ["plugin_x", "resid_1", "attn_0", "embed", "mlp_1", "resid_0", "attn_1", "mlp_0", None]
    assert sorted(names, key=row_key) == [
        "embed", "attn_0", "mlp_0", "resid_0", "attn_1", "mlp_1", "resid_1", None, "plugin_x",
    ]  # fmt: skip


def test_negative_nodes_are_dashed_and_strong_nodes_have_white_text():
    """By hand from ``small()``: resid_0/40 (-2.0, the largest |effect|) is dashed with white text, mlp_0/3 (1.6) has
    white text and a solid outline, embed/7 (0.3) neither."""
    nodes = all_nodes(parse(small().to_dot()))
    strong_neg, strong_pos, weak = nodes["resid_0/40"], nodes["mlp_0/3"], nodes["embed/7"]
    assert unq(strong_neg.get("style")) == "filled,dashed" and unq(strong_neg.get("fontcolor")) == "white"
    assert strong_pos.get("style") is None and unq(strong_pos.get("fontcolor")) == "white"
    assert weak.get("style") is None and weak.get("fontcolor") is None
    assert float(strong_neg.get("penwidth")) == 1.1 and strong_pos.get("penwidth") is None
    assert "effect -2" in unq(strong_neg.get("tooltip")) and "effect +0.3" in unq(weak.get("tooltip"))


def test_the_legend_explains_review_marks_only_when_a_shown_label_has_one():
    c = small()
    labelled = c.nodes[4]
    labelled.label = "plural subject"
    assert "labels: ✓ accepted" not in c.to_dot()
    c.provenance["node_info"] = {labelled.id: {"status": "accepted"}}
    dot = c.to_dot()
    assert "labels: ✓ accepted" in dot and "from another SAE (forced)" not in dot
    c.provenance["node_info"][labelled.id]["forced"] = True
    assert "⚠SAE: from another SAE (forced)" in c.to_dot()


def test_the_title_shows_the_first_warning_and_counts_the_others():
    c = small()
    c.warnings = ["first warning"]
    dot = c.to_dot()
    assert "⚠ first warning" in dot and "more)" not in dot
    c.warnings = ["first warning", "second", "third"]
    assert "⚠ first warning (+2 more)" in c.to_dot()


@pytest.mark.parametrize("aggregation", ["sum", "none"])  # ranked rows and the position grid
def test_node_shading_is_relative_to_the_strongest_node_not_the_metric(aggregation):
    c = small(aggregation)
    c.nodes[0].effect = 10.0  # the metric's total effect is not a node strength
    strongest = "resid_0/40" + ("@2" if aggregation == "none" else "")
    nodes = all_nodes(parse(c.to_dot()))
    assert unq(nodes[strongest].get("fontcolor")) == "white"
    legend = nodes["legend"].get("label")  # the fill scale's ends: the strongest node's |effect| (2.0), not 10
    assert "−2</font>" in legend and "+2</font>" in legend and "10<" not in legend


def test_a_one_row_figure_without_metric_or_legend_still_names_its_row():
    """Every row's name is drawn: no statement anywhere in the file makes a row's name node invisible."""
    c = Circuit(
        [feat("attn_0", 1, 0.5), feat("attn_0", 2, -0.3)], [], 1.0, "logit_diff", "atp", 10, "sum", 0.1, 0.01, {}
    )
    g = parse(circuit_to_dot(c, keep_isolated=True, legend=False))
    stmts = [n for sub in [g, *g.get_subgraphs()] for n in sub.get_node('"row:attn_0"')]
    assert stmts and all(unq(n.get("style")) != "invis" for n in stmts)
    assert unq(stmts[0].get("label")) == "attn_0"


def _xy(node) -> tuple[float, float]:
    x, y = unq(node.get("pos")).rstrip("!").split(",")
    return float(x), float(y)


@pytest.mark.parametrize("tokens", [["x"], None])
def test_a_grid_with_no_positional_nodes_has_one_column_per_token(tokens):
    """Nothing left but the metric: the grid still has a column per prompt token (one token: one column), or,
    without tokens, the single column of position 0."""
    y = Node("y", None, None, None, "metric", None, None, 1.0)
    prov = {"tokens": tokens} if tokens else {}
    nodes = all_nodes(parse(Circuit([y], [], 1.0, "logit_diff", "atp", 10, "none", 0.1, 0.01, prov).to_dot()))
    assert {n for n in nodes if n.startswith("tok:")} == {"tok:0"}
    label = unq(nodes["tok:0"].get("label"))
    assert label.startswith("x") if tokens else label == "pos 0"


def test_the_grid_puts_the_metric_and_position_less_nodes_in_the_last_column():
    """The metric is read at the last position: it sits above the last token's column, and a node without a
    position (summed over positions) goes in that column too (docs/viewers.md, the same convention)."""
    c = small("none", {"tokens": ["The", " cats", " are"]})
    c.nodes.append(feat("mlp_0", 9, 0.7))  # no position
    c.edges.append(Edge("mlp_0/9", "y", 0.7))
    nodes = all_nodes(parse(c.to_dot()))
    last, first = _xy(nodes["tok:2"])[0], _xy(nodes["tok:0"])[0]
    assert first < last
    assert _xy(nodes["y"])[0] == pytest.approx(last)
    assert _xy(nodes["mlp_0/9"])[0] == pytest.approx(last)  # alone in its cell: centred in the column
    assert _xy(nodes["mlp_0/9"])[1] == pytest.approx(_xy(nodes["mlp_0/3@1"])[1])  # in mlp_0's row


@needs_dot
def test_grid_nodes_sharing_a_cell_do_not_overlap_when_drawn():
    """Boxes pinned side by side in one cell, as Graphviz draws them (their sizes from Graphviz, not the export's
    estimate), leave a gap between neighbours."""
    c = small("none")
    for i, label in enumerate(["plural nouns", "a", "tokens after 'the'", "x" * 30]):
        c.nodes.append(feat("mlp_0", 100 + i, 0.2, 1, label=label))
        c.edges.append(Edge(f"mlp_0/{100 + i}@1", "resid_0/40@2", 0.1))
    root = ET.fromstring(render(c, "svg"))
    boxes = {}
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        poly = g.find(f".//{SVG}polygon")
        if g.get("class") == "node" and title is not None and poly is not None and title.text.startswith("mlp_0/"):
            pts = [tuple(map(float, p.split(","))) for p in poly.get("points").split()]
            boxes[title.text] = (
                min(x for x, _ in pts),
                max(x for x, _ in pts),
                round(sum(y for _, y in pts[:4]) / 4, 1),
            )
    cell = sorted(b for k, b in boxes.items() if k.endswith("@1"))
    assert len(cell) == 5 and len({b[2] for b in cell}) == 1  # one line (the same centre height)
    assert all(a[1] < b[0] for a, b in zip(cell, cell[1:])), cell
