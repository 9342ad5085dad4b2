"""The fast discovery path computes what the paper's straightforward algorithm computes (correctness,
not timing), and the memory budget bounds every pass."""

from __future__ import annotations

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes, z_hooks

from sfc_plugin.attribution.engine import attribute
from sfc_plugin.attribution.methods import atp, ig
from sfc_plugin.attribution.paper_baseline import baseline_discover
from sfc_plugin.attribution.sparse import SparseFeatures
from sfc_plugin.budget import MemoryBudget, parse_memory
from sfc_plugin.data import tokenize
from sfc_plugin.errors import SFCError
from sfc_plugin.metrics import logit_diff
from sfc_plugin.splicing import build_submodules


def _rel(a, b):
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)


@pytest.mark.parametrize("parallel, hooks", [(False, all_hooks), (True, all_hooks), (False, z_hooks)])
def test_fast_path_matches_the_paper_baseline(tokenizer, parallel, hooks):
    model = make_model(tokenizer, parallel=parallel)
    subs = build_submodules(model, make_saes(hooks(2)))
    batch = tokenize(model, make_records(6))
    res = attribute(model, subs, batch, logit_diff, ig, steps=4, node_threshold=0.05, batch_size=4, budget=None)
    assert sum(len(n) for n in res.nodes.values()) > 20
    base = baseline_discover(model, subs, batch, logit_diff, steps=4, batch_size=4, nodes=res.nodes)
    for s in subs:
        assert _rel(res.features[s.name], base["features"][s.name]) < 1e-9, s.name
        assert float(res.errors[s.name]) == pytest.approx(float(base["errors"][s.name]), rel=1e-9, abs=1e-12)
    assert res.edges.keys() <= base["edges"].keys() and len(res.edges) >= 8
    for key, w in base["edges"].items():  # a pair without a direct path is absent from ours: zero
        assert _rel(res.edges.get(key, torch.zeros_like(w)), w) < 1e-9, key
    assert res.total / res.count == pytest.approx(base["total"], rel=1e-9)


@pytest.mark.parametrize("parallel, empty", [(False, "attn_1"), (False, "resid_0"), (True, "attn_1")])
def test_tokenwise_edges_when_an_input_of_the_block_holds_no_nodes(tokenizer, parallel, empty):
    """A token-wise MLP is linearised at its whole clean input, also when one of the submodules summed into it
    holds no circuit node (it was linearised at the sum of the others only: resid_0 -> mlp_1 off by ~70 %)."""
    from sfc_plugin.attribution.edges import NodeSet

    model = make_model(tokenizer, parallel=parallel)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(6))
    nodes = attribute(
        model, subs, batch, logit_diff, ig, steps=4, node_threshold=0.05, batch_size=4, edges=False, budget=None
    ).nodes
    nodes = {**nodes, empty: NodeSet(nodes[empty].feat[:0], None, [])}
    res = attribute(model, subs, batch, logit_diff, ig, steps=4, batch_size=4, budget=None, nodes=nodes)
    base = baseline_discover(model, subs, batch, logit_diff, steps=4, batch_size=4, nodes=nodes)
    assert any(k[1] == "mlp_1" and w.abs().max() > 0 for k, w in base["edges"].items())
    for key, w in base["edges"].items():
        assert _rel(res.edges.get(key, torch.zeros_like(w)), w) < 1e-9, key


def test_edges_only_baseline_on_given_gradients_equals_the_full_baseline(tokenizer):
    """``sfc bench --baseline-edges-only`` times the baseline's edge phase on our IG gradients: same edges."""
    from sfc_plugin.attribution.context import prepare
    from sfc_plugin.splicing import frozen

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(6))
    res = attribute(model, subs, batch, logit_diff, ig, steps=4, node_threshold=0.05, batch_size=4, budget=None)
    full = baseline_discover(model, subs, batch, logit_diff, steps=4, batch_size=4, nodes=res.nodes)

    def given(b):
        with frozen(model):
            return ig(prepare(model, subs, b, logit_diff, 4)).grads

    only = baseline_discover(model, subs, batch, logit_diff, steps=4, batch_size=4, nodes=res.nodes, given_grads=given)
    assert set(only["timings"]) == {"edges"} and not only["features"]
    assert only["edges"].keys() == full["edges"].keys() and len(full["edges"]) >= 8
    for key, w in full["edges"].items():
        assert _rel(only["edges"][key], w) < 1e-6, key


def test_tight_budget_chunks_but_gives_the_same_effects(tokenizer):
    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(6))
    big = attribute(
        model, subs, batch, logit_diff, ig, steps=3, node_threshold=0.05, budget=MemoryBudget.resolve("8GB", model)
    )
    per_row = MemoryBudget.resolve("1GB", model).forward_row(batch.clean.shape[1], 2, 1)
    small_budget = MemoryBudget.resolve(int(per_row * 3 / 0.6), model)  # about 3 IG rows per pass
    assert small_budget.rows(per_row, "x", share=0.6) == 3
    small = attribute(
        model, subs, batch, logit_diff, ig, steps=3, node_threshold=0.05, budget=small_budget, nodes=big.nodes
    )
    for s in subs:
        assert torch.allclose(small.features[s.name], big.features[s.name], atol=1e-12)
    for key, w in big.edges.items():
        assert torch.allclose(small.edges[key], w, atol=1e-12), key
    assert small.batch_size < big.batch_size or small.batch_size == len(batch)


def test_budget_too_small_for_one_row_says_what_would_fit(tokenizer):
    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(2))
    with pytest.raises(SFCError, match=r"too small: one .* row needs about .*--max-memory"):
        attribute(model, subs, batch, logit_diff, atp, budget=MemoryBudget.resolve("1kB", model))


@pytest.mark.parametrize("text,expected", [("4GB", 4e9), ("512MiB", 512 * 2**20), ("1.5e9", 1.5e9), (2000, 2000)])
def test_parse_memory(text, expected):
    assert parse_memory(text) == int(expected)


@pytest.mark.parametrize("bad", ["lots", "-1GB", "0", "4 parsecs"])
def test_parse_memory_rejects(bad):
    with pytest.raises(SFCError, match="max_memory"):
        parse_memory(bad)


def test_sparse_features_roundtrip_and_difference():
    torch.manual_seed(0)
    a = torch.relu(torch.randn(2, 5, 40, dtype=torch.float64) - 1.2)
    b = torch.relu(torch.randn(2, 5, 40, dtype=torch.float64) - 1.2)
    b[1, 2] = a[1, 2]
    fa, fb = SparseFeatures.from_dense(a), SparseFeatures.from_dense(b)
    assert torch.equal(fa.dense(), a)
    d = fb.minus(fa)
    assert torch.equal(d.dense(), b - a)
    assert torch.equal(d.dense()[1, 2], torch.zeros(40, dtype=torch.float64))  # equal entries cancel exactly
    W, c = torch.randn(40, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    assert torch.allclose(fa.decode(W, c), a @ W + c)
    g = torch.randn(2, 5, 8, dtype=torch.float64)
    proj = torch.zeros(10, 40, dtype=torch.float64).index_put_(
        (fa.token_index(), fa.idx), fa.project(g, W), accumulate=True
    )
    assert torch.allclose(proj, ((g @ W.T) * a.ne(0)).view(10, 40))


def test_metric_reads_only_the_last_position(tokenizer):
    """The compact head gives the metric exactly what the full logits give."""
    from sfc_plugin.attribution.forward import run_metric, start_of

    model = make_model(tokenizer)
    batch = tokenize(model, make_records(4))
    full = logit_diff(model(batch.clean), batch)
    assert torch.allclose(run_metric(model, logit_diff, batch), full, atol=1e-12)
    _, cache = model.run_with_cache(batch.clean)
    start, _ = start_of("blocks.0.hook_resid_post")
    assert start == 1
    from_layer = run_metric(model, logit_diff, batch, start=1, resid=cache["blocks.1.hook_resid_pre"])
    assert torch.allclose(from_layer, full, atol=1e-12)


def test_cli_rejects_bad_budget_and_workload(capsys):
    from sfc_plugin.cli import main

    assert main(["discover", "--max-memory", "lots", "-q", "--n-examples", "2"]) == 2
    assert "max_memory 'lots'" in capsys.readouterr().err
    assert main(["bench", "--workload", "nope"]) == 2
    assert "unknown workload 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("parallel", [False, True])
def test_tokenwise_mlp_edges_equal_the_batched_vjp(tokenizer, parallel, monkeypatch):
    """Edges into an MLP computed per active (node, token) equal the batched VJP over every token."""
    import sfc_plugin.attribution.edges as edges

    model = make_model(tokenizer, parallel=parallel)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(6))
    calls = []
    real = edges.tokenwise_edges
    monkeypatch.setattr(edges, "tokenwise_edges", lambda *a, **k: calls.append(a[2].sub.name) or real(*a, **k))
    fast = attribute(model, subs, batch, logit_diff, ig, steps=2, node_threshold=0.05, batch_size=4, budget=None)
    assert "mlp_1" in calls and "mlp_0" not in calls  # layer 0 reads hook_embed plus the position embedding
    monkeypatch.setattr(edges, "mlp_inputs", lambda *a: None)
    slow = attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=4, budget=None, nodes=fast.nodes)
    assert fast.edges.keys() == slow.edges.keys()
    for key, w in slow.edges.items():
        assert _rel(fast.edges[key], w) < 1e-9, key


def test_edges_reuse_the_contexts_that_fit_and_recompute_the_rest(tokenizer, monkeypatch):
    import sfc_plugin.attribution.engine as engine

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    batch = tokenize(model, make_records(6))
    budget = MemoryBudget.resolve("1GB", model)
    full = attribute(model, subs, batch, logit_diff, ig, steps=2, node_threshold=0.05, batch_size=4, budget=budget)
    prepared = []
    real = engine.prepare
    monkeypatch.setattr(
        engine, "prepare", lambda model, subs, b, *a: prepared.append(len(b)) or real(model, subs, b, *a)
    )
    monkeypatch.setattr(engine, "state_bytes", lambda ctx: int(0.2 * budget.bytes))  # one context fits in 30%
    part = attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=4, budget=budget, nodes=full.nodes)
    n_batches = -(-len(batch) // 4)
    assert len(prepared) == n_batches + (n_batches - 1)  # every batch once for nodes, all but the first again
    for key, w in full.edges.items():
        assert torch.allclose(part.edges[key], w, atol=1e-12), key


@pytest.mark.parametrize("parallel, hooks", [(False, all_hooks), (True, all_hooks), (False, z_hooks)])
def test_tokenwise_resid_edges_equal_the_batched_vjp(tokenizer, parallel, hooks, monkeypatch):
    """Edges into a residual whose inputs are all submodules (block input, attention at ``hook_attn_out`` or
    ``attn.hook_z``, MLP), computed per active (node, token) without autograd, equal the batched VJP over every
    example; some feature nodes are inactive in some examples and tokens."""
    import sfc_plugin.attribution.edges as edges

    model = make_model(tokenizer, parallel=parallel)
    subs = build_submodules(model, make_saes(hooks(2, embed="blocks.0.hook_resid_pre")))
    batch = tokenize(model, make_records(6))
    seen = {}
    real = edges.tokenwise_edges

    def spy(ins, vjp, cot, *a, **k):
        B, T, _ = cot.shape
        seen[cot.sub.name] = (int(cot.coeff.ne(0).sum()), cot.nodes.feat.numel() * B * T)
        return real(ins, vjp, cot, *a, **k)

    monkeypatch.setattr(edges, "tokenwise_edges", spy)
    fast = attribute(model, subs, batch, logit_diff, ig, steps=2, node_threshold=0.02, batch_size=4, budget=None)
    assert {"resid_0", "resid_1"} <= seen.keys()
    assert any(active < every for name, (active, every) in seen.items() if name.startswith("resid"))
    monkeypatch.setattr(edges, "resid_inputs", lambda *a: None)
    slow = attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=4, budget=None, nodes=fast.nodes)
    assert fast.edges.keys() == slow.edges.keys()
    for key, w in slow.edges.items():
        assert _rel(fast.edges[key], w) < 1e-9, key
    budget = MemoryBudget.resolve("1GB", model)  # budgeted chunks: the same weights
    tight = attribute(model, subs, batch, logit_diff, ig, steps=2, batch_size=4, budget=budget, nodes=fast.nodes)
    assert tight.edges.keys() == slow.edges.keys()
    for key, w in slow.edges.items():
        assert _rel(tight.edges[key], w) < 1e-9, key


def test_resid_inputs_need_every_path_to_be_a_submodule(tokenizer):
    """With the embedding at ``hook_embed`` (plus the position embedding) or the MLP without an SAE, a residual
    is not a sum of submodules: its edges stay on the batched VJP."""
    from sfc_plugin.attribution.edges import resid_inputs

    model = make_model(tokenizer)
    subs = build_submodules(model, make_saes(all_hooks(2)))
    by = {s.name: s for s in subs}
    assert resid_inputs(model, subs, by["resid_0"]) is None
    assert [u.name for u, _ in resid_inputs(model, subs, by["resid_1"])] == ["resid_0", "attn_1", "mlp_1"]
    assert resid_inputs(model, subs, by["attn_1"]) is None
    no_mlp = [s for s in subs if s.name != "mlp_1"]
    assert resid_inputs(model, no_mlp, by["resid_1"]) is None
