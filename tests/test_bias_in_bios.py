"""``bias_in_bios``: the authors' splits of ``LabHC/bias_in_bios`` from an offline replica with the true schema and
file layouts (hub snapshot, ``datasets`` builder cache, a folder of files, ``save_to_disk``), the split arithmetic
against a hand computation, and the one-line refusals. The model-side pieces SHIFT needs at this scale (the
authors' probe recipe, a few features of a wide SAE, resumable passes) are checked here too."""

from __future__ import annotations

import json
import random

import offline_hub as hub
import pytest
import torch
from conftest import SAE_KINDS, TRANSCODER_KINDS, make_dictionary

import sfc_plugin
from sfc_plugin.bias_in_bios import PROFESSIONS, build_splits, split_of
from sfc_plugin.errors import SFCError

# BIB_COUNTS by hand: train professor/male 30, professor/female 24, nurse/male 12, nurse/female 27;
# test 20 / 16 / 11 / 18 (surgeon and rapper rows are other professions, to be skipped)
HAND = {
    "train": 2 * 27,  # ambiguous: professor/male and nurse/female, each cut to min(30, 27)
    "val": 4 * 12,  # balanced from the train split: each group cut to min(30, 24, 12, 27)
    "test": 20 + 16 + 11 + 18,  # every group of the test split in full
    "test_balanced": 4 * 11,  # the balanced cut of the test split: min(20, 16, 11, 18)
}


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    root = tmp_path_factory.mktemp("bib")
    cache = hub.HubCache(root / "hf")
    rows = hub.bias_in_bios_replica(cache, root / "stage")
    return {"home": root / "hf", "rows": rows, "root": root}


@pytest.fixture
def offline(replica, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(replica["home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return replica


def texts(rows, profession, gender):
    return [r["hard_text"] for r in rows if r["profession"] == profession and r["gender"] == gender]


def test_the_replica_has_the_hub_layout_and_schema(replica):
    import pyarrow.parquet as pq

    repo = replica["home"] / "hub" / "datasets--LabHC--bias_in_bios"
    commit = (repo / "refs" / "main").read_text()
    snap = repo / "snapshots" / commit
    assert sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()) == sorted(
        ["README.md", *hub.BIB_FILES.values()]
    )
    assert all((snap / f).is_symlink() for f in hub.BIB_FILES.values())  # links into blobs/, as the hub writes
    schema = pq.read_schema(snap / hub.BIB_FILES["train"])
    assert [(f.name, str(f.type)) for f in schema] == [
        ("hard_text", "string"),
        ("profession", "int64"),
        ("gender", "int64"),
    ]


def test_splits_equal_the_hand_computation(offline):
    rows = offline["rows"]
    train, val, test = (sfc_plugin.load_dataset("bias_in_bios", s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (HAND["train"], HAND["val"], HAND["test"])
    assert sum(r["balanced"] for r in test) == HAND["test_balanced"] and all(r["balanced"] for r in test[:44])
    c = train.info["counts"]
    assert (c["train"]["n"], c["val"]["n"], c["test"]["n"], c["test"]["balanced"]) == (54, 48, 65, 44)
    assert c["professions"] == {"professor": 21, "nurse": 13} and c["seed"] == 42
    assert c["test"]["groups"] == {"professor/male": 20, "professor/female": 16, "nurse/male": 11, "nurse/female": 18}
    assert val.info["drawn_from"] == "train" and "drawn_from" not in train.info

    # the notebook's get_text_batches, written out again: cut in dataset order, concatenate, shuffle with seed 42
    neg, pos = texts(rows["train"], 21, 0)[:27], texts(rows["train"], 13, 1)[:27]
    amb = [(t, "professor", "male") for t in neg] + [(t, "nurse", "female") for t in pos]
    random.Random(42).shuffle(amb)  # the same permutation as shuffling the indices
    assert [(r["text"], r["profession"], r["gender"]) for r in train] == amb
    four = [(21, 0), (21, 1), (13, 0), (13, 1)]
    name = {21: "professor", 13: "nurse"}
    bal = [(t, name[p], "female" if g else "male") for p, g in four for t in texts(rows["train"], p, g)[:12]]
    random.Random(42).shuffle(bal)
    assert [(r["text"], r["profession"], r["gender"]) for r in val] == bal
    full = {(p, g): texts(rows["test"], p, g) for p, g in four}
    assert {r["text"] for r in test if r["balanced"]} == {t for k in four for t in full[k][:11]}
    assert [r["text"] for r in test if not r["balanced"]] == [t for k in four for t in full[k][11:]]
    assert {r["text"] for r in train} <= {r["hard_text"] for r in rows["train"]}  # nothing from dev or test


def test_other_professions_by_name(offline):
    built = sfc_plugin.load_dataset("bias_in_bios:surgeon,nurse", "train")
    assert len(built) == 2 * min(11, 27) and {r["profession"] for r in built} == {"surgeon", "nurse"}
    assert built.info["counts"]["val"]["n"] == 4 * 10  # surgeon/female 10 is the smallest group
    four = [("t", 0, 0), ("t", 1, 1), ("t", 0, 1), ("t", 1, 0)]  # labels 0 and 1: accountant and architect
    built = build_splits({"train": four * 10 + [("t", 0, 0)] * 5, "test": four * 10}, 0, 1)
    assert [built["counts"][s]["n"] for s in ("train", "val", "test")] == [20, 40, 40]
    assert built["counts"]["train"]["groups"] == {"accountant/male": 15, "architect/female": 10}


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "bias_in_bios:professor,rapper",
            "bias_in_bios:professor,rapper: too few examples: the train split has 3 female rapper biographies "
            "(need at least 10 in each profession-gender group)",
        ),
        (
            "bias_in_bios:nurses,professor",
            "bias_in_bios: unknown profession 'nurses' (known: " + ", ".join(PROFESSIONS) + ")",
        ),
        ("bias_in_bios:nurse,nurse", "bias_in_bios: the two professions must differ, got 'nurse' twice"),
        (
            "bias_in_bios:nurse",
            "bias_in_bios: expected bias_in_bios:PROFESSION_A,PROFESSION_B[,dir=PATH] (e.g. bias_in_bios:professor,"
            "nurse), got 'nurse'",
        ),
        (
            "bias_in_bios:professor,nurse,size=3",
            "bias_in_bios: unknown option 'size' in 'professor,nurse,size=3' (known: dir)",
        ),
        ("toy/bios:professor", "dataset 'toy/bios' takes no argument, got 'toy/bios:professor'"),
    ],
)
def test_refusals_are_one_line(offline, spec, message):
    with pytest.raises(SFCError) as err:
        sfc_plugin.load_dataset(spec, "train")
    assert str(err.value) == message


def test_a_cache_without_the_dataset_is_refused(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(SFCError) as err:
        sfc_plugin.load_dataset("bias_in_bios", "train")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("bias_in_bios: LabHC/bias_in_bios is not in the Hugging Face cache")
    assert "datasets--LabHC--bias_in_bios" in msg and "bias_in_bios:dir=PATH" in msg
    with pytest.raises(SFCError, match="bias_in_bios: dir '.*nope' is not a directory"):
        sfc_plugin.load_dataset(f"bias_in_bios:dir={tmp_path / 'nope'}", "train")
    (tmp_path / "half" / "data").mkdir(parents=True)  # a copy with the train split only
    hub.write_bib_parquet(tmp_path / "half", files={"train": hub.BIB_FILES["train"]})
    with pytest.raises(SFCError, match="has no test split"):
        sfc_plugin.load_dataset(f"bias_in_bios:dir={tmp_path / 'half'}", "train")
    with pytest.raises(SFCError, match="unknown split 'dev' for dataset 'bias_in_bios'"):
        sfc_plugin.load_dataset(f"bias_in_bios:dir={offline['root'] / 'stage'}", "dev")


def test_every_local_layout_gives_the_same_splits(offline, tmp_path, monkeypatch):
    """A folder of the hub's files, the datasets builder cache (sharded arrow), and a save_to_disk directory."""
    import datasets
    import pyarrow as pa

    want = {s: sfc_plugin.load_dataset("bias_in_bios", s) for s in ("train", "val", "test")}
    repo = offline["home"] / "hub" / "datasets--LabHC--bias_in_bios"
    snapshot = repo / "snapshots" / (repo / "refs" / "main").read_text()  # a folder of the hub's files
    folder = sfc_plugin.load_dataset(f"bias_in_bios:professor,nurse,dir={snapshot}", "test")
    assert folder == want["test"] and folder.info["counts"]["source"] == str(snapshot)

    built = tmp_path / "datasets" / "LabHC___bias_in_bios" / "default" / "0.0.0" / "0123abcd"
    built.mkdir(parents=True)
    (built / "dataset_info.json").write_text(json.dumps({"dataset_name": "bias_in_bios"}))
    for split, rows in offline["rows"].items():
        table = pa.Table.from_pylist(rows)
        halves = [table.slice(0, len(rows) // 2), table.slice(len(rows) // 2)]  # two shards, as datasets names them
        for i, part in enumerate(halves):
            with pa.ipc.new_stream(str(built / f"bias_in_bios-{split}-{i:05d}-of-00002.arrow"), part.schema) as w:
                w.write_table(part)
    (built / "cache-1234.arrow").write_bytes(b"not arrow")  # datasets' scratch files are skipped
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no hub snapshot here: the builder cache is used
    got = {s: sfc_plugin.load_dataset("bias_in_bios", s) for s in ("train", "val", "test")}
    assert got == want and got["train"].info["counts"]["source"] == "LabHC/bias_in_bios (datasets cache, 0123abcd)"

    saved = tmp_path / "saved"
    datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in offline["rows"].items()}).save_to_disk(
        str(saved)
    )
    assert sfc_plugin.load_dataset(f"bias_in_bios:dir={saved}", "val") == want["val"]


@pytest.mark.parametrize(
    "path, split",
    [
        ("data/train-00000-of-00001-0ab65b32c47407e8.parquet", "train"),
        ("data/dev-00000-of-00001-e6551072fff26949.parquet", "dev"),
        ("default/test/0000.parquet", "test"),
        ("bias_in_bios-train.arrow", "train"),
        ("bias_in_bios-test-00001-of-00002.arrow", "test"),
        ("bios_train.pkl.parquet", "train"),
        ("README.parquet", None),
    ],
)
def test_split_names_of_the_layouts(path, split):
    from pathlib import Path

    assert split_of(Path(path)) == split


# ---- the model side at this scale ------------------------------------------------------------------


def test_authors_probe_recipe_is_their_training_loop():
    """train_probe(recipe="authors") == the notebook's train_probe: manual_seed, nn.Linear, AdamW lr 1e-2, one
    epoch over batches of 32, BCEWithLogitsLoss; and it leaves the global random state alone."""
    gen = torch.Generator().manual_seed(3)
    X, y = torch.randn(100, 16, generator=gen), (torch.rand(100, generator=gen) > 0.5).float()
    before = torch.random.get_rng_state()
    from sfc_plugin.shifting.probe import train_probe

    got = train_probe(X, y, seed=42)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(42)
    ref = torch.nn.Linear(16, 1, bias=True)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    for i in range(0, 100, 32):
        logits = ref(X[i : i + 32]).squeeze(-1)
        loss = torch.nn.BCEWithLogitsLoss()(logits, y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(got.weight, ref.weight) and torch.equal(got.bias, ref.bias)
    torch.random.set_rng_state(before)


def test_pool_is_the_attention_mask_weighted_mean():
    from sfc_plugin.data import Batch
    from sfc_plugin.shifting.probe import pool

    act = torch.arange(24.0).reshape(2, 3, 4)
    batch = Batch(torch.zeros(2, 3, dtype=torch.long), None, None, None, torch.tensor([2, 0]), [{}, {}])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.float)  # the tokenizer's attention mask
    want = (act * mask[:, :, None]).sum(1) / mask.sum(1)[:, None]
    assert torch.equal(pool(act, batch), want)


def test_accuracy_counts_balanced_rows_and_every_group_for_the_worst():
    from sfc_plugin.shifting.probe import accuracy_row
    from sfc_plugin.shifting.records import Labelled

    y = torch.tensor([0, 0, 1, 1, 0, 0, 0.0])
    z = torch.tensor([0, 1, 0, 1, 1, 1, 1.0])
    balanced = torch.tensor([True, True, True, True, False, False, False])
    X = torch.tensor([[-1.0], [-1], [1], [1], [1], [1], [-1]])  # wrong on 2 of the 4 extra (0, 1) rows
    probe = torch.nn.Linear(1, 1)
    with torch.no_grad():
        probe.weight.fill_(1.0)
        probe.bias.zero_()
    row = accuracy_row("x", probe, X, Labelled(None, y, z, balanced))
    assert row["profession_acc"] == 1.0 and row["gender_acc"] == 0.5  # the 4 balanced rows only
    assert row["worst_group_acc"] == pytest.approx(2 / 4)  # group (0, 1) in full: rows 1, 4, 5, 6


@pytest.mark.parametrize("kind", SAE_KINDS + TRANSCODER_KINDS)
def test_encode_some_equals_the_full_encode(kind):
    """Every dictionary kind: the chosen features of the node set's own encode (the separable kinds, SAEs and
    transcoders, by their encoder columns only; the others through the full encode)."""
    from sfc_plugin.dictionaries import KINDS
    from sfc_plugin.shifting.encoding import SEPARABLE, encode_some, separable
    from sfc_plugin.splicing import Submodule

    tc = kind in TRANSCODER_KINDS
    sae = make_dictionary(kind, "blocks.0.hook_mlp_in" if tc else "blocks.0.hook_resid_post", 16, 64, seed=3, d_out=12)
    sae = sae.to(torch.float32)
    if getattr(sae, "b_enc", None) is not None:
        with torch.no_grad():
            sae.b_enc.add_(0.2)  # some features on, some off
    maps = KINDS[kind].maps(sae)
    hook = "blocks.0.hook_mlp_out" if tc else "blocks.0.hook_resid_post"
    sub = Submodule(
        "tc_0" if tc else "resid_0", hook, 0, sae, maps.W_enc, maps.W_dec, maps.b_dec, kind=KINDS[kind],
        read_hook="blocks.0.hook_mlp_in" if tc else "", W_skip=maps.W_skip,
    )  # fmt: skip
    assert separable(sub) == (kind in SEPARABLE) and sub.transcoder == tc
    read = torch.randn(3, 5, 16)
    feats = torch.tensor([3, 17, 40, 63])
    full = sub.encode(read)[..., feats]
    assert (full != 0).any() and (full == 0).any() if kind in SEPARABLE else True
    torch.testing.assert_close(encode_some(sub, read, feats), full, rtol=1e-5, atol=1e-6)


def test_texts_without_bos(tokenizer):
    """``--no-bos`` (the authors' Pythia runs): the same token ids without the BOS, the pool over the text's own
    tokens, the model's default restored; empty texts refused."""
    from conftest import make_model, make_records

    from sfc_plugin.shifting.probe import labelled, pool

    model = make_model(tokenizer)
    assert model.cfg.default_prepend_bos
    records = [{"text": r["clean_prefix"], "p": "a", "g": "m"} for r in make_records(3)]
    on = labelled(model, records, "p", "g", ("a", "m"), "cpu")
    off = labelled(model, records, "p", "g", ("a", "m"), "cpu", prepend_bos=False)
    assert model.cfg.default_prepend_bos is True
    bos = tokenizer.bos_token_id
    assert (on.batch.clean[:, 0] == bos).all() and not (off.batch.clean == bos).any()
    assert torch.equal(on.batch.last, off.batch.last + 1)
    for i, n in enumerate(off.batch.last.tolist()):
        assert torch.equal(on.batch.clean[i, 1 : n + 2], off.batch.clean[i, : n + 1])
    act = torch.randn(*off.batch.clean.shape, 4)
    want = torch.stack([act[i, : n + 1].mean(0) for i, n in enumerate(off.batch.last.tolist())])
    torch.testing.assert_close(pool(act, off.batch), want)
    with pytest.raises(SFCError, match="record 1 has no tokens"):
        labelled(model, [records[0], {**records[0], "text": ""}], "p", "g", ("a", "m"), "cpu", prepend_bos=False)
