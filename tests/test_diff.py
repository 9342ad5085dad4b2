"""``sfc diff``: a circuit against itself, the toy rc and nounpp circuits (the documented figures), other SAEs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.cli import main
from sfc_plugin.diff import compare, spearman

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _circuit(effects: dict, edges=(), fp="a" * 64, aggregation="sum") -> Circuit:
    nodes = [Node("y", None, None, None, "metric", None, None, 1.0)]
    for nid, e in effects.items():
        sub, _, rest = nid.partition("/")
        feat = rest.split("@")[0]
        err = feat == "err"
        nodes.append(Node(nid, sub, f"h.{sub}", 0, "error" if err else "feature", None if err else int(feat), None, e))
    prov = {"saes": [{"submodule": s, "fingerprint": {"sha256": fp}} for s in {n.submodule for n in nodes[1:]}]}
    return Circuit(nodes, [Edge(*x) for x in edges], 1.0, "logit_diff", "ig", 10, aggregation, 0.1, 0.01, prov)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = random.Random(0)
    for n in (3, 10, 50):
        x = [rng.choice([0.1, 0.2, 0.5, rng.random()]) for _ in range(n)]
        y = [v + rng.gauss(0, 0.3) for v in x]
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-4)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None


def test_matched_sizes_and_nodes_in_one_only():
    a = _circuit({"r/1": 3.0, "r/2": -2.0, "r/3": 1.0, "r/err": 0.5}, [("r/1", "y", 1.0), ("r/2", "y", -0.5)])
    b = _circuit({"r/1": 2.0, "r/2": -1.0, "r/4": 1.5, "r/err": 0.2, "r/5": 0.1, "r/6": 0.05}, [("r/1", "y", 2.0)])
    d = compare(a, b)
    assert d["comparable"]["by_id"] and d["nodes"]["shared"] == 3
    assert d["nodes"]["jaccard"] == round(3 / 7, 4)
    assert d["nodes"]["matched"] == [{"k": 4, "jaccard": round(3 / 5, 4)}]  # {1,2,3,err} vs {1,2,4,err}
    assert [x["id"] for x in d["only_a"]] == ["r/3"] and [x["id"] for x in d["only_b"]] == ["r/4", "r/5", "r/6"]
    assert d["rank_correlation"] == 1.0 and d["sign_agreement"] == 1.0 and d["edges"]["jaccard"] == 0.5
    positions = _circuit({"r/1@2": 1.0, "r/1@3": 2.0, "r/2@1": -2.0, "r/3@0": 1.0, "r/err@1": 0.5}, aggregation="none")
    assert compare(a, positions)["nodes"]["jaccard"] == 1.0 and compare(a, positions)["level"].startswith("feature")


def test_other_saes_compare_only_what_can_be():
    a = _circuit({"r/1": 1.0})
    d = compare(a, _circuit({"r/1": 1.0}, fp="b" * 64))
    assert not d["comparable"]["by_id"] and "different SAEs for r" in d["comparable"]["why"] and "nodes" in d["a"]
    assert "jaccard" not in json.dumps(d) and d["b"]["total_effect"] == 1.0
    bare = Circuit.from_dict({**a.to_dict(), "provenance": {}})
    assert "no recorded SAE fingerprint" in compare(a, bare)["comparable"]["why"]


@pytest.fixture(scope="module")
def toy_circuits(tmp_path_factory):
    """``sfc discover``'s defaults on toy/sva-rc and toy/sva-nounpp (as docs/diff.md)."""
    out = tmp_path_factory.mktemp("toy")
    for cond in ("rc", "nounpp"):
        assert main(["discover", "--data", f"toy/sva-{cond}", "--no-evaluate", "-q", "-o", str(out / cond)]) == 0
        (out / cond / "circuit.json").rename(out / f"{cond}.json")
    return out


def test_cli_diff_with_itself_and_the_documented_rc_nounpp_figures(toy_circuits, tmp_path, capsys):
    rc, nounpp = toy_circuits / "rc.json", toy_circuits / "nounpp.json"
    assert main(["diff", str(rc), str(rc), "-o", str(tmp_path / "self")]) == 0
    same = json.loads((tmp_path / "self" / "diff.json").read_text())
    assert same["nodes"]["jaccard"] == 1.0 and all(m["jaccard"] == 1.0 for m in same["nodes"]["matched"])
    assert same["edges"]["jaccard"] == 1.0 and same["rank_correlation"] == 1.0 and same["only_a"] == []
    assert (tmp_path / "self" / "diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["diff", str(rc), str(nounpp), "-o", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    d = json.loads((tmp_path / "d" / "diff.json").read_text())
    page = (DOCS / "diff.md").read_text()
    n = d["nodes"]
    documented = (
        f"{n['shared']} shared, {n['only_a']} only in A, {n['only_b']} only in B; Jaccard {n['jaccard']:.3f}",
        f"edges: {d['edges']['shared']} shared, Jaccard {d['edges']['jaccard']:.3f}",
        f"(Spearman): {d['rank_correlation']:.3f}",
    )
    for text in documented:  # the docs page shows this run's output
        assert text in out and text in page, text
    assert 0.5 < n["jaccard"] < 1.0 and d["rank_correlation"] > 0.8
    assert main(["diff", str(rc), str(tmp_path / "none.json"), "-o", str(tmp_path / "x")]) == 2


def test_other_saes_match_features_by_decoder_direction():
    import torch

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(32, 16, generator=gen)
    perm = torch.randperm(32, generator=gen)  # B's feature j is A's feature perm[j]
    wb = w[perm] + 0.05 * torch.randn(32, 16, generator=gen)
    inv = {int(p): j for j, p in enumerate(perm.tolist())}
    a = _circuit({"r/1": 3.0, "r/2": -2.0, "r/3": 1.0, "r/err": 0.5}, [("r/1", "y", 1.0), ("r/2", "r/1", 0.3)])
    b = _circuit(
        {f"r/{inv[1]}": 2.5, f"r/{inv[2]}": -1.5, f"r/{inv[3]}": 0.8, "r/err": 0.4},
        [(f"r/{inv[1]}", "y", 1.0), (f"r/{inv[2]}", f"r/{inv[1]}", 0.2)],
        fp="b" * 64,
    )
    d = compare(a, b, decoders=({"r": w}, {"r": wb}))
    assert d["comparable"]["by_decoder"] and d["matching"]["matched"] == 3 and d["matching"]["median_cosine"] > 0.99
    assert d["nodes"]["jaccard"] == 1.0 and d["edges"]["jaccard"] == 1.0 and d["rank_correlation"] == 1.0
    unrelated = compare(a, b, decoders=({"r": w}, {"r": torch.randn(32, 16, generator=gen)}), min_cosine=0.9)
    assert unrelated["matching"]["matched"] == 0 and unrelated["nodes"]["shared"] == 1  # only the error node
    assert [x["id"] for x in unrelated["only_a"]][:3] == ["A:r/1", "A:r/2", "A:r/3"]  # never taken for B's ids
    wide = compare(a, b, decoders=({"r": w}, {"r": torch.randn(32, 8)}))
    assert "decoder widths differ (16 vs 8)" in wide["comparable"]["why"] and "nodes" not in wide


def test_cli_diff_loads_the_recorded_saes_to_match_features(toy_circuits, tmp_path, capsys):
    rc = json.loads((toy_circuits / "rc.json").read_text())
    for s in rc["provenance"]["saes"]:  # as if found with other SAEs: the toy SAEs are loaded for both sides
        if s["submodule"] == "resid_1":
            s["fingerprint"]["sha256"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(rc))
    assert main(["diff", str(toy_circuits / "rc.json"), str(tmp_path / "other.json"), "-o", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "comparable by id: no (different SAEs for resid_1" in out and "median cosine 1.000" in out
    d = json.loads((tmp_path / "d" / "diff.json").read_text())
    assert d["matching"]["unmatched"] == 0 and d["nodes"]["jaccard"] == 1.0 and (tmp_path / "d" / "diff.png").exists()
    args = [
        "diff",
        str(toy_circuits / "rc.json"),
        str(tmp_path / "other.json"),
        "--no-match",
        "-o",
        str(tmp_path / "n"),
    ]
    assert main(args) == 0 and not (tmp_path / "n" / "diff.png").exists()
    assert "nodes" not in json.loads((tmp_path / "n" / "diff.json").read_text())
