"""SHIFT building blocks on a tiny model: the edit equals a hand-written hook; judges apply exactly."""

from __future__ import annotations

import io
import json

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_sae, make_saes

from sfc_plugin.errors import SFCError
from sfc_plugin.shifting.edit import FeatureEdit
from sfc_plugin.shifting.judges import callable_judge, file_judge, interactive_judge, read_decisions
from sfc_plugin.shifting.probe import accuracy_row, train_probe
from sfc_plugin.shifting.probe_attribution import top_units
from sfc_plugin.shifting.records import FeatureInfo, JudgeContext, Labelled
from sfc_plugin.splicing import build_submodules


@pytest.fixture
def tiny(tokenizer):
    model = make_model(tokenizer)
    subs = {s.name: s for s in build_submodules(model, make_saes(all_hooks(2)))}
    tokens = model.to_tokens([r["clean_prefix"] for r in make_records(4)])
    return model, subs, tokens


def test_edit_equals_hand_written_hook_and_round_trips(tiny, tmp_path):
    model, subs, tokens = tiny
    edit = FeatureEdit(subs, ablate={"mlp_0": [3, 7], "resid_1": [1]}, neurons={"attn_1": [2]})

    def by_hand(act, hook):
        name = {s.hook: s.name for s in subs.values()}[hook.name]
        s = subs[name]
        if name in ("mlp_0", "resid_1"):
            f = s.sae.encode(act)
            keep = f.clone()
            keep[..., [3, 7] if name == "mlp_0" else [1]] = 0
            return s.sae.decode(keep) + (act - s.sae.decode(f))
        act = act.clone()
        act[..., 2] = 0
        return act

    hooks = [(subs[n].hook, by_hand) for n in ("mlp_0", "attn_1", "resid_1")]
    want = model.run_with_hooks(tokens, fwd_hooks=hooks)
    plain = model(tokens)
    with edit.applied(model):
        got = model(tokens)
    assert torch.allclose(got, want, atol=1e-10) and not torch.allclose(got, plain, atol=1e-4)
    assert torch.allclose(model(tokens), plain)  # the context manager leaves no hook behind
    edit.to_json(tmp_path / "edit.json")
    again = FeatureEdit.from_json(tmp_path / "edit.json", subs)
    assert again.ablate == {"mlp_0": [3, 7], "resid_1": [1]} and again.neurons == {"attn_1": [2]}
    again.attach(model)
    model.reset_hooks()  # permanent hooks survive a reset
    assert torch.allclose(model(tokens), want, atol=1e-10)
    again.detach(model)
    assert torch.allclose(model(tokens), plain)


def infos():
    return [FeatureInfo(f"mlp_0/{j}", "mlp_0", j, 0.5 - 0.1 * j) for j in range(4)]


def test_file_judge_applies_json_and_csv_exactly(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"mlp_0/1": "ablate", "mlp_0/2": "keep", "mlp_0/3": "Ablate"}))
    (tmp_path / "d.csv").write_text("id,decision\nmlp_0/0,ablate\nmlp_0/3,keep\n")
    for path, want in (("d.json", ["keep", "ablate", "keep", "ablate"]), ("d.csv", ["ablate", "keep", "keep", "keep"])):
        ctx = JudgeContext(None, {}, None, {"decisions": tmp_path / path})
        got = file_judge(infos(), ctx)
        assert [d.decision for d in got] == want
        assert all(d.judge.startswith("file:") for d in got)
        assert "not listed" in got[0 if path == "d.json" else 1].judge
    (tmp_path / "bad.json").write_text(json.dumps({"mlp_0/1": "maybe"}))
    with pytest.raises(SFCError, match="'maybe'"):
        read_decisions(tmp_path / "bad.json")


def test_callable_and_interactive_judges(tiny):
    model, subs, tokens = tiny
    got = callable_judge(lambda f: f.feature % 2 == 1)(infos(), None)
    assert [d.decision for d in got] == ["keep", "ablate", "keep", "ablate"] and got[0].judge == "callable:<lambda>"
    from sfc_plugin.data import tokenize

    texts = tokenize(model, [{"clean_prefix": r["clean_prefix"]} for r in make_records(4)])
    out = io.StringIO()
    ctx = JudgeContext(model, subs, None, {"input": io.StringIO("x\na\nk\nq\n"), "output": out}, texts=texts)
    got = interactive_judge(infos(), ctx)
    assert [d.decision for d in got] == ["ablate", "keep", "keep", "keep"]
    assert [d.judge for d in got][-1] == "interactive (quit: keep)" and "mlp_0/0" in out.getvalue()


def test_probe_rows_from_predictions_and_top_units():
    torch.manual_seed(0)
    z = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1.0])
    y = torch.tensor([0, 0, 1, 1, 1, 0, 1, 0.0])
    X = torch.stack([z * 2 - 1, torch.zeros(8)], 1)  # only the spurious attribute is visible
    probe = train_probe(X[:4], y[:4], seed=0, recipe="full-batch")  # 4 examples: one AdamW step learns nothing
    data = Labelled(None, y, z)
    row = accuracy_row("original", probe, X, data)
    pred = (probe(X)[:, 0] > 0).float()
    assert row["gender_acc"] == pytest.approx((pred == z).float().mean().item()) == 1.0
    assert row["profession_acc"] == pytest.approx(0.5) and row["worst_group_acc"] == 0.0
    assert torch.equal(train_probe(X[:4], y[:4], seed=0, recipe="full-batch").weight, probe.weight)  # seeded
    ranked = top_units({"a": torch.tensor([0.1, -0.9]), "b": torch.tensor([0.5])}, k=2)
    assert ranked == [("a", 1, pytest.approx(-0.9)), ("b", 0, 0.5)]


def test_concept_descriptions_and_scores(tmp_path):
    from sfc_plugin.shifting.concept import load_concept, reads_score, writes_score
    from sfc_plugin.shifting.evidence import Context, Evidence

    c = load_concept("He, she,  Mr Smith\n# a comment, ignored\nwife")
    assert c.terms == (("he",), ("she",), ("mr", "smith"), ("wife",)) and c.source == "(words)"
    (tmp_path / "c.txt").write_text("his\nher  # pronouns\n")
    assert load_concept(str(tmp_path / "c.txt")).terms == (("his",), ("her",))
    gender = load_concept("gender")
    assert {"he", "she", "his", "her", "mrs"} <= gender.words and gender.source == "shipped:gender"
    with pytest.raises(SFCError, match="no words"):
        load_concept(" , # nothing")
    with pytest.raises(SFCError, match="missing.txt"):
        load_concept(str(tmp_path / "missing.txt"))
    ev = Evidence(
        "x",
        top=[
            Context(["the", " Mr", " Smith"], 2.0),
            Context(["ĠHe"], 1.0),
            Context(["Smith"], 0.5),
            Context(["cat"], 0.1),
        ],
        promoted=[" she", "wife", "the", "a", "Wife"],
    )
    assert reads_score(c, ev) == 0.5 and writes_score(c, ev) == pytest.approx(3 / 5)


def test_judges_declare_what_they_use():
    from sfc_plugin.shifting.judges import concept_judge, labelled_judge
    from sfc_plugin.shifting.records import judge_uses

    assert judge_uses(concept_judge) == ("concept_description", "unlabelled_text")
    assert judge_uses(labelled_judge) == ("balanced_labels",) and judge_uses(file_judge) == ("human_review",)
    assert judge_uses(lambda features, ctx: []) == ("balanced_labels",)  # undeclared: counted as seeing labels
    assert judge_uses(callable_judge(lambda f: True)) == ("undeclared",)


def test_feature_evidence_matches_a_direct_computation(tiny):
    from sfc_plugin.data import tokenize
    from sfc_plugin.shifting.evidence import feature_evidence

    model, subs, _ = tiny
    texts = tokenize(model, [{"clean_prefix": r["clean_prefix"]} for r in make_records(6)])
    infos = [FeatureInfo("mlp_0/3", "mlp_0", 3, 0.0), FeatureInfo("resid_1/5", "resid_1", 5, 0.0)]
    ev = feature_evidence(model, subs, infos, texts, n_top=4, n_promoted=3, batch_size=4)
    _, cache = model.run_with_cache(texts.clean)
    for f in infos:
        sub = subs[f.submodule]
        acts = sub.sae.encode(cache[sub.hook])[..., f.feature] * texts.valid
        acts[:, 0] = 0  # BOS
        top = acts.flatten().topk(4)
        want = [v for v in top.values.tolist() if v > 0]
        assert [c.act for c in ev[f.id].top] == pytest.approx(want) and want
        b, t = divmod(int(top.indices[0]), acts.shape[1])
        assert ev[f.id].top[0].tokens[-1] == model.tokenizer.decode([int(texts.clean[b, t])])
        d = sub.W_dec[f.feature]
        logits = ((d - d.mean()) * model.ln_final.w) @ model.W_U
        assert ev[f.id].promoted == [model.tokenizer.decode([i]) for i in logits.topk(3).indices.tolist()]
        assert ev[f.id].density == pytest.approx(float((acts > 0).sum()) / float(texts.valid[:, 1:].sum()))


def test_human_judges_read_the_dashboard_cards(tiny, tmp_path):
    """The interactive screen and the file judge's decisions template show the same evidence cards as
    the dashboards: label and top contexts of each candidate, computed from the judge's texts."""
    from sfc_plugin.data import tokenize
    from sfc_plugin.shifting.cards import evidence_cards

    model, subs, _ = tiny
    texts = tokenize(model, [{"clean_prefix": r["clean_prefix"]} for r in make_records(6)])
    out = io.StringIO()
    ctx = JudgeContext(model, subs, None, {"input": io.StringIO("k\nk\nk\nk\n"), "output": out}, texts=texts)
    cards = evidence_cards(infos(), ctx)
    fired = [fid for fid, (_, card) in cards.items() if "top contexts:" in card]
    assert fired and all(cards[f][1].startswith(f) and cards[f][0] for f in fired)
    interactive_judge(infos(), ctx)
    screen = out.getvalue()
    for _label, card in cards.values():
        assert all(line in screen for line in card.splitlines())
    path = tmp_path / "decisions.json"
    ctx = JudgeContext(model, subs, None, {"decisions": path}, texts=texts)
    assert file_judge([], ctx) == []  # the up-front check passes without a file
    with pytest.raises(SFCError, match="wrote a decisions template"):
        file_judge(infos(), ctx)
    template = json.loads(path.read_text())
    assert [r["id"] for r in template] == [f.id for f in infos()]
    assert ["\n".join(r["evidence"]) for r in template] == [cards[f.id][1] for f in infos()]
    assert [d.decision for d in file_judge(infos(), ctx)] == ["keep"] * 4  # usable as it is
    template[[r["id"] for r in template].index(fired[0])]["decision"] = "ablate"
    path.write_text(json.dumps(template))
    assert [d.id for d in file_judge(infos(), ctx) if d.decision == "ablate"] == [fired[0]]


def _recorded_edit(model, subs, path):
    """An edit saved with the provenance ``sfc shift`` records (model and SAE fingerprints)."""
    from sfc_plugin.fingerprints import world_provenance

    edit = FeatureEdit(
        subs, ablate={"mlp_0": [3], "resid_1": [1]}, provenance=world_provenance(model, list(subs.values()))
    )
    edit.to_json(path)
    return path


def test_saved_edit_refuses_other_saes_or_model_unless_forced(tiny, tokenizer, tmp_path):
    model, subs, tokens = tiny
    path = _recorded_edit(model, subs, tmp_path / "edit.json")
    saved = json.loads(path.read_text())
    assert saved["provenance"]["model_fingerprint"]["sample_sha256"] and len(saved["provenance"]["saes"]) == len(subs)
    same = FeatureEdit.from_json(path, subs, model=model)
    assert same.provenance_check == {"status": "match"}
    # other weights for an SAE the edit ablates features of: refused, one line naming the hook and both hashes
    hooks = all_hooks(2)
    other = {s.name: s for s in build_submodules(model, {**make_saes(hooks), hooks[2]: make_sae(hooks[2], seed=9)})}
    assert other["mlp_0"].hook == hooks[2]
    with pytest.raises(
        SFCError,
        match=r"^SAE at hook 'blocks\.0\.hook_mlp_out' has other weights than the edit's "
        r"\(sha256 [0-9a-f]{12} vs [0-9a-f]{12}\); pass force=True \(--force\) to use "
        r"them anyway$",
    ):
        FeatureEdit.from_json(path, other)
    forced = FeatureEdit.from_json(path, other, force=True)
    assert (
        forced.provenance_check["status"] == "forced"
        and "blocks.0.hook_mlp_out" in forced.provenance_check["mismatches"][0]
    )
    # an SAE at a hook the edit does not touch may differ: the edit does not use it
    spare = {s.name: s for s in build_submodules(model, {**make_saes(hooks), hooks[1]: make_sae(hooks[1], seed=9)})}
    assert FeatureEdit.from_json(path, spare).provenance_check == {"status": "match"}
    # another model: refused on first use (applied/attach) or when given to from_json
    loaded = FeatureEdit.from_json(path, subs)
    stranger = make_model(tokenizer, seed=5)
    with pytest.raises(SFCError, match=r"^model .* differs from the model the edit was made with .*; pass force=True"):
        with loaded.applied(stranger):
            pass
    with pytest.raises(SFCError, match=r"differs from the model the edit was made with"):
        FeatureEdit.from_json(path, subs, model=stranger)
    lenient = FeatureEdit.from_json(path, subs, model=stranger, force=True)
    assert lenient.provenance_check["status"] == "forced" and lenient.provenance_check["mismatches"][0].startswith(
        "model"
    )
    with loaded.applied(model):  # the recorded model passes
        model(tokens)


def test_edit_without_provenance_loads_unchecked(tiny, tmp_path):
    model, subs, _ = tiny
    FeatureEdit(subs, ablate={"mlp_0": [3]}).to_json(tmp_path / "old.json")
    assert "provenance" not in json.loads((tmp_path / "old.json").read_text())
    old = FeatureEdit.from_json(tmp_path / "old.json", subs, model=model)
    assert old.provenance_check == {"status": "unchecked (the edit records no provenance)"}


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema": "sfc-edit/1", "features": [{"submodule": "mlp_0", "feature": NaN}]}', "NaN is not valid JSON"),
        (
            '{"schema": "sfc-edit/1", "features": [{"submodule": "mlp_0", "feature": "3"}]}',
            "feature '3' of 'mlp_0' is not an index",
        ),
        ('{"schema": "sfc-edit/1", "features": {"a": 1}}', "'features' must be a list of objects"),
        ('{"schema": "sfc-edit/1", "provenance": [1]}', "'provenance' must be an object, got list"),
    ],
)
def test_corrupt_edit_files_are_one_line(tiny, tmp_path, text, message):
    _, subs, _ = tiny
    (tmp_path / "e.json").write_text(text)
    with pytest.raises(SFCError, match=message) as err:
        FeatureEdit.from_json(tmp_path / "e.json", subs)
    assert "\n" not in str(err.value)


def test_evidence_and_labelled_judge_read_a_transcoder_at_its_input(tokenizer):
    """A transcoder node set (``tc_1``: reads ``hook_mlp_in``, writes ``hook_mlp_out``): the evidence's
    activations and the labelled judge's correlations are those of SAELens's encode of the MLP's input."""
    from conftest import make_dictionary

    from sfc_plugin.data import tokenize
    from sfc_plugin.shifting.evidence import feature_evidence
    from sfc_plugin.shifting.judges import labelled_judge
    from sfc_plugin.shifting.probe import labelled

    model = make_model(tokenizer)
    tc = make_dictionary(
        "jumprelu_transcoder", "blocks.1.hook_mlp_in", 16, 32, seed=4, hook_out="blocks.1.hook_mlp_out"
    )
    saes = {**make_saes(["blocks.0.hook_resid_post"]), "blocks.1.hook_mlp_in": tc.to(torch.float32)}
    subs = {s.name: s for s in build_submodules(model, saes)}
    assert subs["tc_1"].transcoder and subs["tc_1"].read_hook == "blocks.1.hook_mlp_in"
    texts = tokenize(model, [{"clean_prefix": r["clean_prefix"]} for r in make_records(6)])
    model.cfg.use_hook_mlp_in = True
    _, cache = model.run_with_cache(texts.clean)
    model.cfg.use_hook_mlp_in = False
    direct = tc.encode(cache["blocks.1.hook_mlp_in"]) * texts.valid[..., None]  # [b, pos, 32]
    direct[:, 0] = 0  # BOS
    feats = [j for j in range(32) if (direct[..., j] > 0).sum() >= 4][:3]
    assert len(feats) == 3
    infos = [FeatureInfo(f"tc_1/{j}", "tc_1", j, 0.0) for j in feats]
    ev = feature_evidence(model, subs, infos, texts, n_top=4, n_promoted=3, batch_size=4)
    assert model.cfg.use_hook_mlp_in is False
    for f in infos:
        want = direct[..., f.feature].flatten().topk(4).values.tolist()
        assert [c.act for c in ev[f.id].top] == pytest.approx(want, rel=1e-5)

    records = [{"text": r["clean_prefix"], "p": i % 2, "g": (i // 2) % 2} for i, r in enumerate(make_records(8))]
    val = labelled(model, records, "p", "g", (1, 1), "cpu")
    decisions = labelled_judge(infos, JudgeContext(model, subs, val, {"min_r": 0.0}))
    model.cfg.use_hook_mlp_in = True
    _, cache = model.run_with_cache(val.batch.clean)
    model.cfg.use_hook_mlp_in = False
    valid = val.batch.valid[..., None]
    with torch.no_grad():
        pooled = (tc.encode(cache["blocks.1.hook_mlp_in"]) * valid).sum(1) / valid.sum(1)
    for f, d in zip(infos, decisions):
        r = [torch.corrcoef(torch.stack([pooled[:, f.feature].double(), lab.double()]))[0, 1] for lab in (val.y, val.z)]
        assert d.note == f"r(intended)={float(r[0]):+.2f} r(spurious)={float(r[1]):+.2f}"
