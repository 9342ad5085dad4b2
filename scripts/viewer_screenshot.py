"""Screenshot of `sfc view` on a circuit with one node's card open (the README's picture).

    python scripts/viewer_screenshot.py SITE_DIR OUT.png [--node resid_2/173] [--node-slider 40] [--no-card] [--scroll-to .annotate]

SITE_DIR is what `sfc view CIRCUIT -o SITE_DIR` wrote; needs Debian's `chromium` (headless).
The page is loaded from file:// with a few lines appended that move the node slider (when given; else the
page's first screen stays), hover and click the node, exactly as a user would.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site")
    ap.add_argument("out")
    ap.add_argument("--node", default="resid_2/173")
    ap.add_argument("--node-slider", type=int, default=None, help="slider position 0-100 (default: the first screen)")
    ap.add_argument("--no-card", action="store_true", help="open no card: the graph alone")
    ap.add_argument("--size", default="1400,1000")
    ap.add_argument("--scroll-to", metavar="SELECTOR", help="scroll the card to this element, e.g. .annotate")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("needs chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(args.site, site)
        page = (site / "index.html").read_text(encoding="utf-8")
        (site / "shot.html").write_text(
            page.replace(
                '<script src="viewer.js"></script>', '<script src="viewer.js"></script><script src="shot.js"></script>'
            )
        )
        node = json.dumps(args.node)
        slider = (
            ""
            if args.node_slider is None
            else f"var s = document.getElementById('node-slider'); s.value = {int(args.node_slider)};\n"
            "s.dispatchEvent(new Event('input', {bubbles: true}));\n"
        )
        card = (
            ""
            if args.no_card
            else f"var g = document.querySelector('.node[data-id=' + JSON.stringify({node}) + ']');\n"
            "g.dispatchEvent(new MouseEvent('click', {bubbles: true}));\n"
            "window.dispatchEvent(new Event('resize'));\n"
            "g = document.querySelector('.node[data-id=' + JSON.stringify(" + node + ") + ']');\n"
            "g.dispatchEvent(new MouseEvent('mouseenter'));\n"
        )
        scroll = (
            ""
            if not args.scroll_to
            else f"var t = document.querySelector('#card ' + {json.dumps(args.scroll_to)}); if (t) t.scrollIntoView();\n"
        )
        (site / "shot.js").write_text(slider + card + scroll)
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={args.size}",
                f"--screenshot={Path(args.out).resolve()}",
                (site / "shot.html").as_uri(),
            ],
            check=True,
            capture_output=True,
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
