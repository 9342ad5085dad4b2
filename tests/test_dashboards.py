"""Dashboards against a direct computation; cache, resume and batching give identical records."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import WORDS, all_hooks, make_model, make_saes

from sfc_plugin import dashboards
from sfc_plugin.corpus import load_corpus
from sfc_plugin.dashboards.stream import FeatureStream
from sfc_plugin.errors import SFCError


@pytest.fixture(scope="module")
def small(tokenizer, tmp_path_factory):
    """A 2-layer float64 model, SAEs at every hook, and a 150-line text corpus (contexts of 9 tokens)."""
    model = make_model(tokenizer)
    saes = make_saes(all_hooks(2))
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) for _ in range(150)))
    corpus = load_corpus(path, model, context_size=9)
    return model, saes, corpus


IDS = ["embed/0", "embed/3", "attn_0/5", "mlp_1/7", "resid_1/2", "resid_1/31"]


def _direct(model, saes, corpus, hook, feature):
    """Every token's activation of one feature, by running the whole corpus at once: ``[n, L]``."""
    with torch.no_grad():
        _, cache = model.run_with_cache(corpus.tokens, names_filter=hook)
        return saes[hook].encode(cache[hook])[..., feature].float() * corpus.mask


def test_corpus_chunks_and_masks(small):
    model, _, corpus = small
    assert corpus.tokens.shape[1] == 9 and len(corpus) > 150  # long lines split into several contexts
    assert (corpus.tokens[:, 0] == model.tokenizer.bos_token_id).all() and not corpus.mask[:, 0].any()
    assert corpus.mask.sum(1).min() >= 1


def test_dashboards_match_direct_computation(small):
    model, saes, corpus = small
    data = dashboards.compute_dashboards(model, saes, IDS, corpus, k=5, batch_size=16, progress=False)
    assert data["schema"] == "sfc-dashboards/1" and list(data["features"]) == IDS
    hooks = {
        "embed": "hook_embed",
        "attn_0": "blocks.0.hook_attn_out",
        "mlp_1": "blocks.1.hook_mlp_out",
        "resid_1": "blocks.1.hook_resid_post",
    }
    checked_top = 0
    for fid, rec in data["features"].items():
        sub, feat = fid.split("/")
        acts = _direct(model, saes, corpus, hooks[sub], int(feat))
        fire = int((acts > 0).sum())
        assert rec["n_firing"] == fire and rec["n_tokens"] == int(corpus.mask.sum())
        assert rec["density"] == pytest.approx(fire / int(corpus.mask.sum()), rel=1e-5)
        assert sum(rec["histogram"]["counts"]) == fire
        if fire:
            assert rec["mean"] == pytest.approx(float(acts[acts > 0].double().mean()), rel=1e-5)
        ctx_max, pos = acts.max(1)
        order = sorted((c for c in range(len(corpus)) if ctx_max[c] > 0), key=lambda c: (-float(ctx_max[c]), c))[:5]
        assert [c["context"] for c in rec["top"]] == order
        for c in rec["top"]:
            i = c["context"]
            assert c["start"] + c["position"] == int(pos[i])  # the strongest token, exactly
            assert c["max"] == pytest.approx(float(ctx_max[i]), rel=1e-3)
            want = acts[i, c["start"] : c["start"] + len(c["acts"])].tolist()
            assert c["acts"] == pytest.approx(want, rel=1e-3, abs=1e-6)
            checked_top += 1
        top_ctx = {c["context"] for c in rec["top"]}
        for band in rec["quantiles"]:
            for c in band["contexts"]:
                assert c["context"] not in top_ctx and ctx_max[c["context"]] > 0
                assert c["max"] == pytest.approx(float(ctx_max[c["context"]]), rel=1e-3)
    assert checked_top >= 15


def test_context_tokens_are_the_corpus_tokens(small):
    model, saes, corpus = small
    rec = dashboards.compute_dashboards(model, saes, ["resid_1/2"], corpus, k=3, progress=False)["features"][
        "resid_1/2"
    ]
    for c in rec["top"]:
        ids = corpus.tokens[c["context"], c["start"] : c["start"] + len(c["tokens"])].tolist()
        assert [t.strip() for t in c["tokens"]] == [model.tokenizer.decode([i]).strip() for i in ids]


def test_promoted_tokens_are_the_direct_logit_effect(small, tokenizer):
    """Without a final layer norm the direct path is exact: adding ε·W_dec[f] to the last residual
    stream moves the logits by ε·W_dec[f] @ W_U, ranked as the dashboard ranks them."""
    _, saes, corpus = small
    model = make_model(tokenizer, normalization=None)
    rec = dashboards.compute_dashboards(model, saes, ["resid_1/4"], corpus, n_logits=5, progress=False)["features"][
        "resid_1/4"
    ]
    direction = saes["blocks.1.hook_resid_post"].W_dec[4].detach()
    tokens = corpus.tokens[:1]
    with torch.no_grad():
        base = model(tokens)[0, -1]
        moved = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: x + 1e-3 * direction)]
        )[0, -1]
    delta = (moved - base) / 1e-3
    delta = delta - delta.mean()
    assert [p["id"] for p in rec["promoted"]] == delta.topk(5).indices.tolist()
    assert [p["id"] for p in rec["suppressed"]] == (-delta).topk(5).indices.tolist()
    assert [p["value"] for p in rec["promoted"]] == pytest.approx(delta.topk(5).values.tolist(), rel=1e-3)


def test_batching_does_not_change_records(small):
    model, saes, corpus = small
    a = dashboards.compute_dashboards(model, saes, IDS, corpus, batch_size=7, progress=False)
    b = dashboards.compute_dashboards(model, saes, IDS, corpus, batch_size=64, progress=False)
    for rec_a, rec_b in zip(a["features"].values(), b["features"].values()):
        assert rec_a["mean"] == pytest.approx(rec_b["mean"], rel=1e-9)
        assert {**rec_a, "mean": 0} == {**rec_b, "mean": 0}


def test_cache_and_resume_give_identical_output(small, tmp_path, monkeypatch):
    model, saes, corpus = small
    fresh = dashboards.compute_dashboards(model, saes, IDS, corpus, batch_size=16, progress=False)

    calls = {"n": 0}
    original = FeatureStream.update

    def dying(self, acts, first):
        calls["n"] += 1
        if calls["n"] > 4 * 4 + 2:  # four submodules: die in the 5th batch
            raise KeyboardInterrupt
        return original(self, acts, first)

    monkeypatch.setattr(FeatureStream, "update", dying)
    with pytest.raises(KeyboardInterrupt):
        dashboards.compute_dashboards(
            model, saes, IDS, corpus, batch_size=16, cache_dir=tmp_path, checkpoint_every=2, progress=False
        )
    partial = list(tmp_path.glob("*/partial-*.json"))
    assert len(partial) == 1 and json.loads(partial[0].read_text())["contexts_done"] == 64
    monkeypatch.setattr(FeatureStream, "update", original)

    seen = []

    def counting(self, acts, first):
        seen.append(first)
        return original(self, acts, first)

    monkeypatch.setattr(FeatureStream, "update", counting)
    resumed = dashboards.compute_dashboards(model, saes, IDS, corpus, batch_size=16, cache_dir=tmp_path, progress=False)
    assert min(seen) == 64  # the first 64 contexts were not run again
    assert resumed == fresh
    assert not list(tmp_path.glob("*/partial-*"))
    seen.clear()
    again = dashboards.compute_dashboards(model, saes, IDS, corpus, batch_size=16, cache_dir=tmp_path, progress=False)
    assert again == fresh and not seen  # everything from the cache
    more = dashboards.compute_dashboards(model, saes, IDS + ["mlp_0/1"], corpus, cache_dir=tmp_path, progress=False)
    assert set(seen) and {k: more["features"][k] for k in IDS} == fresh["features"]  # only the new feature ran


def test_cache_key_follows_sae_weights(small, tmp_path):
    model, saes, corpus = small
    a = dashboards.compute_dashboards(model, saes, ["mlp_1/7"], corpus, cache_dir=tmp_path, progress=False)
    changed = dict(saes)
    changed["blocks.1.hook_mlp_out"] = make_saes(all_hooks(2))["blocks.1.hook_mlp_out"]
    with torch.no_grad():
        changed["blocks.1.hook_mlp_out"].W_enc.mul_(-1)
    b = dashboards.compute_dashboards(model, changed, ["mlp_1/7"], corpus, cache_dir=tmp_path, progress=False)
    assert a["features"]["mlp_1/7"]["sae_fingerprint"] != b["features"]["mlp_1/7"]["sae_fingerprint"]
    assert a["features"]["mlp_1/7"]["top"] != b["features"]["mlp_1/7"]["top"]


def test_write_load_and_card(small, tmp_path):
    model, saes, corpus = small
    data = dashboards.compute_dashboards(model, saes, ["resid_1/2"], corpus, progress=False)
    path = dashboards.write_dashboards(data, tmp_path)
    assert dashboards.load_dashboards(tmp_path) == data == dashboards.load_dashboards(path)
    card = dashboards.feature_card(data["features"]["resid_1/2"], label="my label")
    rec = data["features"]["resid_1/2"]
    assert card.splitlines()[0].startswith("resid_1/2") and "label: my label" in card
    top = rec["top"][0]
    assert f"[{top['tokens'][top['position']]}]" in card
    assert "promotes: " + rec["promoted"][0]["token"].strip() in card


@pytest.mark.parametrize(
    "bad, message",
    [
        (["resid_7/1"], "no SAE for submodule 'resid_7'"),
        (["resid_1/99"], "has only 32 features"),
        (["resid_1"], "is not"),
        (["resid_1/²"], "is not"),
        (["resid_1/-2"], "is not"),
        ([], "no feature ids"),
    ],
)
def test_bad_ids(small, bad, message):
    model, saes, corpus = small
    with pytest.raises(SFCError, match=message):
        dashboards.compute_dashboards(model, saes, bad, corpus, progress=False)


def test_leading_zeros_name_the_same_feature(small):
    """``resid_1/0002`` is feature 2: records come back under the circuit's spelling of the id, computed once."""
    model, saes, corpus = small
    data = dashboards.compute_dashboards(model, saes, ["resid_1/0002", "resid_1/2@3"], corpus, k=3, progress=False)
    assert list(data["features"]) == ["resid_1/2"]
    plain = dashboards.compute_dashboards(model, saes, ["resid_1/2"], corpus, k=3, progress=False)
    assert data["features"]["resid_1/2"] == plain["features"]["resid_1/2"]


def test_corpus_formats(tokenizer, tmp_path):
    model = make_model(tokenizer)
    (tmp_path / "a.jsonl").write_text('{"text": "the cat is big"}\n"a dog"\n')
    c = load_corpus(tmp_path / "a.jsonl", model, context_size=4)
    assert len(c) == 3 and c.n_tokens == 6
    (tmp_path / "b.jsonl").write_text('{"body": 1}\n')
    with pytest.raises(SFCError, match="line 1"):
        load_corpus(tmp_path / "b.jsonl", model)
    from datasets import Dataset

    Dataset.from_dict({"text": ["the cat is big", "a dog"]}).save_to_disk(str(tmp_path / "hf"))
    d = load_corpus(tmp_path / "hf", model, context_size=4)
    assert d.tokens.tolist() == c.tokens.tolist() and d.fingerprint() == c.fingerprint()
    with pytest.raises(SFCError, match="column 'content'"):
        load_corpus(tmp_path / "hf", model, text_field="content")


def test_cli_dashboards_on_the_toy_world(tmp_path, capsys):
    from sfc_plugin.cli import main

    out = tmp_path / "dash"
    args = ["dashboards", "--features", "resid_2/23", "embed/5", "--n-contexts", "256", "-k", "5", "-q", "-o", str(out)]
    assert main(args) == 0
    data = dashboards.load_dashboards(out)
    assert data["corpus"]["name"] == "toy" and data["corpus"]["n_contexts"] == 256
    rec = data["features"]["resid_2/23"]
    assert len(rec["top"]) == 5 and rec["n_firing"] > 0
    assert "256 contexts" in capsys.readouterr().out
    assert main(args) == 0 and dashboards.load_dashboards(out) == data  # from the cache
    assert main(["dashboards", "--features", "resid_2/999", "-q", "-o", str(out)]) == 2
    assert "only 256 features" in capsys.readouterr().err


def _record(fired, before="the", promoted=(("were", 3.0), ("are", 2.5), ("x", 0.1)), std=0.5):
    top = [
        {
            "tokens": [" " + before, " " + t, " ."],
            "position": 1,
            "acts": [0, 1.0, 0],
            "max": 1.0,
            "context": i,
            "start": 0,
        }
        for i, t in enumerate(fired)
    ]
    return {
        "id": "resid_1/3",
        "top": top,
        "quantiles": [],
        "density": 0.01,
        "max": 1.0,
        "mean": 0.5,
        "promoted": [{"token": " " + t, "id": i, "value": v} for i, (t, v) in enumerate(promoted)],
        "suppressed": [{"token": " y", "id": 9, "value": -0.2}],
        "logit_std": std,
    }


def test_auto_label_from_evidence():
    from sfc_plugin.dashboards.labels import auto_label

    assert auto_label(_record(["authors", "guards", "authors", "guards", "authors"])) == "authors / guards ↑ were, are"
    assert auto_label(_record(["authors", "guards", "pilots", "authors"])) == "authors / guards … ↑ were, are"
    assert auto_label(_record(["a", "b", "c", "d", "e"], std=1.5)) == "after the: a / b …"  # 2 σ: no arrow
    assert auto_label({**_record(["a"]), "max": 0.2}) == "a"  # moves the logit by 0.6 < 1 at most: no arrow
    assert auto_label({"id": "x/1", "top": []}) == "(never fires on the corpus)"


def test_auto_labels_are_deterministic_and_reach_the_figure(small, tmp_path):
    from sfc_plugin.circuit import Circuit, Edge, Node
    from sfc_plugin.export import apply_labels

    model, saes, corpus = small
    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node("resid_1/2", "resid_1", "blocks.1.hook_resid_post", 1, "feature", 2, None, 0.5),
        Node("mlp_1/7", "mlp_1", "blocks.1.hook_mlp_out", 1, "feature", 7, None, -0.3),
        Node("resid_1/err", "resid_1", "blocks.1.hook_resid_post", 1, "error", None, None, 0.2),
    ]
    circuit = Circuit(
        nodes,
        [Edge("mlp_1/7", "resid_1/2", 0.2), Edge("resid_1/2", "y", 0.5)],
        1.0,
        "logit_diff",
        "ig",
        10,
        "sum",
        0.1,
        0.01,
        {},
    )
    data = dashboards.circuit_dashboards(circuit, model, saes, corpus, progress=False)
    first = apply_labels(circuit, "auto", dashboards=data)
    again = apply_labels(circuit, "auto", model=model, saes=saes, corpus=corpus)
    labels = {n.id: n.label for n in first.nodes}
    assert labels == {n.id: n.label for n in again.nodes}
    assert labels["resid_1/2"] and labels["mlp_1/7"] and labels["resid_1/err"] is None
    top = data["features"]["resid_1/2"]["top"][0]
    assert labels["resid_1/2"].startswith(top["tokens"][top["position"]].strip())
    assert first.provenance["node_info"]["resid_1/2"]["tooltip"].startswith("resid_1/2  density")
    dashboards.write_dashboards(data, tmp_path / "dash")
    from_dir = apply_labels(circuit, "auto", dashboards=tmp_path / "dash")
    assert {n.id: n.label for n in from_dir.nodes} == labels
    assert labels["resid_1/2"].split()[0] in from_dir.to_dot()
    with pytest.raises(SFCError, match="needs dashboards="):
        apply_labels(circuit, "auto")


def test_cli_export_with_auto_labels(small, tmp_path, capsys):
    from sfc_plugin.circuit import Circuit, Node
    from sfc_plugin.cli import main

    model, saes, corpus = small
    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node("resid_1/2", "resid_1", "blocks.1.hook_resid_post", 1, "feature", 2, None, 0.5),
    ]
    circuit = Circuit(nodes, [], 1.0, "logit_diff", "ig", 10, "sum", 0.1, 0.01, {"model_source": "elsewhere"})
    circuit.to_json(tmp_path / "c.json")
    dashboards.write_dashboards(
        dashboards.circuit_dashboards(circuit, model, saes, corpus, progress=False), tmp_path / "d"
    )
    assert (
        main(
            [
                "export",
                str(tmp_path / "c.json"),
                "--format",
                "json",
                "--labels",
                "auto",
                "--dashboards",
                str(tmp_path / "d"),
                "-o",
                str(tmp_path / "out.json"),
            ]
        )
        == 0
    )
    assert Circuit.from_json(tmp_path / "out.json").node("resid_1/2").label
    assert (
        main(
            [
                "export",
                str(tmp_path / "c.json"),
                "--format",
                "json",
                "--labels",
                "auto",
                "-o",
                str(tmp_path / "o2.json"),
            ]
        )
        == 2
    )
    assert "pass --dashboards DIR" in capsys.readouterr().err
