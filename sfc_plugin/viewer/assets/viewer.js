/* sfc-plugin circuit viewer: draws window.SFC_VIEW (written by `sfc view`) as SVG.
   Every data-derived string reaches the page through textContent or setAttribute, never as markup. */
(function () {
  "use strict";
  var D = window.SFC_VIEW;
  var SVGNS = "http://www.w3.org/2000/svg";
  var LABELS = D.nodes.some(function (n) { return !!n.label; });
  /* box size: room for the 13px index and, when there are labels, an 11px label line; ROW: row spacing,
     stretched to the window in rowSpacing() */
  var W = LABELS ? 120 : 68, H = LABELS ? 36 : 28, GAP = 12, ROW = 92;
  /* the figures' colours (sfc_plugin/export/dot.py): Okabe-Ito blue and vermillion, readable with the common
     colour-vision deficiencies; negative edges are also dashed, so greyscale keeps the sign */
  var POS = [0, 114, 178], NEG = [213, 94, 0], POSF = POS, NEGF = NEG;

  function $(id) { return document.getElementById(id); }
  function svg(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k])); }
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(tag, cls, text, parent) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(x, digits) { return (x === null || x === undefined) ? "n/a" : Number(x).toPrecision(digits || 3); }
  function signed(x) { return (x >= 0 ? "+" : "") + fmt(x, 3); }
  function mix(base, a) {  /* white at 0, base colour at 1 */
    var c = base.map(function (v) { return Math.round(255 + (v - 255) * Math.min(1, Math.abs(a))); });
    return "rgb(" + c.join(",") + ")";
  }

  /* ---------- data ---------- */
  var nodes = D.nodes, edges = D.edges, byId = {}, rowIndex = {};
  D.rows.forEach(function (r, i) { rowIndex[r] = i; });
  nodes.forEach(function (n) { byId[n.id] = n; n.ins = []; n.outs = []; });
  edges.forEach(function (e) { byId[e.source].outs.push(e); byId[e.target].ins.push(e); });
  var effMax = 0, wMax = 0;
  nodes.forEach(function (n) { if (n.kind !== "metric" && n.effect !== null) effMax = Math.max(effMax, Math.abs(n.effect)); });
  edges.forEach(function (e) { wMax = Math.max(wMax, Math.abs(e.weight)); });
  effMax = effMax || 1; wMax = wMax || 1;
  var nodeLo = Math.max(D.node_threshold, effMax * 1e-4), edgeLo = Math.max(D.edge_threshold, wMax * 1e-4);
  var state = { nodeT: D.node_threshold, edgeT: D.edge_threshold, selected: null, query: "", paths: true };
  var FIRST_NODES = 60, FIRST_EDGES_PER_NODE = 3;  /* the first screen: at most this many nodes, ~3 edges each */

  function sliderValue(s, lo, hi, floor) { return s <= 0 ? floor : lo * Math.pow(hi / lo, s / 100); }
  function sliderPosition(t, lo, hi) { return t <= lo ? 0 : Math.min(100, Math.round(100 * Math.log(t / lo) / Math.log(hi / lo))); }
  function aboveNode(n) { return n.kind === "metric" || Math.abs(n.effect) >= state.nodeT; }
  function visibleEdge(e, vis) { return vis[e.source] && vis[e.target] && (Math.abs(e.weight) >= state.edgeT || e.pinned); }

  /* ---------- each node's strongest path to the metric (widest: its weakest edge as strong as possible) ---------- */
  var next = widestPaths();
  function widestPaths() {
    var indeg = {}, order = [], ready = [], width = {}, out = {};
    nodes.forEach(function (n) { indeg[n.id] = n.ins.length; if (!n.ins.length) ready.push(n.id); });
    while (ready.length) {
      var id = ready.pop();
      order.push(id);
      byId[id].outs.forEach(function (e) { if (--indeg[e.target] === 0) ready.push(e.target); });
    }
    nodes.forEach(function (n) { if (n.kind === "metric") width[n.id] = Infinity; });
    for (var i = order.length - 1; i >= 0; i--) {
      var n = byId[order[i]];
      if (n.kind === "metric") continue;
      n.outs.forEach(function (e) {
        if (width[e.target] === undefined) return;
        var w = Math.min(Math.abs(e.weight), width[e.target]);
        var cur = out[n.id];
        if (!cur || w > width[n.id] || (w === width[n.id] && Math.abs(e.weight) > Math.abs(cur.weight))) { width[n.id] = w; out[n.id] = e; }
      });
    }
    return out;
  }
  function pathOf(id) {
    var path = [], seen = {};
    while (next[id] && !seen[id]) { seen[id] = true; path.push(next[id]); id = next[id].target; }
    return path;
  }
  /* what is drawn: the nodes above the threshold and, with "paths to y" on, the nodes and edges of their paths */
  function visibleNodes() {
    var vis = {};
    edges.forEach(function (e) { e.pinned = false; });
    nodes.forEach(function (n) { vis[n.id] = aboveNode(n); });
    if (state.paths) {
      nodes.forEach(function (n) {
        if (n.kind === "metric" || !vis[n.id]) return;
        pathOf(n.id).forEach(function (e) { vis[e.target] = true; e.pinned = true; });
      });
      nodes.forEach(function (n) { if (vis[n.id] && n.kind !== "metric" && !aboveNode(n)) vis[n.id] = "path"; });
    }
    return vis;
  }
  /* the first screen: the strongest nodes with their paths, at most FIRST_NODES, ~3 edges per node */
  function firstView() {
    var body = nodes.filter(function (n) { return n.kind !== "metric"; });
    if (body.length <= FIRST_NODES) return;
    body.sort(function (a, b) { return Math.abs(b.effect) - Math.abs(a.effect) || (a.id < b.id ? -1 : 1); });
    var seen = {}, count = 0, t = null;
    for (var k = 0; k < body.length; k++) {
      var add = [body[k].id].concat(pathOf(body[k].id).map(function (e) { return e.target; }))
        .filter(function (id) { return !seen[id] && byId[id].kind !== "metric"; });
      if (count + add.length > FIRST_NODES) break;
      add.forEach(function (id) { seen[id] = true; });
      count += add.length;
      t = Math.abs(body[k].effect);
    }
    if (t === null) return;
    state.nodeT = t;
    var vis = visibleNodes(), among = edges.filter(function (e) { return vis[e.source] && vis[e.target]; })
      .map(function (e) { return Math.abs(e.weight); }).sort(function (a, b) { return b - a; });
    var budget = FIRST_EDGES_PER_NODE * count;
    if (among.length > budget) state.edgeT = Math.max(D.edge_threshold, among[budget - 1]);
  }

  /* ---------- layout: one row per submodule (embedding at the bottom, y on top), barycentre order ---------- */
  function layout(vis) {
    var rows = D.rows.map(function () { return []; });
    nodes.forEach(function (n) { if (vis[n.id]) rows[rowIndex[n.row]].push(n); });
    rows.forEach(function (r) {
      r.sort(function (a, b) { return (a.position === null ? -1 : a.position) - (b.position === null ? -1 : b.position) ||
        (a.kind === "error") - (b.kind === "error") || (a.feature || 0) - (b.feature || 0); });
      place(r);
    });
    var ve = edges.filter(function (e) { return visibleEdge(e, vis); });
    var down = {}, up = {};
    ve.forEach(function (e) { (up[e.target] = up[e.target] || []).push(e.source); (down[e.source] = down[e.source] || []).push(e.target); });
    function sweep(order, nbrs) {
      order.forEach(function (i) {
        var r = rows[i];
        r.forEach(function (n, k) {
          var xs = (nbrs[n.id] || []).map(function (id) { return byId[id].x; });
          n.key = xs.length ? xs.reduce(function (a, b) { return a + b; }, 0) / xs.length : n.x;
          n.k = k;
        });
        r.sort(function (a, b) {
          if (a.position !== null && b.position !== null && a.position !== b.position) return a.position - b.position;
          return a.key - b.key || a.k - b.k;
        });
        place(r);
      });
    }
    var idx = rows.map(function (_, i) { return i; });
    for (var it = 0; it < 3; it++) { sweep(idx.slice(1), up); sweep(idx.slice(0, -1).reverse(), down); }
    var lines = rows.map(function (r) { return Math.max(1, Math.ceil(r.length / perLine())); });
    ROW = rowSpacing(rows, lines);
    var rowY = [], y = 0;  /* from the top: the metric row first; a wrapped row takes its extra lines below it */
    for (var i = rows.length - 1; i >= 0; i--) {
      rowY[i] = y;
      rows[i].forEach(function (n) { n.y = y + n.line * LINE; });
      y += ROW + (lines[i] - 1) * LINE;
    }
    return { rows: rows, edges: ve, rowY: rowY };
  }
  /* rows wider than the window wrap onto further lines, so labels stay legible at the fitted zoom */
  var LINE = H + 14;
  function perLine() {
    var box = document.getElementById("graph").getBoundingClientRect();
    return Math.max(6, Math.floor(((box.width || 1400) - 180) / (W + GAP)));
  }
  function rowSpacing(rows, lines) {  /* spread rows so the drawing's shape follows the window's */
    var widest = Math.max.apply(null, rows.map(function (r) { return Math.min(r.length, perLine()); }).concat([1])) * (W + GAP);
    var extra = lines.reduce(function (a, l) { return a + (l - 1) * LINE; }, 0);
    var box = document.getElementById("graph").getBoundingClientRect();
    var aspect = box.width > 0 ? box.height / box.width : 0.6;
    return Math.max(80, Math.min(240, (widest * aspect - extra) / Math.max(1, rows.length - 1)));
  }
  function place(r) {
    var m = perLine(), n = r.length;
    r.forEach(function (node, k) {
      var line = Math.floor(k / m), count = Math.min(m, n - line * m);
      node.line = line;
      node.x = (k - line * m - (count - 1) / 2) * (W + GAP);
    });
  }

  /* ---------- faithfulness: the circuit's, and the recorded curve's at the slider's threshold ---------- */
  var EV = D.evaluation;
  function f3(x, se) { return (x >= 0 ? "" : "\u2212") + Math.abs(x).toFixed(3) + (se !== null && se !== undefined ? " \u00b1 " + se.toFixed(3) : ""); }
  function circuitFaithfulness() {
    if (!EV) return "faithfulness not evaluated (sfc evaluate)";
    if (EV.known === false || EV.faithfulness === null || EV.faithfulness === undefined) return "faithfulness not known at this circuit's threshold";
    return "held-out faithfulness " + f3(EV.faithfulness, EV.faithfulness_se) + " with all " + EV.n_nodes +
      " nodes (|effect| > " + fmt(EV.node_threshold === null ? D.node_threshold : EV.node_threshold, 2) + ")";
  }
  function viewFaithfulness(above) {
    if (!EV || !EV.curve || above === nodes.length - 1) return "";
    var same = null, near = null;
    EV.curve.forEach(function (p) {
      if (p.faithfulness === null || p.faithfulness === undefined) return;
      if (p.n_nodes === above) same = p;
      if (!near || Math.abs(p.n_nodes - above) < Math.abs(near.n_nodes - above)) near = p;
    });
    if (same) return "the " + above + " nodes above the slider: faithfulness " + f3(same.faithfulness, same.faithfulness_se);
    return "the " + above + " nodes above the slider: faithfulness not on the curve" +
      (near ? " (nearest: " + f3(near.faithfulness) + " with " + near.n_nodes + " nodes)" : "");
  }

  /* ---------- drawing ---------- */
  var G = $("graph"), VP = $("viewport"), gRows = $("rows"), gEdges = $("edges"), gNodes = $("nodes");
  var current = null;
  function shortLabel(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }

  function render() {
    var vis = visibleNodes();
    current = layout(vis);
    [gRows, gEdges, gNodes].forEach(function (g) { while (g.firstChild) g.removeChild(g.firstChild); });
    var minX = 0, maxX = 0;
    current.rows.forEach(function (r) { r.forEach(function (n) { minX = Math.min(minX, n.x); maxX = Math.max(maxX, n.x); }); });
    current.rows.forEach(function (r, i) {
      var y = current.rowY[i];
      svg("line", { "class": "row-line", x1: minX - W, x2: maxX + W, y1: y, y2: y }, gRows);
      var t = svg("text", { "class": "row-label", x: minX - W / 2 - 20, y: y }, gRows);
      t.textContent = D.rows[i] === "y" ? "metric" : D.rows[i];
    });
    current.edges.forEach(function (e) {
      var s = byId[e.source], t = byId[e.target], r = Math.min(1, Math.abs(e.weight) / wMax);
      var y1 = s.y - H / 2, y2 = t.y + H / 2, my = (y1 + y2) / 2;
      var p = svg("path", {
        "class": "edge", d: "M" + s.x + "," + y1 + " C" + s.x + "," + my + " " + t.x + "," + my + " " + t.x + "," + y2,
        stroke: mix(e.weight >= 0 ? POS : NEG, 1), "stroke-width": (0.4 + 4 * r).toFixed(2),
        "stroke-opacity": (0.2 + 0.7 * r).toFixed(2), "data-source": e.source, "data-target": e.target
      }, gEdges);
      if (e.weight < 0) p.setAttribute("stroke-dasharray", "5,3");
      svg("title", {}, p).textContent = e.source + " \u2192 " + e.target + ": " + signed(e.weight);
    });
    current.rows.forEach(function (r) { r.forEach(drawNode); });
    var shown = 0, onPaths = 0, above = 0;
    nodes.forEach(function (n) {
      if (n.kind === "metric") return;
      if (vis[n.id]) shown++;
      if (vis[n.id] === "path") onPaths++;
      if (aboveNode(n)) above++;
    });
    var total = nodes.length - 1;
    $("counts").textContent = (shown < total ? shown + " of " + total : shown) + " nodes" +
      (onPaths ? " (" + onPaths + " on paths to y)" : "") + " \u00b7 " + current.edges.length + " edges";
    $("counts").setAttribute("data-nodes", String(gNodes.querySelectorAll(".node:not(.metric)").length));
    $("counts").setAttribute("data-edges", String(current.edges.length));
    $("counts").setAttribute("data-above", String(above));
    $("node-t").textContent = fmt(state.nodeT, 2);
    $("edge-t").textContent = fmt(state.edgeT, 2);
    $("view-faith").textContent = viewFaithfulness(above);
    applySearch();
    if (state.selected && !vis[state.selected]) closeCard();
    markSelected();
  }

  function drawNode(n) {
    var g = svg("g", { "class": "node " + n.kind, transform: "translate(" + n.x + "," + n.y + ")", "data-id": n.id, tabindex: 0 }, gNodes);
    var f = n.effect === null ? "#eeeeee" : mix(n.effect >= 0 ? POSF : NEGF, n.effect / effMax);
    if (n.kind === "error") {
      svg("polygon", { "class": "shape", points: "0," + (-H / 2 - 4) + " " + (H / 2 + 6) + "," + (H / 2) + " " + (-H / 2 - 6) + "," + (H / 2), fill: f }, g);
      svg("text", { y: H / 2 - 3 }, g).textContent = "err";
    } else if (n.kind === "metric") {
      svg("ellipse", { "class": "shape", rx: W / 2, ry: H / 2, fill: "#eeeeee" }, g);
      svg("text", { y: 4 }, g).textContent = "y";
    } else {
      svg("rect", { "class": "shape", x: -W / 2, y: -H / 2, width: W, height: H, rx: 3, fill: f }, g);
      svg("text", { y: n.label ? -3 : 5 }, g).textContent = String(n.feature) + (n.position !== null ? " @" + n.position : "");
      if (n.label) {
        var mark = labelMark(n);
        var t = svg("text", { "class": "sub" + (n.score_low ? " low" : "") + (n.status ? " " + n.status : ""), y: 12 }, g);
        t.textContent = (mark ? mark + " " : "") + shortLabel(n.label, mark ? 16 : 18);
      }
    }
    svg("title", {}, g).textContent = n.id + (n.label ? "\n" + n.label : "") + (labelAbout(n) ? "\n" + labelAbout(n) : "") +
      (n.effect !== null ? "\neffect " + signed(n.effect) : "");
    g.addEventListener("mouseenter", function () { focus(n.id); });
    g.addEventListener("mouseleave", unfocus);
    g.addEventListener("click", function (ev) { ev.stopPropagation(); openCard(n.id); });
    g.addEventListener("keydown", function (ev) { if (ev.key === "Enter") openCard(n.id); });
  }

  /* ---------- hover: the node's upstream and downstream paths ---------- */
  function reach(id, forward) {
    var seen = {}, stack = [id];
    seen[id] = true;
    while (stack.length) {
      var n = byId[stack.pop()];
      (forward ? n.outs : n.ins).forEach(function (e) {
        var o = forward ? e.target : e.source;
        if (!seen[o] && current.edges.indexOf(e) >= 0) { seen[o] = true; stack.push(o); }
      });
    }
    return seen;
  }
  function focus(id) {
    var up = reach(id, false), down = reach(id, true);
    G.classList.add("focus");
    gNodes.querySelectorAll(".node").forEach(function (g) {
      var nid = g.getAttribute("data-id");
      g.classList.toggle("on", !!(up[nid] || down[nid]));
    });
    gEdges.querySelectorAll(".edge").forEach(function (p) {
      var s = p.getAttribute("data-source"), t = p.getAttribute("data-target");
      p.classList.toggle("on", !!((up[s] && up[t]) || (down[s] && down[t])));
    });
  }
  function unfocus() { G.classList.remove("focus"); }

  /* ---------- what a label is worth: review status and author (annotations), score (auto labels) ---------- */
  var MARKS = { accepted: "\u2713", proposed: "?", rejected: "\u2717" }, LOW = 0.7;
  function labelMark(n) {
    if (n.status && MARKS[n.status]) return MARKS[n.status] + (n.forced ? "\u26a0" : "");
    if (n.score_low) return "\u26a0";
    return "";
  }
  function labelAbout(n) {
    if (n.status) {
      return n.status + " \u00b7 label by " + (n.author || "?") + (n.reviewer ? " \u00b7 " + n.status + " by " + n.reviewer : "") +
        (n.forced ? " \u00b7 \u26a0 made on another SAE (forced): " + n.forced : "");
    }
    if (n.source === "auto") {
      if (n.score === undefined || n.score === null) return "auto label (not scored)";
      return "auto label \u00b7 score " + Number(n.score).toFixed(2) + (n.score_low ? " \u26a0 low: it does not say where this feature fires" : "");
    }
    return "";
  }

  /* ---------- card ---------- */
  var card = $("card");
  function closeCard() { state.selected = null; card.hidden = true; markSelected(); }
  function markSelected() {
    gNodes.querySelectorAll(".node").forEach(function (g) { g.classList.toggle("selected", g.getAttribute("data-id") === state.selected); });
  }
  function contextLine(c, parent) {
    var line = html("div", "context", null, parent);
    html("span", "val", fmt(c.max, 3), line);
    var top = Math.max(c.max, 1e-9);
    c.tokens.forEach(function (tok, i) {
      var a = c.acts[i] || 0;
      var s = html("span", "tok" + (i === c.position ? " max" : ""), tok, line);
      if (a > 0) s.style.backgroundColor = "rgba(230, 130, 20, " + Math.min(1, 0.12 + 0.88 * a / top).toFixed(3) + ")";
      s.title = "activation " + fmt(a, 3);
    });
    return line;
  }
  function histogram(h, parent) {
    if (!h || !h.counts || !h.counts.length) return;
    var w = 300, hh = 50, n = h.counts.length, m = Math.max.apply(null, h.counts);
    var s = svg("svg", { "class": "hist", width: w, height: hh + 14, viewBox: "0 0 " + w + " " + (hh + 14) }, parent);
    h.counts.forEach(function (c, i) {
      var bh = m ? hh * c / m : 0;
      svg("title", {}, svg("rect", { x: (i * w / n).toFixed(1), y: (hh - bh).toFixed(1), width: Math.max(1, w / n - 1).toFixed(1), height: bh.toFixed(1) }, s))
        .textContent = fmt(h.edges[i], 2) + "\u2013" + fmt(h.edges[i + 1], 2) + ": " + c;
    });
    svg("text", { x: 0, y: hh + 12, "font-size": 10, fill: "#777" }, s).textContent = fmt(h.edges[0], 2);
    svg("text", { x: w, y: hh + 12, "font-size": 10, fill: "#777", "text-anchor": "end" }, s).textContent = fmt(h.edges[n], 2) + " (log scale)";
  }
  function edgeList(title, list, other, parent) {
    if (!list.length) return;
    html("h3", null, title, parent);
    var ul = html("ul", "edges-list", null, parent);
    list.slice().sort(function (a, b) { return Math.abs(b.weight) - Math.abs(a.weight); }).slice(0, 8).forEach(function (e) {
      var o = byId[other(e)], li = html("li", null, null, ul);
      html("span", "w", signed(e.weight), li);
      li.appendChild(document.createTextNode(o.id + (o.label ? "  " + o.label : "")));
      li.addEventListener("click", function () { openCard(o.id); });
    });
  }
  function openCard(id) {
    var n = byId[id], d = (D.dashboards || {})[id.split("@")[0]];
    state.selected = id;
    while (card.firstChild) card.removeChild(card.firstChild);
    card.hidden = false;
    var close = html("button", "close", "\u00d7", card);
    close.type = "button"; close.title = "close";
    close.addEventListener("click", closeCard);
    html("h2", null, n.id, card);
    if (n.label) {
      html("div", "label", (labelMark(n) ? labelMark(n) + " " : "") + n.label, card);
      if (labelAbout(n)) html("div", "about" + (n.score_low || n.forced ? " warn" : ""), labelAbout(n), card);
    }
    html("div", "stats", (n.kind === "metric" ? "metric " + D.metric : n.kind + " \u00b7 " + n.submodule) +
      (n.effect !== null ? " \u00b7 effect " + signed(n.effect) : ""), card);
    if (n.url) { var a = html("a", null, n.url, card); a.href = /^https?:\/\//.test(n.url) ? n.url : "#"; a.target = "_blank"; a.rel = "noopener"; }
    if (d) {
      html("div", "stats", "fires on " + (100 * d.density).toFixed(3) + "% of " + d.n_tokens + " tokens \u00b7 max " + fmt(d.max) +
        " \u00b7 mean " + fmt(d.mean), card);
      histogram(d.histogram, card);
      if (d.auto_label && d.auto_label.auroc !== undefined && d.auto_label.auroc !== null) {
        var al = d.auto_label;
        html("div", "stats" + (al.low ? " warn" : ""), "auto label \u201c" + al.label + "\u201d: score " + al.auroc.toFixed(2) +
          " on " + al.n_contexts + " held-out contexts (" + al.rule + ": " + Math.round(100 * al.activation_recall) +
          "% of its activation, " + Math.round(100 * al.recall) + "% of " + al.n_firing + " firing tokens)" +
          (al.low ? " \u26a0 low" : al.low === null ? " (too few firings to flag)" : ""), card);
      }
      html("h3", null, "top contexts", card);
      var tops = html("div", "contexts top", null, card);
      if (!d.top.length) html("div", "note", "never fires on the corpus", tops);
      d.top.forEach(function (c) { citable(contextLine(c, tops), c); });
      (d.quantiles || []).forEach(function (b) {
        html("h3", null, "random, quantile " + Math.round(100 * b.quantile[0]) + "\u2013" + Math.round(100 * b.quantile[1]) +
          "% (" + fmt(b.range[0]) + "\u2013" + fmt(b.range[1]) + ")", card);
        var q = html("div", "contexts", null, card);
        b.contexts.forEach(function (c) { contextLine(c, q); });
      });
      if (d.promoted && d.promoted.length) {
        html("h3", null, "promotes", card);
        var up = html("div", "chips up", null, card);
        d.promoted.forEach(function (p) { html("span", null, p.token, up).title = signed(p.value); });
        html("h3", null, "suppresses", card);
        var dn = html("div", "chips down", null, card);
        d.suppressed.forEach(function (p) { html("span", null, p.token, dn).title = signed(p.value); });
        html("div", "note", d.logit_note, card);
      }
    } else if (n.kind === "feature") {
      html("div", "note", "no dashboard for this feature (run sfc dashboards and sfc view --dashboards DIR)", card);
    }
    if (n.kind === "feature") annotationPanel(n, card);
    var vis = visibleNodes();
    edgeList("strongest incoming edges", n.ins.filter(function (e) { return visibleEdge(e, vis); }), function (e) { return e.source; }, card);
    edgeList("strongest outgoing edges", n.outs.filter(function (e) { return visibleEdge(e, vis); }), function (e) { return e.target; }, card);
    markSelected();
  }

  /* ---------- annotations: propose, review, download (sfc-annotations/1; the site itself never writes) ---------- */
  var A = D.annotations || { records: [], fingerprints: {} };
  var annotations = { base: (A.records || []).slice(), added: [], cited: {}, who: "" };
  var FIELDS = ["schema", "feature", "sae_fingerprint", "label", "description", "author", "created", "status", "reviewer", "note", "evidence"];
  function featureOf(id) { return id.split("@")[0]; }
  function allRecords() { return annotations.base.concat(annotations.added); }
  function historyOf(fid) { return allRecords().filter(function (r) { return r.feature === fid; }); }
  function nowIso() { return new Date().toISOString().replace(/\.\d{3}Z$/, "Z"); }
  function record(fields) {
    var r = {};
    FIELDS.forEach(function (k) { r[k] = fields[k] === undefined ? null : fields[k]; });
    if (fields.decision) r.decision = fields.decision;
    return r;
  }
  function citable(line, c) {
    line.classList.add("citable");
    line.title = "click to cite this context as evidence (context:" + c.context + ")";
    var key = "context:" + c.context;
    if (annotations.cited[key]) line.classList.add("cited");
    line.addEventListener("click", function () {
      annotations.cited[key] = !annotations.cited[key];
      line.classList.toggle("cited", !!annotations.cited[key]);
    });
  }
  function field(parent, label, tag, cls) {
    var wrap = html("label", "field", null, parent);
    html("span", null, label, wrap);
    var input = html(tag, cls, null, wrap);
    if (tag === "input") input.type = "text";
    return input;
  }
  function applyRecord(r) {  /* the page shows the feature's latest record as its nodes' label */
    nodes.forEach(function (n) {
      if (n.kind !== "feature" || featureOf(n.id) !== r.feature) return;
      n.label = r.label; n.status = r.status; n.author = r.author; n.reviewer = r.reviewer; n.source = "annotations";
      delete n.score; delete n.score_low; delete n.forced;
    });
  }
  function addRecord(r, n) {
    annotations.added.push(r);
    applyRecord(r);
    updateDownload();
    render();
    openCard(n.id);
  }
  function annotationPanel(n, parent) {
    var fid = featureOf(n.id), fp = (A.fingerprints || {})[n.submodule];
    var box = html("section", "annotate", null, parent);
    html("h3", null, "annotations", box);
    var hist = historyOf(fid);
    if (hist.length) {
      var ul = html("ul", "history", null, box);
      hist.forEach(function (r) {
        var li = html("li", r.status, null, ul);
        html("span", "mark", MARKS[r.status] || "", li);
        li.appendChild(document.createTextNode(" " + r.label + " \u2014 " + r.status + ", " + r.author +
          (r.reviewer ? ", reviewed by " + r.reviewer : "") + (r.note ? ": " + r.note : "") + " (" + r.created + ")" +
          (annotations.added.indexOf(r) >= 0 ? " \u00b7 new" : "")));
      });
    } else {
      html("div", "note", "no annotations of " + fid + " yet", box);
    }
    if (!fp) {
      html("div", "note", "this circuit records no SAE fingerprint for " + n.submodule + ": annotations cannot be tied to its SAE", box);
      return;
    }
    var msg = html("div", "note msg", null, box);
    var current = hist.length ? hist[hist.length - 1] : null;
    if (current && current.status === "proposed") {
      var rv = html("div", "review", null, box);
      html("div", "stats", "review \u201c" + current.label + "\u201d (proposed by " + current.author + ")", rv);
      var reviewer = field(rv, "reviewer", "input", "reviewer");
      reviewer.value = annotations.who;
      var note = field(rv, "note", "input", "review-note");
      ["accept", "reject"].forEach(function (verb) {
        var b = html("button", verb, verb, rv);
        b.type = "button";
        b.addEventListener("click", function () {
          var who = reviewer.value.trim();
          if (!who) { msg.textContent = "name the reviewer"; return; }
          if (who === current.author.trim()) { msg.textContent = "a review needs a second person: " + who + " wrote this label"; return; }
          annotations.who = who;
          var r = record({ schema: A.schema, feature: fid, sae_fingerprint: current.sae_fingerprint, label: current.label,
            description: current.description, author: current.author, created: nowIso(), status: verb === "accept" ? "accepted" : "rejected",
            reviewer: who, note: note.value.trim() || null, evidence: current.evidence || [], decision: current.decision });
          addRecord(r, n);
        });
      });
    }
    var form = html("div", "propose", null, box);
    html("div", "stats", current ? "propose another label" : "propose a label", form);
    var label = field(form, "label", "input", "label-input");
    var desc = field(form, "description", "textarea", "description");
    var author = field(form, "author", "input", "author");
    author.value = annotations.who;
    var evidence = field(form, "evidence (text; click top contexts to cite them)", "input", "evidence");
    var go = html("button", "propose-button", "propose", form);
    go.type = "button";
    go.addEventListener("click", function () {
      var text = label.value.trim(), who = author.value.trim();
      if (!text) { msg.textContent = "write a label"; return; }
      if (!who) { msg.textContent = "name the author"; return; }
      annotations.who = who;
      var ev = Object.keys(annotations.cited).filter(function (k) { return annotations.cited[k]; }).sort();
      if (evidence.value.trim()) ev.push(evidence.value.trim());
      annotations.cited = {};
      addRecord(record({ schema: A.schema, feature: fid, sae_fingerprint: fp, label: text, description: desc.value.trim(),
        author: who, created: nowIso(), status: "proposed", reviewer: null, note: null, evidence: ev }), n);
    });
  }
  function annotationsText() {
    return allRecords().map(function (r) { return JSON.stringify(record(r)); }).join("\n") + "\n";
  }
  function downloadName() {
    var f = A.file ? String(A.file).split(/[\\/]/).pop() : "";
    return (f && /\.jsonl?$/.test(f) ? f.replace(/\.jsonl?$/, "") : "annotations") + "-reviewed.jsonl";
  }
  function updateDownload() {
    var b = $("download"), k = annotations.added.length;
    b.hidden = k === 0;
    b.textContent = "download annotations (" + k + " new)";
    b.setAttribute("data-new", String(k));
  }
  function download() {
    var blob = new Blob([annotationsText()], { type: "application/x-ndjson" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = downloadName();
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 10000);
    annotations.downloaded = annotations.added.length;
  }
  $("download").addEventListener("click", download);
  window.addEventListener("beforeunload", function (ev) {
    if (annotations.added.length && annotations.downloaded !== annotations.added.length) { ev.preventDefault(); ev.returnValue = ""; }
  });

  /* ---------- search ---------- */
  function applySearch() {
    var q = state.query.trim().toLowerCase(), count = 0;
    gNodes.querySelectorAll(".node").forEach(function (g) {
      var n = byId[g.getAttribute("data-id")];
      var hit = !!q && (n.id.toLowerCase().indexOf(q) >= 0 || (n.label || "").toLowerCase().indexOf(q) >= 0);
      g.classList.toggle("match", hit);
      if (hit) count++;
    });
    G.classList.toggle("searching", !!q);
    $("matches").textContent = q ? count + " match" + (count === 1 ? "" : "es") : "";
  }
  $("search").addEventListener("input", function (ev) { state.query = ev.target.value; applySearch(); });
  $("search").addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    var g = gNodes.querySelector(".node.match");
    if (g) { var n = byId[g.getAttribute("data-id")]; centerOn(n); openCard(n.id); }
  });

  /* ---------- sliders ---------- */
  var effHi = Math.max(effMax, nodeLo), wHi = Math.max(wMax, edgeLo);
  $("node-slider").addEventListener("input", function (ev) { state.nodeT = sliderValue(+ev.target.value, nodeLo, effHi, D.node_threshold); render(); });
  $("edge-slider").addEventListener("input", function (ev) { state.edgeT = sliderValue(+ev.target.value, edgeLo, wHi, D.edge_threshold); render(); });
  $("paths").addEventListener("change", function (ev) { state.paths = ev.target.checked; render(); fit(); });

  /* ---------- pan and zoom ---------- */
  var view = { x: 0, y: 0, k: 1 };
  function apply() { VP.setAttribute("transform", "translate(" + view.x + "," + view.y + ") scale(" + view.k + ")"); }
  function fit() {
    var b = VP.getBBox(), r = G.getBoundingClientRect();
    if (!b.width || !r.width) return;
    view.k = Math.min(r.width / (b.width + 40), r.height / (b.height + 40), 2);
    view.x = r.width / 2 - (b.x + b.width / 2) * view.k;
    view.y = r.height / 2 - (b.y + b.height / 2) * view.k;
    apply();
  }
  function centerOn(n) {
    var r = G.getBoundingClientRect();
    view.k = Math.max(view.k, 1);
    view.x = r.width / 2 - n.x * view.k; view.y = r.height / 2 - n.y * view.k;
    apply();
  }
  G.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = G.getBoundingClientRect(), px = ev.clientX - r.left, py = ev.clientY - r.top;
    var k = Math.min(8, Math.max(0.05, view.k * Math.exp(-ev.deltaY * 0.0015)));
    view.x = px - (px - view.x) * k / view.k; view.y = py - (py - view.y) * k / view.k; view.k = k;
    apply();
  }, { passive: false });
  var drag = null;
  G.addEventListener("mousedown", function (ev) { drag = { x: ev.clientX - view.x, y: ev.clientY - view.y, moved: false }; G.classList.add("dragging"); });
  window.addEventListener("mousemove", function (ev) {
    if (!drag) return;
    view.x = ev.clientX - drag.x; view.y = ev.clientY - drag.y; drag.moved = true; apply();
  });
  window.addEventListener("mouseup", function () { drag = null; G.classList.remove("dragging"); });
  $("fit").addEventListener("click", fit);
  window.addEventListener("resize", fit);

  $("title").textContent = D.title;
  document.title = D.title;
  $("faith").textContent = circuitFaithfulness();
  if (D.warnings && D.warnings.length) {
    $("warn").hidden = false;
    $("warn").textContent = "\u26a0 " + D.warnings[0];
    $("warn").title = D.warnings.join("\n");
  }
  firstView();
  $("node-slider").value = String(state.nodeT > D.node_threshold ? sliderPosition(state.nodeT, nodeLo, effHi) : 0);
  $("edge-slider").value = String(state.edgeT > D.edge_threshold ? sliderPosition(state.edgeT, edgeLo, wHi) : 0);
  render();
  fit();
  updateDownload();
  window.SFC_VIEWER = { render: render, openCard: openCard, state: state, pathOf: pathOf, annotationsText: annotationsText };
})();
