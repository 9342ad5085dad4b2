"""``dtype=`` / ``--dtype``: a bfloat16 model gives (at least) float32 effects close to the float32 ones."""

from __future__ import annotations

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes

import sfc_plugin


def test_bfloat16_model_keeps_effects_close_to_float32(tokenizer):
    saes = make_saes(all_hooks(2))
    records = make_records(6)
    kw = dict(method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False)
    ref = sfc_plugin.discover(make_model(tokenizer), saes, records, dtype="float32", **kw)
    low = sfc_plugin.discover(make_model(tokenizer), saes, records, dtype="bfloat16", **kw)
    assert ref.provenance["dtype"] == "float32" and low.provenance["dtype"] == "bfloat16"
    a = {n.id: n.effect for n in ref.nodes[1:]}
    b = {n.id: n.effect for n in low.nodes[1:]}
    big = [k for k in a if abs(a[k]) > 0.05 * max(map(abs, a.values()))]
    assert len(big) > 10
    for k in [k for k in big if not k.endswith("/err")]:  # error terms suffer bfloat16 cancellation (x − x̂)
        assert b.get(k, 0.0) == pytest.approx(a[k], rel=0.1, abs=0.02 * max(map(abs, a.values()))), k
    assert torch.corrcoef(torch.tensor([[a[k] for k in big], [b.get(k, 0.0) for k in big]]))[0, 1] > 0.98


def test_unknown_dtype_is_one_line(tokenizer):
    with pytest.raises(
        sfc_plugin.errors.SFCError, match="unknown dtype 'float8' \\(known: float32, bfloat16, float16\\)"
    ):
        sfc_plugin.discover(
            make_model(tokenizer), make_saes(all_hooks(1)), make_records(2), dtype="float8", progress=False
        )


def test_saes_loaded_from_specs_follow_the_dtype_with_one_copy(tokenizer, tmp_path):
    """SAE specs (here SAELens directories) load in the run's dtype: the engine's decoder and encoder are the
    SAE's own tensors, not a second, cast copy; SAE objects keep theirs."""
    from sfc_plugin.models import resolve_world
    from sfc_plugin.splicing import build_submodules

    saes = make_saes(all_hooks(1))
    dirs = []
    for i, sae in enumerate(saes.values()):
        sae.save_model(str(tmp_path / f"sae{i}"))
        dirs.append(str(tmp_path / f"sae{i}"))
    model, by_hook = resolve_world(make_model(tokenizer), dirs, dtype="bfloat16")
    subs = build_submodules(model, by_hook)
    for s in subs:
        assert s.sae.W_dec.dtype == torch.bfloat16 and s.W_dec.dtype == torch.bfloat16
        assert s.W_dec.data_ptr() == s.sae.W_dec.data_ptr() and s.W_enc.data_ptr() == s.sae.W_enc.data_ptr()
    before = {hook: sae.W_dec.dtype for hook, sae in saes.items()}
    _, objs = resolve_world(make_model(tokenizer), saes, dtype="bfloat16")
    assert {hook: sae.W_dec.dtype for hook, sae in objs.items()} == before != {hook: torch.bfloat16 for hook in saes}
    records = make_records(4)
    kw = dict(method="atp", node_threshold=0.0, edge_threshold=0.0, progress=False)
    ref = sfc_plugin.discover(make_model(tokenizer), saes, records, dtype="float32", **kw)
    low = sfc_plugin.discover(make_model(tokenizer), dirs, records, dtype="bfloat16", **kw)
    a = {n.id: n.effect for n in ref.nodes[1:]}
    b = {n.id: n.effect for n in low.nodes[1:]}
    big = [k for k in a if abs(a[k]) > 0.05 * max(map(abs, a.values())) and not k.endswith("/err")]
    assert len(big) > 5
    assert torch.corrcoef(torch.tensor([[a[k] for k in big], [b.get(k, 0.0) for k in big]]))[0, 1] > 0.95
