"""Numbers checked against references written here by hand, sharing no code path with the package.

Each test is built so that a plausible bug changes the number it checks (issue 26): ablation values taken from
the clean prompts instead of the patch prompts (the pairs here run in one direction, so the two means differ),
probe pooling that averages over padding (the batch here is padded), integrated gradients on a right instead of
a left Riemann sum (three steps and a 1e-6 tolerance, where the two sums differ by far more), and a SHIFT edit
that loses a layer-normalising SAE's scale σ.
"""

from __future__ import annotations

import pytest
import torch
from conftest import all_hooks, make_model, make_records, make_saes, z_hooks

import sfc_plugin
from sfc_plugin.data import tokenize
from sfc_plugin.evaluation import evaluate
from sfc_plugin.metrics import logit_diff
from sfc_plugin.plugins import lookup
from sfc_plugin.splicing import build_submodules

SUBMODULE = {"hook_embed": "embed"} | {
    f"blocks.{l}.hook_{k}_{p}": f"{k}_{l}" for l in range(4) for k, p in (("attn", "out"), ("mlp", "out"))
}
SUBMODULE |= {f"blocks.{l}.hook_resid_post": f"resid_{l}" for l in range(4)}


def one_way(n: int, same_length: bool = False) -> list[dict]:
    """``n`` pairs that all run singular → plural (clean and patch prompts never trade places)."""
    out = [r for r in make_records(4 * n) if r["clean_answer"] == " is"]
    if same_length:
        out = [r for r in out if len(r["clean_prefix"].split()) == len(out[0]["clean_prefix"].split())]
    assert len(out) >= n
    return out[:n]


def saelens_acts(sae, x):
    """Features and error of SAELens's own encode/decode (no sfc code)."""
    f = sae.encode(x)
    return f, x - sae.decode(f)


# --- ablation values come from the patch run ------------------------------------------------------------------


@pytest.mark.parametrize("same_length", [False, True])
def test_mean_ablation_is_the_mean_of_the_patch_run(tokenizer, same_length):
    model, saes = make_model(tokenizer), make_saes(all_hooks(2))
    records = one_way(6, same_length)
    batch = tokenize(model, records)
    assert (int(batch.last.min()) == int(batch.last.max())) == same_length
    means = lookup("ablation", "mean")(model, build_submodules(model, saes), batch)
    for hook, sae in saes.items():
        rows_f, rows_e = [], []
        for r in records:  # each patch prompt alone, unpadded
            _, cache = model.run_with_cache(tokenize(model, [r]).patch)
            f, e = saelens_acts(sae, cache[hook][0])
            rows_f.append(f)
            rows_e.append(e)
        if same_length:  # per position: mean over examples
            want_f, want_e = torch.stack(rows_f).mean(0), torch.stack(rows_e).mean(0)
        else:  # mean over every real token of every example
            want_f, want_e = torch.cat(rows_f).mean(0), torch.cat(rows_e).mean(0)
        got = means[SUBMODULE[hook]]
        got_f, got_e = got.f[0] if same_length else got.f[0, 0], got.err[0] if same_length else got.err[0, 0]
        assert torch.allclose(got_f, want_f, atol=1e-10) and torch.allclose(got_e, want_e, atol=1e-10), hook
    # the check has power: the clean run's mean is far from the patch run's here
    _, clean = model.run_with_cache(batch.clean)
    f_clean, _ = saelens_acts(saes["blocks.1.hook_resid_post"], clean["blocks.1.hook_resid_post"])
    got_f = means["resid_1"].f
    want_clean = f_clean.mean(0) if same_length else f_clean[batch.valid].mean(0)
    assert (want_clean - (got_f[0] if same_length else got_f[0, 0])).abs().max() > 1e-3


def several_lengths() -> list[dict]:
    """One-way pairs of four token lengths (partners must come from the same length)."""
    nouns = ["the cat", "the big cat", "the big old cat", "a cat", "a old cat", "the old big cat", "a dog near the cat"]
    return [
        {"clean_prefix": n, "patch_prefix": n.replace("cat", "cats", 1).replace("dog", "dogs", 1)}
        | {"clean_answer": " is", "patch_answer": " are"}
        for n in nouns
    ]


def test_resample_ablation_gives_each_example_a_patch_run_of_its_own_length(tokenizer):
    model, saes = make_model(tokenizer), make_saes(all_hooks(2))
    records = several_lengths()
    batch = tokenize(model, records)
    hook = "blocks.0.hook_resid_post"
    got = lookup("ablation", "resample")(model, build_submodules(model, saes), batch)["resid_0"]
    patch_f = []
    for r in records:
        _, cache = model.run_with_cache(tokenize(model, [r]).patch)
        patch_f.append(saelens_acts(saes[hook], cache[hook][0])[0])
    partners = []
    for i in range(len(records)):
        n = int(batch.last[i]) + 1
        mine = got.f[i, :n]
        matches = [j for j, p in enumerate(patch_f) if p.shape[0] == n and torch.allclose(mine, p, atol=1e-10)]
        assert matches, f"example {i}: its ablation values are no patch run of its length"
        partners.append(matches[0])
    assert sorted(partners) == list(range(len(records)))  # a permutation of the patch runs
    assert len(set(int(x) for x in batch.last)) >= 3  # partners are drawn within each length, of several


def test_evaluate_ablates_to_the_patch_mean(tokenizer):
    """``m(∅)`` under mean ablation, against a hand-written hook that writes the patch run's means."""
    model, saes = make_model(tokenizer), make_saes(all_hooks(2))
    records = one_way(6, same_length=True)
    circuit = sfc_plugin.discover(model, saes, records, method="atp", node_threshold=0.0, edges=False, progress=False)
    res = evaluate(model, saes, circuit, records, ablation="mean", thresholds=[1e9], progress=False)
    batch = tokenize(model, records)
    _, cache = model.run_with_cache(batch.patch)
    recon = {}
    for hook, sae in saes.items():
        f, e = saelens_acts(sae, cache[hook])
        recon[hook] = sae.decode(f.mean(0)) + e.mean(0)
    logits = model.run_with_hooks(
        batch.clean, fwd_hooks=[(h, lambda act, hook: recon[hook.name].expand_as(act)) for h in saes]
    )
    assert res["m_empty"] == pytest.approx(logit_diff(logits, batch).mean().item(), abs=1e-9)


# --- SHIFT's probe pools over real tokens only -------------------------------------------------------------------


def test_probe_pooling_on_a_padded_batch_equals_each_text_alone(tokenizer):
    from sfc_plugin.shifting.probe import labelled, pooled

    model = make_model(tokenizer)
    texts = ["the cat", "the big old dogs near the cat", "a dog that the cats like is big", "cats are old"]
    records = [{"text": t, "job": "a" if i % 2 else "b", "sex": "f" if i < 2 else "m"} for i, t in enumerate(texts)]
    data = labelled(model, records, "job", "sex", ("a", "f"), "cpu")
    assert len(set(int(x) for x in data.batch.last)) == len(texts)  # one batch, padded to the longest
    hook = "blocks.0.hook_resid_post"
    X = pooled(model, data, hook)
    for i, r in enumerate(records):
        alone = tokenize(model, [{"clean_prefix": r["text"]}]).clean  # no padding: every position is real
        _, cache = model.run_with_cache(alone)
        # the paper's pooling: activations weighted by the attention mask (all ones here), over its sum
        want = cache[hook][0].mean(0)
        assert torch.allclose(X[i].double(), want, atol=1e-5), r["text"]
    padded_mean = model.run_with_cache(data.batch.clean)[1][hook][0].mean(0)  # the shortest text, padding included
    assert (X[0].double() - padded_mean).abs().max() > 1e-2


# --- integrated gradients: a left Riemann sum ----------------------------------------------------------------------


def hand_ig(model, saes, batch, alphas):
    """Per submodule: mean feature effects ``[F]`` and error effect, with the submodule interpolated alone."""
    _, c = model.run_with_cache(batch.clean)
    _, p = model.run_with_cache(batch.patch)
    out = {}
    for hook, sae in saes.items():
        grads = []
        for a in alphas:
            x = (c[hook] + a * (p[hook] - c[hook])).detach().requires_grad_(True)
            logits = model.run_with_hooks(batch.clean, fwd_hooks=[(hook, lambda act, hook, x=x: x)])
            grads.append(torch.autograd.grad(logit_diff(logits, batch).sum(), x)[0])
        g = torch.stack(grads).mean(0)
        (fc, ec), (fp, ep) = saelens_acts(sae, c[hook]), saelens_acts(sae, p[hook])
        out[SUBMODULE[hook]] = (
            ((g @ sae.W_dec.T) * (fp - fc)).sum(1).mean(0).detach(),
            (g * (ep - ec)).sum((1, 2)).mean(0).item(),
        )
    return out


def test_ig_is_a_left_riemann_sum(tokenizer):
    model, saes = make_model(tokenizer), make_saes(all_hooks(2))
    records = make_records(6)
    steps = 3
    circuit = sfc_plugin.discover(
        model, saes, records, method="ig", steps=steps, node_threshold=0.0, edges=False, progress=False
    )
    got = {n.id: n.effect for n in circuit.nodes if n.kind != "metric"}
    batch = tokenize(model, records)
    left = hand_ig(model, saes, batch, [k / steps for k in range(steps)])
    right = hand_ig(model, saes, batch, [(k + 1) / steps for k in range(steps)])
    gap = 0.0
    for sub, (feats, err) in left.items():
        for j, want in enumerate(feats.tolist()):
            assert got.get(f"{sub}/{j}", 0.0) == pytest.approx(want, abs=1e-6), f"{sub}/{j}"
        assert got.get(f"{sub}/err", 0.0) == pytest.approx(err, abs=1e-6), f"{sub}/err"
        gap = max(gap, (feats - right[sub][0]).abs().max().item(), abs(err - right[sub][1]))
    assert gap > 1e-3  # a right-sum off-by-one would be seen, by a wide margin


# --- a SHIFT edit on a layer-normalising SAE -----------------------------------------------------------------------


@pytest.mark.parametrize("hooks", ["resid", "hook_z"])
def test_shift_edit_on_a_layer_norm_sae_equals_a_hand_written_hook(tokenizer, hooks):
    """Ablating features j of a layer-normalising SAE removes ``σ Σ_j f_j W_dec[j]``: the difference between
    SAELens's own decode of ``f`` and of ``f`` with those features zeroed."""
    from sfc_plugin.shifting.edit import FeatureEdit

    model = make_model(tokenizer)
    hook = "blocks.1.hook_resid_post" if hooks == "resid" else "blocks.1.attn.hook_z"
    chosen = make_saes(all_hooks(2) if hooks == "resid" else z_hooks(2), arch="topk", d_z=16)
    sae = chosen[hook]
    sae.cfg.normalize_activations = "layer_norm"
    sae._setup_activation_normalization()
    sub = build_submodules(model, {hook: sae})[0]
    tokens = tokenize(model, make_records(4)).clean
    _, cache = model.run_with_cache(tokens)
    active = (sae.encode(cache[hook]) != 0).flatten(0, -2).sum(0)
    feats = active.argsort(descending=True)[:3].tolist()  # the three most often active features
    edit = FeatureEdit({sub.name: sub}, ablate={sub.name: feats})
    with edit.applied(model):
        got = model(tokens)

    def hand(act, hook):
        f = sae.encode(act)
        full = sae.decode(f)  # SAELens forgets μ, σ after a decode: encode again
        f_off = sae.encode(act).clone()
        f_off[..., feats] = 0
        return act - (full - sae.decode(f_off))

    want = model.run_with_hooks(tokens, fwd_hooks=[(hook, hand)])
    assert torch.allclose(got, want, atol=1e-9)
    assert (want - model(tokens)).abs().max() > 1e-3  # the edit changes the output
