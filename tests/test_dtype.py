"""``dtype=`` / ``--dtype``: a bfloat16 model gives (at least) float32 effects close to the float32 ones."""

from __future__ import annotations

import pytest
import torch

import sfc_plugin

from conftest import all_hooks, make_model, make_records, make_saes


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
    with pytest.raises(sfc_plugin.errors.SFCError, match="unknown dtype 'float8' \\(known: float32, bfloat16, float16\\)"):
        sfc_plugin.discover(make_model(tokenizer), make_saes(all_hooks(1)), make_records(2), dtype="float8", progress=False)
