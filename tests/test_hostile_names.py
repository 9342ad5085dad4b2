"""Metric, method and dataset names with ``"``, ``\\``, ``&``, ``<``, an entity and a newline reach the figure's
title and the viewer's title unchanged: DOT read back with pydot (and Graphviz's own escape rules), the SVG that
Graphviz draws, and the page Chromium renders."""

from __future__ import annotations

import html
import re
import shutil
import xml.etree.ElementTree as ET

import pydot
import pytest

from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.export.render import render
from sfc_plugin.viewer import build_site, site_data

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot")
METRIC = 'logit "diff" \\ & <b>&lt; x\nsecond line\\'
METHOD = 'ig\\2 "q" & <i>'
DATASET = 'sva & co\\ "rc" <img src=x onerror="window.PWNED=1">\nsplit'
SVG = "{http://www.w3.org/2000/svg}"


def hostile(aggregation="sum") -> Circuit:
    pos = 0 if aggregation == "none" else None
    at = "" if pos is None else "@0"
    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node(f"resid_0/3{at}", "resid_0", "blocks.0.hook_resid_post", 0, "feature", 3, pos, 0.5),
        Node(f"resid_0/err{at}", "resid_0", "blocks.0.hook_resid_post", 0, "error", None, pos, -0.25),
    ]
    edges = [Edge(f"resid_0/3{at}", "y", 0.5), Edge(f"resid_0/err{at}", "y", -0.25)]
    return Circuit(nodes, edges, 1.0, METRIC, METHOD, 10, aggregation, 0.1, 0.01, {"dataset": DATASET})


def shown(value: str) -> str:
    """A quoted DOT attribute as Graphviz shows it: ``\\x`` escapes (``\\n``, ``\\l``, ``\\r`` end lines), then
    HTML entities, which Graphviz decodes in labels."""
    assert value.startswith('"') and value.endswith('"'), value
    body = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) in "nlr" else m.group(1), value[1:-1], flags=re.S)
    return html.unescape(body)


def graph_label(dot_text: str) -> str:
    graphs = pydot.graph_from_dot_data(dot_text)
    assert graphs and len(graphs) == 1, "pydot could not read the DOT back"
    g = graphs[0]
    attrs = dict(g.get_attributes())
    for n in g.get_node("graph"):
        attrs.update(n.get_attributes())
    for defaults in g.get_graph_defaults():
        attrs.update(defaults)
    return shown(attrs["label"])


@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_names_round_trip_through_dot(aggregation):
    c = hostile(aggregation)
    title = graph_label(c.to_dot())
    assert METRIC in title and METHOD in title
    metric_nodes = [n for n in pydot.graph_from_dot_data(c.to_dot())[0].get_nodes() if n.get_name() == '"y"']
    metric_nodes += [
        n
        for s in pydot.graph_from_dot_data(c.to_dot())[0].get_subgraphs()
        for n in s.get_nodes()
        if n.get_name() == '"y"'
    ]
    assert metric_nodes and METRIC in shown(metric_nodes[0].get("label"))


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
@pytest.mark.parametrize("aggregation", ["sum", "none"])
def test_names_round_trip_through_svg(aggregation):
    root = ET.fromstring(render(hostile(aggregation), "svg"))  # well-formed XML
    lines = "\n".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert METRIC in lines and METHOD in lines  # each text line as given, split only at the names' newlines


def test_site_data_keeps_the_names():
    d = site_data(hostile())
    assert d["metric"] == METRIC and d["method"] == METHOD
    assert DATASET in d["title"] and METRIC in d["title"] and METHOD in d["title"]


def test_names_round_trip_through_the_viewer(tmp_path):
    from test_viewer import CHROMIUM, run_page

    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed")
    build_site(hostile(), tmp_path)
    r = run_page(
        tmp_path,
        """
        result.title = document.getElementById('title').textContent;
        result.doc = document.title;
        result.pwned = window.PWNED || null;
    """,
    )
    want = site_data(hostile())["title"]
    assert r["title"] == want and DATASET in r["title"] and METRIC in r["title"]
    assert r["doc"] == " ".join(want.split())  # document.title collapses whitespace
    assert r["pwned"] is None and r["console"] == []
