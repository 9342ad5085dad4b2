"""The toy world: shipped artifacts, tokenizer, datasets, accuracy, SAEs, reproducible rebuilds."""

from __future__ import annotations

import argparse
import random

import pytest

import sfc_plugin.toy as toy
from sfc_plugin.errors import SFCError
from sfc_plugin.toy import language as L
from sfc_plugin.toy import plugin as toy_plugin

DATASETS = [f"toy/sva-{c}" for c in toy.CONDITIONS] + ["toy/bios"]


@pytest.fixture(scope="module")
def world():
    return toy.load()


def _parser():
    from sfc_plugin.commands.toy import add_parser

    parser = argparse.ArgumentParser(prog="sfc")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


# ---------------------------------------------------------------------------------------------
# shipped model and SAEs


def test_load_model_and_saes(world):
    model, saes = world
    assert model.cfg.n_layers == 3 and model.tokenizer is not None
    assert list(saes) == toy.hook_names(3)
    assert len(saes) == 10
    for hook, sae in saes.items():
        assert sae.cfg.metadata.hook_name == hook
        assert sae.cfg.d_in == model.cfg.d_model
        assert sae.cfg.d_sae >= 4 * model.cfg.d_model
    hook_points = dict(model.hook_dict)
    assert all(h in hook_points for h in saes)


def test_tokenizer_round_trip(world):
    model, _ = world
    tok = model.tokenizer
    toks = model.to_tokens("The authors that the guard likes")
    assert toks.shape == (1, 7)
    assert int(toks[0, 0]) == tok.bos_token_id
    assert tok.decode(toks[0, 1:]) == "The authors that the guard likes"
    assert model.to_tokens(" are", prepend_bos=False).shape == (1, 1)
    assert model.to_tokens(" likes", prepend_bos=False).shape == (1, 1)
    assert model.to_str_tokens("The author is") == ["<bos>", "The", "author", "is"]
    for rec in toy_plugin.sfc_datasets()["toy/bios"]("test")[:50]:
        ids = tok(rec["text"])["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == rec["text"]


def test_every_word_is_one_known_token(world):
    model, _ = world
    vocab = model.tokenizer.get_vocab()
    assert set(L.vocabulary()) <= set(vocab)
    assert len(vocab) == model.cfg.d_vocab


def test_pairs_single_token_answers_equal_lengths(world):
    model, _ = world
    unk = model.tokenizer.unk_token_id
    for name in DATASETS[:-1]:
        for split in ("train", "test"):
            recs = toy_plugin.sfc_datasets()[name](split)
            assert recs, (name, split)
            lengths = set()
            for r in recs:
                assert set(r) == {"clean_prefix", "patch_prefix", "clean_answer", "patch_answer", "case"}
                assert r["case"] in ("singular_plural", "plural_singular")
                clean, patch = model.to_tokens(r["clean_prefix"]), model.to_tokens(r["patch_prefix"])
                assert clean.shape == patch.shape and unk not in clean and unk not in patch
                assert (clean != patch).sum() == 1  # minimal pairs
                lengths.add(clean.shape[1])
                for ans in (r["clean_answer"], r["patch_answer"]):
                    assert ans.startswith(" ")
                    assert model.to_tokens(ans, prepend_bos=False).shape == (1, 1)
                assert r["clean_answer"] != r["patch_answer"]
            assert len(lengths) == 1, name  # one prompt length per condition: batches need no padding


def test_within_rc_answers_are_embedded_verbs():
    recs = toy_plugin.sfc_datasets()["toy/sva-within_rc"]("test")
    verbs = {" " + v for pair in L.VERBS for v in pair}
    assert all(r["clean_answer"] in verbs and r["patch_answer"] in verbs for r in recs)
    r = recs[0]
    assert r["clean_prefix"].split()[:3] == r["patch_prefix"].split()[:3]  # the head noun is the same


def test_train_and_test_prompts_disjoint():
    reg = toy_plugin.sfc_datasets()
    for cond in ("nounpp", "rc", "within_rc"):
        prompts = lambda split: {
            p for r in reg[f"toy/sva-{cond}"](split) for p in (r["clean_prefix"], r["patch_prefix"])
        }  # noqa: E731
        assert not prompts("train") & prompts("test"), cond
    assert len(reg["toy/sva-rc"]("test")) <= 500


# ---------------------------------------------------------------------------------------------
# datasets and plugin registration


def test_datasets_direct_hook():
    reg = toy_plugin.sfc_datasets()
    assert set(reg) == set(DATASETS)
    assert reg["toy/sva-rc"](None) == reg["toy/sva-rc"]("test")
    with pytest.raises(SFCError, match="'validation'"):
        reg["toy/sva-rc"]("validation")


def test_datasets_registered_through_plugin_manager():
    import pluggy

    from sfc_plugin import hookspecs
    from sfc_plugin.plugins import registry

    pm = pluggy.PluginManager("sfc_plugin")
    pm.add_hookspecs(hookspecs)
    pm.register(toy_plugin, name="sfc_plugin.toy.plugin")
    reg = registry("dataset", pm)
    assert set(DATASETS) <= set(reg)
    assert reg["toy/sva-simple"].obj("train")[0]["clean_prefix"].startswith("The ")


def test_datasets_in_default_registry():
    from sfc_plugin import plugins

    try:
        pm = plugins.new_plugin_manager(entry_points=False)
    except ModuleNotFoundError as exc:  # the core's built-in plugins may not be written yet
        if exc.name in plugins.BUILTIN_PLUGINS and exc.name != "sfc_plugin.toy.plugin":
            pytest.skip(f"built-in plugin {exc.name} not available")
        raise
    reg = plugins.registry("dataset", pm)
    assert set(DATASETS) <= set(reg)
    assert reg["toy/sva-nounpp"].plugin == "sfc_plugin.toy.plugin"


def test_bios_splits():
    reg = toy_plugin.sfc_datasets()["toy/bios"]
    train, test = reg("train"), reg("test")
    assert all(set(b) == {"text", "profession", "gender"} for b in train + test)
    # train is ambiguous: profession and gender coincide
    assert {(b["profession"], b["gender"]) for b in train} == {("nurse", "female"), ("professor", "male")}
    # test is balanced over the four groups
    groups = {}
    for b in test:
        groups[(b["profession"], b["gender"])] = groups.get((b["profession"], b["gender"]), 0) + 1
    assert len(groups) == 4 and len(set(groups.values())) == 1
    assert not {b["text"] for b in train} & {b["text"] for b in test}
    # both cues are present: a pronoun/name for gender, a workplace for the profession
    for b in test[:40]:
        words = set(b["text"].replace(".", " ").replace(",", " ").split())
        assert words & set(L.FIRST_NAMES[b["gender"]])
        assert words & {L.PRONOUNS[b["gender"]][0]}
        assert words & set(L.WORKPLACES[b["profession"]])
        assert "nurse" not in words and "professor" not in words


# ---------------------------------------------------------------------------------------------
# behaviour and quality


@pytest.mark.parametrize("condition", toy.CONDITIONS)
def test_agreement_accuracy(world, condition):
    from sfc_plugin.toy.builder import agreement_accuracy

    model, _ = world
    recs = toy_plugin.sfc_datasets()[f"toy/sva-{condition}"]("test")
    sample = random.Random(0).sample(recs, min(100, len(recs)))
    assert agreement_accuracy(model, sample) >= 0.99


def test_report():
    rep = toy.report()
    assert set(rep["accuracy"]) == set(toy.CONDITIONS)
    assert all(v >= 0.99 for v in rep["accuracy"].values())
    assert list(rep["saes"]) == toy.hook_names(3)
    for q in rep["saes"].values():
        assert 0 < q["l0"] < q["d_sae"] and 0 <= q["fvu"] < 1 and 0 <= q["dead_fraction"] < 1
    assert set(rep["spliced_accuracy"]) == set(toy.CONDITIONS)
    assert rep["seed"] == 0 and rep["reduced"] is False
    assert rep["artifact_bytes"] <= 20e6
    assert rep["build_seconds"] > 0


def test_artifacts_are_small_and_pickle_free():
    files = [p for p in toy.ARTIFACTS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20e6
    assert {p.suffix for p in files} <= {".json", ".jsonl", ".safetensors"}


def test_cli_info(capsys):
    parser = _parser()
    for argv in (["toy", "info"], ["toy"]):
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        out = capsys.readouterr().out
        assert "within_rc" in out and "blocks.2.hook_resid_post" in out
    args = parser.parse_args(["toy", "info", "--json"])
    assert args.func(args) == 0
    assert '"accuracy"' in capsys.readouterr().out


def test_missing_artifacts_is_a_clean_error(tmp_path):
    with pytest.raises(SFCError, match="sfc toy build"):
        toy.load(path=tmp_path)
    with pytest.raises(SFCError):
        toy.report(tmp_path)


# ---------------------------------------------------------------------------------------------
# reproducible rebuilds


def test_corpus_uses_only_the_vocabulary():
    vocab = set(L.vocabulary())
    for seq in L.corpus(0, 200, 31):
        assert len(seq) == 31 and set(seq) <= vocab


def test_language_is_deterministic():
    assert L.make_datasets(3, reduced=True) == L.make_datasets(3, reduced=True)
    assert L.make_datasets(3, reduced=True) != L.make_datasets(4, reduced=True)
    assert L.corpus(1, 5, 31) == L.corpus(1, 5, 31)


def test_reduced_build_reproducible(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    rep = toy.build(a, seed=0, reduced=True, verbose=False)
    assert rep["reduced"] is True and set(rep["accuracy"]) == set(toy.CONDITIONS)
    args = _parser().parse_args(["toy", "build", "-o", str(b), "--seed", "0", "--reduced", "-q"])
    assert args.func(args) == 0

    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    weights = [f for f in files_a if f.suffix == ".safetensors"]
    assert len(weights) == 1 + 4  # the model and four SAEs
    for f in files_a:
        if f.name != "report.json":  # the report records timings
            assert (a / f).read_bytes() == (b / f).read_bytes(), f

    model, saes = toy.load(path=a)
    assert model.cfg.n_layers == 1
    assert list(saes) == toy.hook_names(1)
    assert all(s.cfg.d_in == model.cfg.d_model and s.cfg.metadata.hook_name == h for h, s in saes.items())
    assert model.to_tokens("The author that the guards like").shape == (1, 7)
    assert toy.report(a)["seed"] == 0


def test_build_never_writes_inside_the_installed_package(tmp_path, monkeypatch):
    before = sorted(p.relative_to(toy.ARTIFACTS) for p in toy.ARTIFACTS.rglob("*"))
    for out in (toy.ARTIFACTS, toy.ARTIFACTS / "data", toy.ARTIFACTS.parent.parent):
        with pytest.raises(SFCError, match="inside the installed package"):
            toy.build(out, reduced=True)
    monkeypatch.chdir(toy.ARTIFACTS)  # the default ./sfc-toy, resolved inside the package, is refused too
    args = _parser().parse_args(["toy", "build", "--reduced"])
    with pytest.raises(SFCError, match="inside the installed package"):
        args.func(args)
    assert sorted(p.relative_to(toy.ARTIFACTS) for p in toy.ARTIFACTS.rglob("*")) == before
    with pytest.raises(SFCError, match="seed"):
        toy.build("/nonexistent/never", seed=-1)
