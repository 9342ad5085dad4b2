"""`sfc view`: the static site in headless Chromium (loads from file://, cards, sliders, search, escaping)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from conftest import HANG_LIMIT

from sfc_plugin import dashboards
from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.dashboards.labels import auto_label
from sfc_plugin.viewer import build_site, site_data

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (.ci/run installs Debian's chromium; apt-get install chromium)",
)
EVIL = '<script>window.PWNED=1</script><img src=x onerror="window.PWNED=2">'


HOOKS = {"embed": "hook_embed", "attn": "hook_attn_out", "mlp": "hook_mlp_out", "resid": "hook_resid_post"}


def _node(nid, effect, label=None):
    if nid == "y":
        return Node("y", None, None, None, "metric", None, None, effect)
    sub, feat = nid.split("/")
    kind, _, layer = sub.partition("_")
    hook = HOOKS[kind] if kind == "embed" else f"blocks.{layer}.{HOOKS[kind]}"
    return Node(
        nid,
        sub,
        hook,
        int(layer or -1),
        "error" if feat == "err" else "feature",
        None if feat == "err" else int(feat),
        None,
        effect,
        label,
    )


@pytest.fixture(scope="module")
def site_circuit():
    """A small hand-made circuit over the conftest model's submodules: effects spread over two decades."""
    effects = {
        "embed/0": 0.9,
        "embed/3": -0.05,
        "embed/err": 0.3,
        "attn_0/5": 0.4,
        "mlp_0/1": -0.6,
        "resid_0/4": 0.08,
        "resid_0/err": -0.2,
        "mlp_1/7": 1.5,
        "resid_1/2": 2.0,
        "resid_1/31": -0.03,
    }
    nodes = [_node("y", 2.5)] + [_node(i, e, EVIL if i == "mlp_0/1" else None) for i, e in effects.items()]
    edges = [
        Edge("embed/0", "attn_0/5", 0.5),
        Edge("embed/0", "mlp_0/1", -0.4),
        Edge("embed/err", "resid_0/4", 0.02),
        Edge("embed/3", "resid_0/err", 0.01),
        Edge("attn_0/5", "mlp_0/1", 0.3),
        Edge("mlp_0/1", "resid_0/4", -0.05),
        Edge("resid_0/4", "mlp_1/7", 0.07),
        Edge("resid_0/err", "resid_1/31", -0.02),
        Edge("mlp_1/7", "resid_1/2", 1.2),
        Edge("resid_1/2", "y", 2.0),
        Edge("resid_1/31", "y", -0.03),
    ]
    return Circuit(nodes, edges, 2.5, "logit_diff", "ig", 10, "sum", 0.01, 0.005, {"dataset": "test/pairs"})


@pytest.fixture(scope="module")
def site(site_circuit, tokenizer, tmp_path_factory):
    import random

    from conftest import WORDS, all_hooks, make_model, make_saes

    model, saes = make_model(tokenizer), make_saes(all_hooks(2))
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(80)))
    data = dashboards.circuit_dashboards(site_circuit, model, saes, str(path), context_size=9, progress=False)
    out = tmp_path_factory.mktemp("site")
    build_site(site_circuit, out, data)
    return out, data


def run_page(site_dir, probe: str, size=(1400, 900)) -> dict:
    """Load the site from file:// with ``probe`` run after the viewer; the probe's ``result`` and the console."""
    page = (site_dir / "index.html").read_text(encoding="utf-8")
    page = page.replace(
        '<script src="viewer.js"></script>', '<script src="viewer.js"></script>\n<script src="probe.js"></script>'
    )
    assert "probe.js" in page
    (site_dir / "probe-page.html").write_text(page, encoding="utf-8")
    (site_dir / "probe.js").write_text(
        "var result = {};\n" + probe + "\nvar pre = document.createElement('pre'); pre.id = 'probe-result';"
        "pre.textContent = JSON.stringify(result); document.body.appendChild(pre);\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--window-size={size[0]},{size[1]}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            (site_dir / "probe-page.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
    )
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"page did not run the probe:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    result["console"] = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return result


def test_site_data_keeps_data_raw_for_the_page_to_escape(site_circuit, site):
    out, data = site
    d = site_data(site_circuit, data)
    assert d["rows"] == ["embed", "attn_0", "mlp_0", "resid_0", "mlp_1", "resid_1", "y"]
    assert {n["id"]: n["label"] for n in d["nodes"]}["mlp_0/1"] == EVIL  # raw: the page inserts it as text
    assert set(d["dashboards"]) == {n.id for n in site_circuit.nodes if n.kind == "feature"}
    text = (out / "data.js").read_text()
    assert text.startswith("window.SFC_VIEW = ") and text.isascii()
    assert json.loads(text[len("window.SFC_VIEW = ") : -2]) == json.loads(json.dumps(d))
    labels = {n["id"]: n["label"] for n in d["nodes"]}
    assert labels["resid_1/2"] == auto_label(data["features"]["resid_1/2"])  # unlabelled features get auto labels


@needs_chromium
def test_page_loads_without_console_errors_and_draws_every_node(site, site_circuit):
    out, _ = site
    r = run_page(
        out,
        """
        result.nodes = document.querySelectorAll('#nodes .node').length;
        result.features = document.querySelectorAll('#nodes .node.feature').length;
        result.errors = document.querySelectorAll('#nodes .node.error polygon').length;
        result.edges = document.querySelectorAll('#edges .edge').length;
        result.counts = document.getElementById('counts').textContent;
        result.transform = document.getElementById('viewport').getAttribute('transform');
    """,
    )
    assert r["console"] == []
    assert r["nodes"] == len(site_circuit.nodes) and r["errors"] == 2
    assert r["edges"] == len(site_circuit.edges)
    assert r["counts"] == f"{len(site_circuit.nodes) - 1} nodes · {len(site_circuit.edges)} edges"
    assert "scale(" in r["transform"]


@needs_chromium
def test_clicking_a_node_opens_its_card_with_contexts(site):
    out, data = site
    r = run_page(
        out,
        """
        var g = document.querySelector('.node[data-id="resid_1/2"]');
        g.dispatchEvent(new MouseEvent('click', {bubbles: true}));
        var card = document.getElementById('card');
        result.hidden = card.hidden;
        result.title = card.querySelector('h2').textContent;
        result.contexts = card.querySelectorAll('.contexts.top .context').length;
        result.maxTokens = Array.from(card.querySelectorAll('.contexts.top .context .tok.max')).map(function (e) { return e.textContent; });
        result.highlighted = card.querySelectorAll('.contexts.top .tok[style]').length;
        result.promoted = Array.from(card.querySelectorAll('.chips.up span')).map(function (e) { return e.textContent; });
        result.incoming = Array.from(card.querySelectorAll('.edges-list li')).map(function (e) { return e.textContent; });
        result.selected = document.querySelector('.node.selected').getAttribute('data-id');
    """,
    )
    assert r["console"] == []
    rec = data["features"]["resid_1/2"]
    assert not r["hidden"] and r["title"] == "resid_1/2" and r["selected"] == "resid_1/2"
    assert r["contexts"] == len(rec["top"]) > 0
    assert r["maxTokens"] == [c["tokens"][c["position"]] for c in rec["top"]]
    assert r["highlighted"] >= len(rec["top"])
    assert r["promoted"] == [p["token"] for p in rec["promoted"]]
    assert r["incoming"][0].startswith("+1.20") and "mlp_1/7" in r["incoming"][0]  # strongest incoming edge
    assert any("y" in line for line in r["incoming"][1:])  # outgoing edge to the metric


@needs_chromium
def test_sliders_prune_live(site, site_circuit):
    out, _ = site
    r = run_page(
        out,
        """
        function count() { return +document.getElementById('counts').getAttribute('data-nodes'); }
        function edges() { return +document.getElementById('counts').getAttribute('data-edges'); }
        result.before = count();
        var s = document.getElementById('node-slider');
        s.value = 60; s.dispatchEvent(new Event('input', {bubbles: true}));
        result.withPaths = count();
        var paths = document.getElementById('paths');
        paths.checked = false; paths.dispatchEvent(new Event('change', {bubbles: true}));
        result.after = count();
        result.above = +document.getElementById('counts').getAttribute('data-above');
        result.drawn = document.querySelectorAll('#nodes .node:not(.metric)').length;
        result.threshold = document.getElementById('node-t').textContent;
        paths.checked = true; paths.dispatchEvent(new Event('change', {bubbles: true}));
        s.value = 0; s.dispatchEvent(new Event('input', {bubbles: true}));
        result.back = count();
        result.edgesBefore = edges();
        var e = document.getElementById('edge-slider');
        e.value = 80; e.dispatchEvent(new Event('input', {bubbles: true}));
        result.edgesAfter = edges();
    """,
    )
    assert r["console"] == []
    n = len(site_circuit.nodes) - 1
    assert r["before"] == n == r["back"]
    assert 0 < r["after"] < n and r["drawn"] == r["after"] == r["above"]
    assert r["after"] < r["withPaths"] <= n  # "paths to y" (on by default) adds the shown nodes' paths to y
    t = float(r["threshold"])
    assert r["after"] == sum(1 for x in site_circuit.nodes if x.kind != "metric" and abs(x.effect) >= t * 0.999) or r[
        "after"
    ] == sum(1 for x in site_circuit.nodes if x.kind != "metric" and abs(x.effect) >= t * 1.001)
    assert r["edgesAfter"] < r["edgesBefore"] == len(site_circuit.edges)


@needs_chromium
def test_hover_highlights_paths_and_search_finds_labels(site):
    out, _ = site
    r = run_page(
        out,
        """
        var g = document.querySelector('.node[data-id="attn_0/5"]');
        g.dispatchEvent(new MouseEvent('mouseenter'));
        result.focus = document.getElementById('graph').classList.contains('focus');
        result.on = Array.from(document.querySelectorAll('.node.on')).map(function (e) { return e.getAttribute('data-id'); }).sort();
        g.dispatchEvent(new MouseEvent('mouseleave'));
        result.after = document.getElementById('graph').classList.contains('focus');
        var q = document.getElementById('search');
        q.value = 'RESID_1'; q.dispatchEvent(new Event('input', {bubbles: true}));
        result.matches = Array.from(document.querySelectorAll('.node.match')).map(function (e) { return e.getAttribute('data-id'); }).sort();
        q.value = 'onerror'; q.dispatchEvent(new Event('input', {bubbles: true}));
        result.labelMatch = Array.from(document.querySelectorAll('.node.match')).map(function (e) { return e.getAttribute('data-id'); });
        q.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));
        result.card = document.querySelector('#card h2').textContent;
    """,
    )
    assert r["console"] == []
    assert r["focus"] and not r["after"]
    # upstream embed/0; downstream mlp_0/1 -> resid_0/4 -> mlp_1/7 -> resid_1/2 -> y
    assert r["on"] == sorted(["attn_0/5", "embed/0", "mlp_0/1", "resid_0/4", "mlp_1/7", "resid_1/2", "y"])
    assert r["matches"] == ["resid_1/2", "resid_1/31"]
    assert r["labelMatch"] == ["mlp_0/1"] and r["card"] == "mlp_0/1"


@needs_chromium
def test_edge_colours_are_the_figures_and_the_legend_names_them(site):
    """The viewer draws the figures' Okabe–Ito blue and vermillion (negative edges dashed) and its footer says so."""
    from sfc_plugin.export.dot import NEG_RGB, POS_RGB

    out, _ = site
    r = run_page(
        out,
        """
        var es = Array.from(document.querySelectorAll('#edges .edge'));
        result.edges = es.map(function (e) { return [e.getAttribute('stroke'), e.getAttribute('stroke-dasharray'),
                                                     e.querySelector('title').textContent]; });
        result.legend = document.getElementById('legend').textContent;
    """,
    )
    want = {True: "rgb({},{},{})".format(*NEG_RGB), False: "rgb({},{},{})".format(*POS_RGB)}
    assert r["edges"] and {e[1] is not None for e in r["edges"]} == {True, False}  # both signs present
    for stroke, dash, title in r["edges"]:
        negative = title.rsplit(": ", 1)[1].startswith(("-", "\u2212"))
        assert stroke == want[negative] and (dash is not None) == negative, (stroke, dash, title)
    legend = " ".join(r["legend"].split())
    assert "red:" not in legend and "blue: positive" in legend and "vermillion (orange-red): negative" in legend


@needs_chromium
def test_a_label_with_markup_shows_as_text(site):
    out, _ = site
    r = run_page(
        out,
        """
        document.querySelector('.node[data-id="mlp_0/1"]').dispatchEvent(new MouseEvent('click', {bubbles: true}));
        result.pwned = window.PWNED === undefined ? null : window.PWNED;
        result.label = document.querySelector('#card .label').textContent;
        result.nodeText = document.querySelector('.node[data-id="mlp_0/1"] text.sub').textContent;
        result.injected = document.querySelectorAll('#card script, #card img, #nodes script, #nodes img').length;
    """,
    )
    assert r["console"] == []
    assert r["pwned"] is None and r["injected"] == 0
    assert r["label"] == EVIL and r["nodeText"].startswith("<script>")


def test_cli_view_writes_a_site(site_circuit, site, tmp_path, capsys):
    from sfc_plugin.cli import main

    _, data = site
    circuit = Circuit.from_dict({**site_circuit.to_dict(), "provenance": {"model_source": "elsewhere"}})
    circuit.to_json(tmp_path / "c.json")
    dashboards.write_dashboards(data, tmp_path / "dash")
    assert (
        main(["view", str(tmp_path / "c.json"), "--dashboards", str(tmp_path / "dash"), "-o", str(tmp_path / "site")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["data.js", "index.html", "viewer.css", "viewer.js"]
    assert "file://" in capsys.readouterr().out
    # no dashboards for a circuit from elsewhere: the site still builds, cards without contexts
    assert main(["view", str(tmp_path / "c.json"), "-o", str(tmp_path / "bare")]) == 0
    assert "no dashboards" in capsys.readouterr().out
    bare = json.loads((tmp_path / "bare" / "data.js").read_text()[len("window.SFC_VIEW = ") : -2])
    assert bare["dashboards"] == {}
    assert (
        main(["view", str(tmp_path / "c.json"), "--dashboards", str(tmp_path / "nope"), "-o", str(tmp_path / "x")]) == 2
    )


def _big_circuit(n_per_row=30, seed=0):
    """A layered circuit of 301 nodes over the toy world's ten rows (effects spread over two decades), every
    node wired upwards, the last row into y, and a recorded held-out curve."""
    import random

    rng = random.Random(seed)
    subs = ["embed"] + [f"{k}_{l}" for l in range(3) for k in ("attn", "mlp", "resid")]
    rows = [[_node(f"{s}/{f}", rng.choice([-1, 1]) * 10 ** rng.uniform(-1, 1)) for f in range(n_per_row)] for s in subs]
    edges = []
    for lower, upper in zip(rows, rows[1:]):
        for n in lower:
            for d in rng.sample(upper, 3):
                edges.append(Edge(n.id, d.id, rng.choice([-1, 1]) * 10 ** rng.uniform(-2, 0.5)))
    edges += [Edge(n.id, "y", n.effect) for n in rows[-1]]
    nodes = [_node("y", 3.0)] + [n for r in rows for n in r]
    c = Circuit(nodes, edges, 3.0, "logit_diff", "ig", 10, "sum", 0.01, 0.005, {"dataset": "test/pairs"})
    c.evaluation = {
        "faithfulness": 0.91,
        "faithfulness_se": 0.01,
        "completeness": 0.02,
        "n_nodes": len(nodes) - 1,
        "node_threshold": 0.01,
        "known": True,
        "n_pairs": 40,
        "data": "test/pairs",
        "split": "test",
        "ablation": "mean",
        "curve": [{"node_threshold": 0.01, "n_nodes": len(nodes) - 1, "faithfulness": 0.91, "completeness": 0.02}],
    }
    return c


@needs_chromium
def test_the_first_screen_is_readable(tmp_path):
    """At 1400×1000 a 300-node circuit opens on at most 60 nodes, the strongest, each with a drawn path to the
    metric; node labels render at 11 px or more; the header states the held-out faithfulness."""
    from sfc_plugin.paths import widest_paths

    c = _big_circuit()
    build_site(c, tmp_path / "site")
    r = run_page(
        tmp_path / "site",
        """
        var gs = Array.from(document.querySelectorAll('#nodes .node:not(.metric)'));
        result.drawn = gs.map(function (g) { return g.getAttribute('data-id'); });
        result.edges = Array.from(document.querySelectorAll('#edges .edge')).map(function (p) {
          return [p.getAttribute('data-source'), p.getAttribute('data-target')]; });
        result.px = Array.from(document.querySelectorAll('#nodes .node text')).map(function (t) {
          return parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a; });
        result.box = Array.from(document.querySelectorAll('#nodes .node')).map(function (g) {
          var b = g.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; });
        result.view = document.getElementById('graph').getBoundingClientRect().toJSON();
        result.faith = document.getElementById('faith').textContent;
        result.counts = document.getElementById('counts').textContent;
        result.threshold = +document.getElementById('node-t').textContent;
        var s = document.getElementById('node-slider');
        s.value = 0; s.dispatchEvent(new Event('input', {bubbles: true}));
        result.all = document.querySelectorAll('#nodes .node:not(.metric)').length;
        """,
        size=(1400, 1000),
    )
    assert r["console"] == []
    n = len(c.nodes) - 1
    assert 40 <= len(r["drawn"]) <= 60 and r["all"] == n  # the rest is behind the slider
    above = {x.id for x in c.nodes if x.kind != "metric" and abs(x.effect) >= r["threshold"] * 1.01}
    assert len(above) >= 10 and above <= set(r["drawn"])  # the strongest, then the nodes on their paths
    drawn_edges = [Edge(s, t, 1.0) for s, t in r["edges"]]
    reach = widest_paths(r["drawn"] + ["y"], drawn_edges)
    full = widest_paths([x.id for x in c.nodes], c.edges)
    assert all(i in reach for i in r["drawn"] if i in full)  # every drawn node's path to y is drawn too
    assert min(r["px"]) >= 11, min(r["px"])  # legible labels
    view = r["view"]
    assert all(b[0] >= view["left"] - 1 and b[2] <= view["right"] + 1 for b in r["box"])  # nothing off screen
    assert r["faith"].startswith("held-out faithfulness 0.910 ± 0.010 with all 300 nodes")
    assert f"of {n} nodes" in r["counts"]


@needs_chromium
def test_a_wide_row_wraps_instead_of_shrinking_the_labels(tmp_path):
    nodes = [_node("y", 3.0)] + [_node(f"resid_1/{f}", 1 + f / 100) for f in range(100)]
    c = Circuit(
        nodes, [Edge(n.id, "y", n.effect) for n in nodes[1:]], 3.0, "logit_diff", "ig", 10, "sum", 0.01, 0.005, {}
    )
    build_site(c, tmp_path / "site")
    r = run_page(
        tmp_path / "site",
        """
        result.n = document.querySelectorAll('#nodes .node:not(.metric)').length;
        result.px = Array.from(document.querySelectorAll('#nodes .node text')).map(function (t) {
          return parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a; });
        result.faith = document.getElementById('faith').textContent;
        """,
        size=(1400, 1000),
    )
    assert r["console"] == [] and r["n"] == 60
    assert min(r["px"]) >= 11, min(r["px"])
    assert r["faith"] == "faithfulness not evaluated (sfc evaluate)"


@needs_chromium
def test_the_screenshot_script_takes_the_first_screen(tmp_path):
    import sys
    from pathlib import Path

    from PIL import Image

    build_site(_big_circuit(), tmp_path / "site")
    script = Path(__file__).resolve().parents[1] / "scripts" / "viewer_screenshot.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "site"), str(tmp_path / "shot.png"), "--no-card"],
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
    )
    assert done.returncode == 0, done.stderr
    image = Image.open(tmp_path / "shot.png").convert("L")
    assert image.size == (1400, 1000)
    dark = sum(image.histogram()[:128])
    assert dark > 2000  # drawn: boxes, labels and edges, not a blank page


FP = {"embed": "a" * 64, "attn_0": "b" * 64, "mlp_0": "c" * 64, "resid_0": "d" * 64, "mlp_1": "e" * 64}
FP["resid_1"] = "f" * 64


@pytest.fixture(scope="module")
def annotated_site(site_circuit, site, tmp_path_factory):
    """The site circuit with its SAEs' fingerprints, built by ``sfc view --labels team.jsonl``: one feature labelled
    and accepted, one proposed."""
    from sfc_plugin import annotations as A
    from sfc_plugin.cli import main

    _, data = site
    prov = {"saes": [{"submodule": s, "fingerprint": {"sha256": fp}} for s, fp in FP.items()]}
    circuit = Circuit.from_dict({**site_circuit.to_dict(), "provenance": prov})
    tmp = tmp_path_factory.mktemp("annotated")
    circuit.to_json(tmp / "c.json")
    dashboards.write_dashboards(data, tmp / "dash")
    team = tmp / "team.jsonl"
    first = A.make_record("mlp_1/7", FP["mlp_1"], "verb number", "alice", created="2025-01-01T00:00:00Z")
    acc = A.review_record([first], "mlp_1/7", "accepted", "bob", note="top contexts", created="2025-01-02T00:00:00Z")
    A.write_annotations(team, [first, acc, A.make_record("attn_0/5", FP["attn_0"], "subject noun", "carol")])
    args = ["view", str(tmp / "c.json"), "--dashboards", str(tmp / "dash"), "-o", str(tmp / "site")]
    assert main(args + ["--labels", str(team), "--label-option", "status=all"]) == 0
    return tmp


@needs_chromium
def test_feature_card_proposes_reviews_and_downloads_annotations(annotated_site, tmp_path, capsys):
    """A reader proposes a label (citing a context), a second reader accepts it, the download is a valid
    sfc-annotations/1 file holding the site's history plus both records, and it merges back with sfc annotate."""
    from sfc_plugin import annotations as A
    from sfc_plugin.cli import main

    r = run_page(
        annotated_site / "site",
        """
        function click(el) { el.dispatchEvent(new MouseEvent('click', {bubbles: true})); }
        function open(id) { click(document.querySelector('.node[data-id="' + id + '"]')); return document.getElementById('card'); }
        function type(el, text) { el.value = text; el.dispatchEvent(new Event('input', {bubbles: true})); }
        var dl = document.getElementById('download');
        result.hiddenBefore = dl.hidden;
        var card = open('mlp_1/7');
        result.accepted = card.querySelector('.label').textContent;
        result.about = card.querySelector('.about').textContent;
        result.history = Array.from(card.querySelectorAll('.annotate .history li')).map(function (e) { return e.textContent; });
        result.proposedNode = document.querySelector('.node[data-id="attn_0/5"] text.sub').textContent;
        card = open('resid_1/2');
        click(card.querySelector('.contexts.top .context'));
        type(card.querySelector('input.label-input'), 'plural subject <b>');
        type(card.querySelector('input.author'), 'dana');
        click(card.querySelector('button.propose-button'));
        card = document.getElementById('card');
        result.afterPropose = card.querySelector('.label').textContent;
        result.newCount = dl.getAttribute('data-new');
        result.hiddenAfter = dl.hidden;
        type(card.querySelector('input.reviewer'), 'dana');
        click(card.querySelector('button.accept'));
        result.selfReview = card.querySelector('.msg').textContent;
        card = document.getElementById('card');
        type(card.querySelector('input.reviewer'), 'eve');
        type(card.querySelector('input.review-note'), 'fires on plural subjects');
        click(card.querySelector('button.accept'));
        card = document.getElementById('card');
        result.afterReview = card.querySelector('.label').textContent;
        result.nodeText = document.querySelector('.node[data-id="resid_1/2"] text.sub').textContent;
        card = open('attn_0/5');
        type(card.querySelector('input.reviewer'), 'eve');
        click(card.querySelector('button.reject'));
        result.rejected = document.getElementById('card').querySelector('.label').textContent;
        var captured = {}, RealBlob = window.Blob, createURL = URL.createObjectURL;
        window.Blob = function (parts, opts) { captured.text = parts.join(''); return new RealBlob(parts, opts); };
        URL.createObjectURL = function (blob) { var u = createURL(blob); captured.url = u; captured.type = blob.type; captured.size = blob.size; return u; };
        HTMLAnchorElement.prototype.click = function () { captured.name = this.download; captured.href = this.href; };
        click(dl);
        result.download = { name: captured.name, type: captured.type, text: captured.text, size: captured.size,
          same: captured.href === captured.url && /^blob:/.test(captured.href) };
        """,
    )
    assert r["console"] == []
    assert r["hiddenBefore"] is True and r["hiddenAfter"] is False and r["newCount"] == "1"
    assert r["accepted"] == "✓ verb number" and "accepted · label by alice · accepted by bob" in r["about"]
    assert len(r["history"]) == 2 and r["history"][1].startswith("✓ verb number — accepted, alice, reviewed by bob")
    assert r["proposedNode"].startswith("? subject")
    assert r["afterPropose"] == "? plural subject <b>"
    assert "a review needs a second person" in r["selfReview"]
    assert r["afterReview"] == "✓ plural subject <b>" and r["nodeText"].startswith("✓ plural")
    d = r["download"]
    assert d["same"] and d["name"] == "team-reviewed.jsonl" and d["type"] == "application/x-ndjson"
    path = tmp_path / d["name"]
    assert d["size"] == len(d["text"].encode("utf-8"))  # the blob is this text
    path.write_text(d["text"], encoding="utf-8")
    records = A.read_annotations(path)  # valid sfc-annotations/1
    assert r["rejected"] == "✗ subject noun"
    assert len(records) == 6 and records[:3] == A.read_annotations(annotated_site / "team.jsonl")
    gone = A.latest(records)["attn_0/5"]
    assert (gone["status"], gone["author"], gone["reviewer"]) == ("rejected", "carol", "eve")
    new = A.latest(records)["resid_1/2"]
    assert (new["status"], new["author"], new["reviewer"], new["note"]) == (
        "accepted",
        "dana",
        "eve",
        "fires on plural subjects",
    )
    assert new["sae_fingerprint"] == FP["resid_1"] and new["evidence"] and new["evidence"][0].startswith("context:")
    merged = tmp_path / "merged.jsonl"
    assert main(["annotate", "merge", str(annotated_site / "team.jsonl"), str(path), "-o", str(merged)]) == 0
    assert "no conflicts" in capsys.readouterr().out
    assert A.latest(A.read_annotations(merged))["resid_1/2"] == new


def test_view_refuses_annotations_of_another_sae(annotated_site, tmp_path, capsys):
    from sfc_plugin import annotations as A
    from sfc_plugin.cli import main

    wrong = tmp_path / "wrong.jsonl"
    A.write_annotations(wrong, [A.make_record("mlp_1/7", "0" * 64, "verb", "alice")])
    args = [
        "view",
        str(annotated_site / "c.json"),
        "--no-dashboards",
        "-o",
        str(tmp_path / "s"),
        "--labels",
        str(wrong),
    ]
    assert main(args + ["--label-option", "status=all"]) == 2
    assert "annotated on another SAE" in capsys.readouterr().err
    assert main(args + ["--label-option", "status=all", "--force"]) == 0
    data = json.loads((tmp_path / "s" / "data.js").read_text()[len("window.SFC_VIEW = ") : -2])
    node = {n["id"]: n for n in data["nodes"]}["mlp_1/7"]
    assert node["status"] == "proposed" and "another SAE" in node["forced"]
    assert main(["view", str(annotated_site / "c.json"), "-o", str(tmp_path / "t"), "--force"]) == 2
