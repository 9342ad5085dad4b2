"""SHIFT building blocks on a tiny model: the edit equals a hand-written hook; judges apply exactly."""

from __future__ import annotations

import io
import json

import pytest
import torch

from sfc_plugin.errors import SFCError
from sfc_plugin.shifting.edit import FeatureEdit
from sfc_plugin.shifting.judges import callable_judge, file_judge, interactive_judge, read_decisions
from sfc_plugin.shifting.probe import accuracy_row, train_probe
from sfc_plugin.shifting.probe_attribution import top_units
from sfc_plugin.shifting.records import FeatureInfo, JudgeContext, Labelled
from sfc_plugin.splicing import build_submodules

from conftest import all_hooks, make_model, make_records, make_saes


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
    probe = train_probe(X[:4], y[:4], seed=0)
    data = Labelled(None, y, z)
    row = accuracy_row("original", probe, X, data)
    pred = (probe(X)[:, 0] > 0).float()
    assert row["gender_acc"] == pytest.approx((pred == z).float().mean().item()) == 1.0
    assert row["profession_acc"] == pytest.approx(0.5) and row["worst_group_acc"] == 0.0
    assert torch.equal(train_probe(X[:4], y[:4], seed=0).weight, probe.weight)  # seeded
    ranked = top_units({"a": torch.tensor([0.1, -0.9]), "b": torch.tensor([0.5])}, k=2)
    assert ranked == [("a", 1, pytest.approx(-0.9)), ("b", 0, 0.5)]
