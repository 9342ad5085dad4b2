"""Behaviour clustering on the toy world: contexts, behaviour vectors, clusters, circuits, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from sfc_plugin.errors import SFCError

SETTINGS = dict(n_contexts=400, k=6, method="ig", steps=10, circuit_examples=8, shard_size=128, batch_size=32)


@pytest.fixture(scope="module")
def toy_world():
    from sfc_plugin import toy

    return toy.load()


@pytest.fixture(scope="module")
def run(toy_world, tmp_path_factory):
    """One clustering run on the toy corpus (400 contexts, k=6), shared by the tests below."""
    from sfc_plugin.clusters import ClusterConfig, find_clusters

    out = tmp_path_factory.mktemp("clusters")
    model, saes = toy_world
    summary = find_clusters(model, saes, out, ClusterConfig(**SETTINGS), progress=False)
    return out, summary


def _files(out):
    """Every output file's bytes but the timing log."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "timing.json"
    }


def test_clusters_json_contract(run):
    out, summary = run
    data = json.loads((out / "clusters.json").read_text())
    assert data == summary
    assert data["n_contexts"] == 400 and data["n_clusters"] == 6
    assert len(data["assignments"]) == 400 and set(data["assignments"]) == set(range(6))
    sizes = [c["size"] for c in data["clusters"]]
    assert sum(sizes) == 400 and sizes == sorted(sizes, reverse=True)
    assert sizes == [data["assignments"].count(c["id"]) for c in data["clusters"]]
    contexts = json.loads((out / "contexts.json").read_text())
    for c in data["clusters"]:
        assert {"id", "size", "contexts", "top_features"} <= set(c)
        assert all(data["assignments"][x["id"]] == c["id"] for x in c["contexts"])
        assert all(contexts[x["id"]]["loss"] < 0.5 for x in c["contexts"])
        assert all(not f["id"].endswith("/err") for f in c["top_features"])
        from sfc_plugin.circuit import Circuit

        circuit = Circuit.from_json(out / "clusters" / str(c["id"]) / "circuit.json")
        assert circuit.metric == "logprob" and circuit.provenance["ablation"] == "zero"
        assert circuit.provenance["n_examples"] == min(8, c["size"])
        assert c["n_nodes"] == len(circuit.nodes) - 1 > 0
        lines = (out / "clusters" / str(c["id"]) / "contexts.jsonl").read_text().splitlines()
        assert len(lines) == c["size"]


def test_contexts_are_low_loss_predictions(run, toy_world):
    """Each stored context's loss is the model's loss on that prefix, recomputed on its own."""
    out, _ = run
    model, _ = toy_world
    contexts = json.loads((out / "contexts.json").read_text())
    for c in contexts[::57]:
        with torch.no_grad():
            logp = model(torch.tensor([c["tokens"]])).log_softmax(-1)[0, -1]
        assert -float(logp[c["answer"]]) == pytest.approx(c["loss"], abs=1e-4)
        assert c["prefix"] + c["answer_text"] == model.tokenizer.decode(c["tokens"][1:] + [c["answer"]])


def test_clusters_recover_planted_roles(run):
    """The toy generator labels every word with its role (determiner, gendered pronoun, end of sentence,
    start of sentence, comma, or another word of an agreement / biography / filler sentence). The
    clusters agree with these roles far beyond chance: adjusted Rand index (0 for chance, 1 for
    identical partitions) above 0.4, recomputed here from the assignments."""
    from sklearn.metrics import adjusted_rand_score

    out, summary = run
    contexts = json.loads((out / "contexts.json").read_text())
    roles = [c["categories"]["role"] for c in contexts]
    ari = adjusted_rand_score(roles, summary["assignments"])
    assert ari == pytest.approx(summary["agreement"]["role"]["adjusted_rand_index"], abs=1e-4)
    assert ari > 0.4
    shuffled = np.random.default_rng(0).permutation(summary["assignments"])
    assert abs(adjusted_rand_score(roles, shuffled)) < 0.05


def test_behaviour_vectors_match_autograd(toy_world, run):
    """An effects vector entry is −(∂ log p/∂f)·f summed over positions, checked against autograd on
    the spliced model; the top-k entries are the largest of the dense vector."""
    from sfc_plugin.clusters.vectors import behaviour_vectors, columns
    from sfc_plugin.splicing import build_submodules, splice

    out, _ = run
    model, saes = toy_world
    contexts = json.loads((out / "contexts.json").read_text())[:3]
    subs = build_submodules(model, saes)
    cols = columns(subs, "effects", model.cfg.d_model)
    idx, val = behaviour_vectors(model, subs, contexts, "effects", top_k=cols.size)
    for i, c in enumerate(contexts):
        dense = torch.zeros(cols.size)
        dense[idx[i].long()] = val[i]
        with splice(model, saes) as state:
            logp = model(torch.tensor([c["tokens"]])).log_softmax(-1)[0, -1, c["answer"]]
            logp.backward()
        offset = 0
        for s in subs:
            f = state.features[s.hook]
            expected = -(f.grad * f).sum((0, 1)).detach()
            torch.testing.assert_close(dense[offset : offset + s.d_sae], expected.float(), atol=2e-5, rtol=1e-3)
            err = state.errors[s.hook]
            assert float(dense[offset + s.d_sae]) == pytest.approx(-float((err.grad * err).sum().detach()), abs=2e-5)
            offset += s.d_sae + 1
    top_idx, top_val = behaviour_vectors(model, subs, contexts, "effects", top_k=8)
    for i in range(len(contexts)):
        assert sorted(val[i].abs().tolist())[-8:] == pytest.approx(sorted(top_val[i].abs().tolist()))


def test_resume_skips_finished_work_and_gives_identical_files(run, toy_world, tmp_path):
    """A run that lost its later files (as if killed) finishes them on restart; every file is identical."""
    from sfc_plugin.clusters import ClusterConfig, find_clusters

    out, _ = run
    model, saes = toy_world
    before = _files(out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for rel in (
        "clusters.json",
        "index.html",
        "assignments.json",
        "vectors/shard-00002.safetensors",
        "clusters/1/circuit.json",
        "clusters/4/circuit.json",
    ):
        (copy / rel).unlink()
    find_clusters(model, saes, copy, ClusterConfig(**SETTINGS), progress=False)
    assert _files(copy) == before
    timing = json.loads((copy / "timing.json").read_text())
    assert timing["shards_computed_by_rank_0"] == 1 and timing["circuits_computed_by_rank_0"] == 2


def test_different_configuration_in_same_directory_is_refused(run, toy_world):
    from sfc_plugin.clusters import ClusterConfig, find_clusters

    out, _ = run
    model, saes = toy_world
    with pytest.raises(SFCError, match="k=6, not 7"):
        find_clusters(model, saes, out, ClusterConfig(**{**SETTINGS, "k": 7}), progress=False)


def test_cli_refuses_other_configuration_with_exit_2(run, capsys):
    from sfc_plugin.cli import main

    out, _ = run
    assert main(["clusters", "--n-contexts", "400", "--k", "5", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a run with" in err[0]
    assert main(["clusters", "--k", "0", "-o", str(out / "x"), "-q"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err


def test_index_page_escapes_data(run):
    from sfc_plugin.clusters.page import render_index

    out, summary = run
    html = (out / "index.html").read_text()
    for c in summary["clusters"]:
        assert (
            f'href="clusters/{c["id"]}/circuit.svg"' in html
            or not (out / "clusters" / str(c["id"]) / "circuit.svg").exists()
        )
    evil = json.loads(json.dumps(summary))
    evil["clusters"][0]["contexts"][0]["prefix"] = "<script>alert(1)</script>"
    evil["clusters"][0]["top_features"][0]["id"] = "<b>x</b>"
    page = render_index(evil, set())
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "<b>x</b>" not in page


def test_corpora_from_files_and_datasets_directory(tmp_path, toy_world):
    from sfc_plugin.clusters.contexts import collect_contexts
    from sfc_plugin.corpus import documents as load_corpus

    model, _ = toy_world
    texts = ["The author near the guards is tall. It was cold and dark.", "At the ward, Laura walks home."]
    (tmp_path / "c.txt").write_text("\n".join(texts) + "\n\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": texts[0]}) + "\n" + json.dumps(texts[1]) + "\n")
    import datasets

    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(tmp_path / "hf"))
    for spec in ("c.txt", "c.jsonl", "hf"):
        docs = list(load_corpus(tmp_path / spec, 10))
        assert [d.text for d in docs] == texts
    found = collect_contexts(model, load_corpus(tmp_path / "c.txt", 10), 100, max_loss=0.5, progress=False)
    assert found and all(c.loss < 0.5 and c.categories is None for c in found)
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(SFCError, match="bad.jsonl' line 1"):
        load_corpus(tmp_path / "bad.jsonl", 10)
    with pytest.raises(SFCError, match="neither 'toy' nor"):
        load_corpus(tmp_path / "missing", 10)


def test_clusters_open_in_the_circuit_viewer(run):
    """With the circuit viewer installed, each cluster's circuit gets its own ``sfc view`` site and the
    index page links it."""
    pytest.importorskip("sfc_plugin.viewer")
    out, summary = run
    html = (out / "index.html").read_text()
    for c in summary["clusters"]:
        site = out / "clusters" / str(c["id"]) / "view"
        assert (site / "index.html").is_file()
        assert f'href="clusters/{c["id"]}/view/index.html"' in html
        data = json.loads((site / "data.js").read_text().split("=", 1)[1].strip().rstrip(";"))
        assert len(data["nodes"]) == c["n_nodes"] + 1 and data["title"].startswith(f"cluster {c['id']} ")
