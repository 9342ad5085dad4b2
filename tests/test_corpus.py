"""The one text source: every input kind, the refusals, the two packers and the toy streams, and the
direct logit effect, each against a hand computation."""

from __future__ import annotations

import hashlib
import json
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import make_model

from sfc_plugin.corpus import (
    Corpus,
    dataset_rows,
    documents,
    load_corpus,
    load_text,
    read_texts,
    toy_documents,
    toy_rows,
    windows,
)
from sfc_plugin.dashboards.compute import direct_logit_effects
from sfc_plugin.errors import SFCError

TEXTS = ["the cat is big", "  a dog near the cats", "dogs like that"]


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(tokenizer)  # word-level: <bos>=0, <pad>=1, <unk>=2, then conftest.WORDS from 3


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same three documents in every kind of source (blank and null records in between)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path_factory.mktemp("sources")
    (d / "c.txt").write_bytes(("\n\n".join(TEXTS[:2]) + "\r\n   \n" + TEXTS[2] + "\n").encode())
    lines = [json.dumps(TEXTS[0]), json.dumps({"text": TEXTS[1], "id": 1}), "", json.dumps({"text": TEXTS[2]})]
    (d / "c.jsonl").write_text("\n".join(lines) + "\n")
    (d / "c.json").write_text("\n".join(lines) + "\n")
    rows = {"text": [TEXTS[0], None, TEXTS[1], " ", TEXTS[2]], "label": [0, 1, 2, 3, 4]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(d / "saved"))
    other = datasets.Dataset.from_dict({"text": ["the"]})
    datasets.DatasetDict({"test": other, "train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(d / "dict"))
    datasets.DatasetDict({"b": datasets.Dataset.from_dict(rows), "a": other}).save_to_disk(str(d / "dict_no_train"))
    (d / "hub" / "data").mkdir(parents=True)  # a hub snapshot: one parquet file per split
    pq.write_table(pa.table(rows), d / "hub" / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["the"], "label": [9]}), d / "hub" / "data" / "test-00000-of-00001.parquet")
    (d / "arrow").mkdir()
    with pa.ipc.new_stream(str(d / "arrow" / "part.arrow"), pa.table(rows).schema) as w:
        w.write_table(pa.table(rows))
    pq.write_table(pa.table(rows), d / "one.parquet")
    return d


@pytest.mark.parametrize(
    "name", ["c.txt", "c.jsonl", "c.json", "saved", "dict", "dict_no_train", "hub", "hub/data", "arrow", "one.parquet"]
)
def test_every_kind_of_source_reads_the_same_documents(sources, name):
    assert list(read_texts(sources / name)) == TEXTS  # lines as written (leading spaces kept), no CR
    assert [d.text for d in documents(sources / name, 2)] == TEXTS[:2]


def test_dataset_rows_pick_a_split_and_columns(sources):
    assert [r["label"] for r in dataset_rows(sources / "hub", ["label"], split="test")] == [9]
    assert list(dataset_rows(sources / "dict", ["text"], split="test")) == [{"text": "the"}]
    assert [r["label"] for r in dataset_rows(sources / "hub")] == [0, 1, 2, 3, 4]
    with pytest.raises(SFCError, match=r"has no split 'dev' \(splits: test, train\)"):
        list(dataset_rows(sources / "hub", split="dev"))


def test_refusals_are_one_line_and_the_same_for_every_option(sources, model, tmp_path):
    """Missing, empty, no text field, a directory that is not a dataset, ...: one line naming the source,
    with the same words whether it came through --corpus, --text or --evidence-text."""
    from sfc_plugin.shifting.evidence import evidence_texts
    from sfc_plugin.shifting.side_effects import resolve_text

    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "nofield.jsonl").write_text('{"body": "the cat"}\n')
    (tmp_path / "late.jsonl").write_text('"the cat"\n{"body": 1}\n')
    (tmp_path / "notjson.jsonl").write_text("{the cat\n")
    (tmp_path / "latin1.txt").write_bytes(b"the cat\ncaf\xe9\n")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.md").write_text("the cat")
    (tmp_path / "ints").mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints" / "x.parquet")
    cases = {
        "missing.txt": r"is neither 'toy' nor an existing file or directory",
        "empty.txt": r"has no text",
        "nofield.jsonl": r"line 1: needs a string or an object with a 'text' string",
        "late.jsonl": r"line 2: needs a string or an object with a 'text' string",
        "notjson.jsonl": r"line 1: not JSON",
        "latin1.txt": r"line 2: not UTF-8 text \(byte 0xe9 at column 4\)",
        "plain": r"is a directory but neither a Hugging Face dataset \(save_to_disk\) nor a folder of",
        "ints": r"column 'text' holds int values, not text",
    }
    readers = {
        "corpus": lambda p: load_corpus(p, model),
        "text": lambda p: resolve_text(model, str(p)),
        "evidence text": lambda p: evidence_texts(model, str(p)),
    }
    for name, message in cases.items():
        path = tmp_path / name
        for what, read in readers.items():
            with pytest.raises(SFCError, match=f"^{what} '{re.escape(str(path))}'") as err:
                read(path)
            assert "\n" not in str(err.value) and err.value.args[0].count(str(path)) == 1
            assert err.match(message)
        with pytest.raises(SFCError, match=message):
            list(documents(path, 10))
    with pytest.raises(SFCError, match=r"has no column 'content' \(columns: text, label\)"):
        load_corpus(sources / "saved", model, text_field="content")


def test_cli_refuses_a_bad_corpus_in_one_line(tmp_path, capsys):
    from sfc_plugin.cli import main

    (tmp_path / "dir").mkdir()
    for spec in (tmp_path / "missing.jsonl", tmp_path / "dir"):
        assert main(["dashboards", "--features", "embed/1", "--corpus", str(spec), "-q", "-o", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"sfc: error: corpus '{spec}' ") and "\n" not in err


def test_windows_by_hand():
    ids = [11, 12, 13, 14, 15, 16, 17]
    assert list(windows(ids, 3, bos=0)) == [(0, [0, 11, 12]), (2, [0, 13, 14]), (4, [0, 15, 16]), (6, [0, 17])]
    assert list(windows(ids, 3, bos=None)) == [(0, [11, 12, 13]), (3, [14, 15, 16]), (6, [17])]
    assert list(windows([], 4, bos=0)) == []


def test_fixed_windows_by_hand(model, tmp_path):
    """Documents tokenised without special tokens, cut into windows of ``context_size - 1`` tokens, BOS
    first, right-padded with <pad>; the mask marks the real tokens after BOS."""
    (tmp_path / "c.txt").write_text("the cat is big\ndogs like that\n")
    c = load_corpus(tmp_path / "c.txt", model, context_size=3)
    the, cat, is_, big, dogs, like, that = 3, 5, 13, 15, 8, 12, 10
    assert c.tokens.tolist() == [[0, the, cat], [0, is_, big], [0, dogs, like], [0, that, 1]]
    assert c.mask.tolist() == [[False, True, True]] * 3 + [[False, True, False]]
    assert (c.name, len(c), c.context_size, c.n_tokens) == (str(tmp_path / "c.txt"), 4, 3, 7)
    assert load_corpus(tmp_path / "c.txt", model, context_size=3, n_contexts=3).tokens.tolist() == c.tokens[:3].tolist()
    default = load_corpus(tmp_path / "c.txt", model)  # min(n_ctx = 16, 128) tokens per window
    assert default.tokens.tolist() == [[0, the, cat, is_, big] + [1] * 11, [0, dogs, like, that] + [1] * 12]


def test_whole_documents_by_hand(model):
    """Each document as the model tokenises it (BOS first), cut to n_ctx = 16 tokens, right-padded;
    every token but the leading BOS counts."""
    long = " ".join(["the cat"] * 10)  # 20 words
    t = load_text(["dogs like that", long], model)
    assert t.tokens.tolist() == [[0, 8, 12, 10] + [1] * 12, [0] + [3, 5] * 7 + [3]]
    assert t.mask.tolist() == [[False] + [True] * 3 + [False] * 12, [False] + [True] * 15]
    assert t.name == "(texts)"
    with pytest.raises(SFCError, match=r"text '\(texts\)' has no text"):
        load_text([], model)


def test_corpus_from_a_batch_counts_the_prompt_tokens_but_bos():
    batch = SimpleNamespace(clean=torch.tensor([[0, 5, 6], [0, 7, 1]]), valid=torch.tensor([[1, 1, 1], [1, 1, 0]]) > 0)
    c = Corpus.from_batch(batch, "b", bos=0)
    assert c.mask.tolist() == [[False, True, True], [False, True, False]] and c.n_tokens == 3


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().astype("<i8").tobytes()).hexdigest()[:16]


def test_toy_streams_are_the_texts_each_caller_always_read():
    """Pinned to the token ids the three loaders produced before they became one (toy tokenizer)."""
    from sfc_plugin import toy

    model = toy.load_model()
    dash = load_corpus(None, model)
    assert (dash.name, dash.tokens.shape, dash.n_tokens) == ("toy", (2048, 32), 2048 * 31)
    assert _sha(dash.tokens) == _sha(toy_rows(model, 2048, 32, "x").tokens) == "0e8feb05e4f4c670"
    assert dash.fingerprint()[:16] == "35b7ba4d0532a511"
    assert load_corpus("toy", model, seed=2).name == "toy:seed=2"
    assert _sha(toy_rows(model, 256, 32, "x", stream="eval").tokens) == "284517deb4816ab4"
    docs = [(d.text, d.categories) for d in toy_documents(100)]
    assert hashlib.sha256(repr(docs).encode()).hexdigest()[:16] == "b3fede39f7d63fda"
    assert [d.text for d in documents("toy", 3)] == [t for t, _ in docs[:3]]


def test_toy_needs_the_toy_tokenizer(model):
    with pytest.raises(SFCError, match="corpus 'toy' needs the toy tokenizer: word '.+' is not in"):
        load_corpus("toy", model)


def test_direct_logit_effect_by_hand():
    """d = (1, 2, 3): centred (LN) (-1, 0, 1), times ln_final.w (2, 1, 1) → (-2, 0, 1), through W_U,
    then centred over the vocabulary."""
    W_U = torch.tensor([[1.0, 0.0, 0.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, 1.0, 3.0, 0.0]])
    ln = SimpleNamespace(w=torch.tensor([2.0, 1.0, 1.0]))
    d = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    fake = lambda norm: SimpleNamespace(W_U=W_U, ln_final=ln, cfg=SimpleNamespace(normalization_type=norm))  # noqa: E731
    # LN: (-2, 0, 1) @ W_U = (-2, 1, 3, -4), mean -0.5; (-1/3, -1/3, 2/3) * w = (-2/3, -1/3, 2/3) @ W_U
    want = torch.tensor([[-1.5, 1.5, 3.5, -3.5], [-2 / 3 - 5 / 3, -5 / 3 + 2 / 3, -5 / 3 + 2, -4 / 3 - 5 / 3]])
    assert torch.allclose(direct_logit_effects(fake("LN"), d), want - want.mean(-1, keepdim=True))
    # RMS: no centring; (2, 2, 3) @ W_U = (12, 13, 19, 14), mean 14.5
    assert torch.allclose(direct_logit_effects(fake("RMS"), d[0]), torch.tensor([-2.5, -1.5, 4.5, -0.5]))
    # no final norm: d @ W_U = (11, 13, 19, 12), mean 13.75
    none = SimpleNamespace(W_U=W_U, cfg=SimpleNamespace(normalization_type=None))
    assert torch.allclose(direct_logit_effects(none, d[0]), torch.tensor([-2.75, -0.75, 5.25, -1.75]))


def test_centring_over_the_vocabulary_keeps_the_ranking(model):
    """Dashboards centre over the vocabulary, SHIFT's evidence used not to: the per-row constant changes no top-k."""
    torch.manual_seed(0)
    rows = torch.randn(50, model.cfg.d_model, dtype=torch.float64)
    got = direct_logit_effects(model, rows)
    d = rows - rows.mean(-1, keepdim=True)
    plain = (d * model.ln_final.w) @ model.W_U  # uncentred, as SHIFT's promoted tokens were
    assert torch.allclose(got, plain - plain.mean(-1, keepdim=True))
    assert torch.equal(got.topk(5).indices, plain.topk(5).indices)
