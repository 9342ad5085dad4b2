"""Open exported graph files in circuit-tracer's own viewer, offline, in headless Chromium.

circuit-tracer's frontend (its wheel's ``frontend/assets``) loads d3 + d3-jetpack, dagre and pako from CDNs; here
they come from npm packages instead, served with the assets and the graph files on 127.0.0.1. A small script
injected at the top of the page records console errors, uncaught exceptions, unhandled rejections and failed
loads, and after the page settles writes a JSON report (drawn nodes, errors) into the DOM, which
``chromium --headless --dump-dom`` prints. ``.ci/run`` installs what this needs into ``.ci/vendor``.

    python scripts/circuit_tracer_viewer.py GRAPH_DIR SLUG [--screenshot OUT.png]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / ".ci" / "vendor"
# npm package file -> the CDN script it replaces (by file name in index.html)
NPM_FILES = {
    "d3.js": "d3/dist/d3.js",
    "d3-collection.js": "d3-collection/dist/d3-collection.js",
    "d3-jetpack.js": "d3-jetpack/build/d3-jetpack.cjs",
    "dagre.min.js": "dagre/dist/dagre.min.js",
    "pako.min.js": "pako/dist/pako.min.js",
}
NPM_PACKAGES = (
    "d3@7.9.0",
    "d3-collection@1.0.7",
    "d3-jetpack@2.3.0",
    "dagre@0.8.5",
    "pako@2.1.0",
)  # what .ci/run installs
DROPPED = ("hotserver-client-ws.js", "npy_v0.js")  # the CDN's live-reload client; .npy reader (no .npy files here)
# d3-jetpack's UMD build replaces a global d3 but takes its d3 modules through AMD: a one-call define() hands it
# d3 7 and adds what it exports (keeping d3's own functions). The CDN's jetpack build (jetpack_2024-07-20.js) also
# gives d3.conventions() results a drawAxis(sel) method; here it calls d3-jetpack's d3.drawAxis.
JETPACK = """<script>
window.define = function(deps, factory){
  var ex = {};
  factory.apply(null, [ex].concat(deps.slice(1).map(function(){ return window.d3 })));
  Object.keys(ex).forEach(function(k){ if (!(k in window.d3)) window.d3[k] = ex[k] });
  window.d3.conventions = function(c){
    c = ex.conventions(c);
    c.drawAxis = function(sel){ return ex.drawAxis(Object.assign({}, c, {svg: sel || c.svg})) };
    return c;
  };
  delete window.define;
};
window.define.amd = true;
</script>
<script src='/lib/d3-jetpack.js'></script>"""

CAPTURE = """<script>
window.__sfc = {errors: []};
(function(){
  var orig = console.error.bind(console);
  console.error = function(){ __sfc.errors.push('console.error: ' + Array.from(arguments).map(String).join(' ')); orig.apply(null, arguments) };
  window.addEventListener('error', function(e){
    var t = e.target, what = t && (t.src || t.href);
    __sfc.errors.push(what ? 'failed to load ' + what : 'uncaught: ' + e.message + ' at ' + e.filename + ':' + e.lineno);
  }, true);
  window.addEventListener('unhandledrejection', function(e){ __sfc.errors.push('unhandled rejection: ' + (e.reason && (e.reason.stack || e.reason))) });
  setTimeout(function(){
    var drawn = Array.from(document.querySelectorAll('.link-graph text.node')).map(function(el){ return el.__data__ && el.__data__.node_id });
    var pre = document.createElement('pre'); pre.id = 'sfc-report'; pre.style.display = 'none';
    pre.textContent = JSON.stringify({drawn: drawn, errors: __sfc.errors, title: document.title});
    document.body.appendChild(pre);
  }, %(settle_ms)d);
})();
</script>
"""


def assets_dir() -> Path | None:
    """circuit-tracer's ``frontend/assets``: from ``.ci/vendor/circuit-tracer`` or an installed package (not imported)."""
    local = VENDOR / "circuit-tracer" / "circuit_tracer" / "frontend" / "assets"
    if (local / "index.html").is_file():
        return local
    spec = importlib.util.find_spec("circuit_tracer")
    if spec and spec.origin:
        assets = Path(spec.origin).parent / "frontend" / "assets"
        if (assets / "index.html").is_file():
            return assets
    return None


def npm_dir() -> Path | None:
    nm = VENDOR / "npm" / "node_modules"
    return nm if all((nm / f).is_file() for f in NPM_FILES.values()) else None


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def missing() -> str | None:
    """Why the viewer cannot be opened here, or None."""
    if assets_dir() is None:
        return "circuit-tracer's frontend assets are not installed (.ci/run puts them in .ci/vendor/circuit-tracer)"
    if npm_dir() is None:
        return "the viewer's npm packages are not installed (.ci/run: npm install --prefix .ci/vendor/npm)"
    if chromium() is None:
        return "no chromium binary (apt-get install chromium)"
    return None


def patched_index(assets: Path, settle_ms: int) -> bytes:
    html = (assets / "index.html").read_text(encoding="utf-8")

    def swap(m):
        src = m.group(1)
        name = src.rsplit("/", 1)[-1]
        if name in DROPPED:
            return ""
        if name == "d3.js" and "://" in src:  # d3 7 dropped d3.nest, which jetpack's nestBy uses: d3-collection
            return "<script src='/lib/d3.js'></script>\n<script src='/lib/d3-collection.js'></script>"
        if name == "jetpack_2024-07-20.js":
            return JETPACK
        if name in NPM_FILES and "://" in src:
            return f"<script src='/lib/{name}'></script>"
        return m.group(0)

    html = re.sub(r"<script src='([^']*)'></script>", swap, html)
    if "://" in re.sub(r"<a [^>]*>", "", html).split("<script>")[0]:
        raise RuntimeError("circuit-tracer's index.html still loads something from the network")
    return html.replace(
        "<meta charset='utf-8'>", "<meta charset='utf-8'>\n" + CAPTURE % {"settle_ms": settle_ms}, 1
    ).encode()


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".cjs": "text/javascript", ".js": "text/javascript"}

    def __init__(self, *args, assets, data, libs, index, **kw):
        self.assets, self.data, self.libs, self.index = assets, data, libs, index
        super().__init__(*args, directory=str(assets), **kw)

    def log_message(self, *args):  # quiet
        pass

    def translate_path(self, path):
        path = path.split("?", 1)[0]
        for prefix, base in (("/data/", self.data), ("/graph_data/", self.data)):
            if path.startswith(prefix):
                return str(base / Path(path[len(prefix) :]).name)
        if path.startswith("/lib/") and Path(path).name in NPM_FILES:
            return str(self.libs / NPM_FILES[Path(path).name])
        return super().translate_path(path)

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/index.html"):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(self.index)))
            self.end_headers()
            self.wfile.write(self.index)
            return
        super().do_GET()


@contextlib.contextmanager
def serve(graph_dir: Path, settle_ms: int = 4000):
    """Serve the viewer and ``graph_dir`` on 127.0.0.1 (a free port) for the ``with`` block; yields the base URL."""
    assets, libs = assets_dir(), npm_dir()
    handler = partial(_Handler, assets=assets, data=Path(graph_dir), libs=libs, index=patched_index(assets, settle_ms))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _chromium(args: list[str], hang_guard_s: float | None = None) -> subprocess.CompletedProcess:
    """Headless Chromium; ``--virtual-time-budget`` makes it exit once the page has had 15 s of (virtual) time."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=hang_guard_s, check=False)


def open_graph(
    graph_dir: Path, slug: str, screenshot: Path | None = None, size=(1500, 1100), clicked: str | None = None
) -> dict:
    """Load ``graph_dir/<slug>.json`` in the viewer: ``{"drawn": [node ids], "errors": [...], "title"}``.

    ``clicked``: a node id to select (the viewer then draws its edges), e.g. the logit node's.
    """
    from urllib.parse import urlencode

    with serve(graph_dir) as url:
        page = f"{url}/index.html?" + urlencode({"slug": slug, **({"clickedId": clicked} if clicked else {})})
        done = _chromium(["--dump-dom", page])
        if screenshot is not None:
            shot = _chromium(
                [
                    f"--screenshot={Path(screenshot).resolve()}",
                    f"--window-size={size[0]},{size[1]}",
                    "--hide-scrollbars",
                    page,
                ]
            )
            if shot.returncode != 0:
                raise RuntimeError(f"chromium --screenshot failed: {shot.stderr[-2000:]}")
    m = re.search(r"<pre id=\"sfc-report\"[^>]*>(.*?)</pre>", done.stdout, re.S)
    if not m:
        raise RuntimeError(f"the viewer wrote no report (chromium exit {done.returncode}): {done.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(m.group(1)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("graph_dir", type=Path)
    p.add_argument("slug")
    p.add_argument("--screenshot", type=Path)
    p.add_argument("--clicked", help="node id to select (default: the logit node)")
    args = p.parse_args(argv)
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    clicked = args.clicked
    if clicked is None:
        graph = json.loads((args.graph_dir / f"{args.slug}.json").read_text(encoding="utf-8"))
        clicked = next((n["node_id"] for n in graph["nodes"] if n["feature_type"] == "logit"), None)
    report = open_graph(args.graph_dir, args.slug, args.screenshot, clicked=clicked)
    print(json.dumps({"drawn": len(report["drawn"]), "errors": report["errors"], "title": report["title"]}, indent=1))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
