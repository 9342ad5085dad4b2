"""Annotation records (sfc-annotations/1): add, review, merge, the label provider and what figures show."""

from __future__ import annotations

import json

import pytest

from sfc_plugin import annotations as A
from sfc_plugin.circuit import Circuit, Edge, Node
from sfc_plugin.cli import main
from sfc_plugin.errors import SFCError
from sfc_plugin.export import apply_labels

FP1, FP2, OTHER = "1" * 64, "2" * 64, "f" * 64


def _circuit() -> Circuit:
    nodes = [
        Node("y", None, None, None, "metric", None, None, 1.0),
        Node("resid_1/2", "resid_1", "blocks.1.hook_resid_post", 1, "feature", 2, None, 0.8),
        Node("mlp_1/7", "mlp_1", "blocks.1.hook_mlp_out", 1, "feature", 7, None, -0.4),
        Node("resid_1/err", "resid_1", "blocks.1.hook_resid_post", 1, "error", None, None, 0.1),
    ]
    edges = [Edge("mlp_1/7", "resid_1/2", 0.3), Edge("resid_1/2", "y", 0.8), Edge("resid_1/err", "y", 0.1)]
    prov = {
        "saes": [
            {"submodule": "resid_1", "hook": "blocks.1.hook_resid_post", "fingerprint": {"sha256": FP1}},
            {"submodule": "mlp_1", "hook": "blocks.1.hook_mlp_out", "fingerprint": {"sha256": FP2}},
        ]
    }
    return Circuit(nodes, edges, 1.0, "logit_diff", "ig", 10, "sum", 0.01, 0.005, prov)


def test_records_are_checked_with_one_line_errors():
    rec = A.make_record("resid_1/0002@3", FP1, "plural subject", "alice", created="2025-01-02T10:00:00Z")
    assert rec["feature"] == "resid_1/2" and rec["status"] == "proposed" and rec["reviewer"] is None
    assert list(rec) == list(A.records.FIELDS)
    for bad, match in [
        ({"feature": "resid_1"}, "feature 'resid_1'"),
        ({"sae_fingerprint": "abc"}, "64 lowercase hex"),
        ({"label": "  "}, "'label' must be a non-empty string"),
        ({"status": "maybe"}, "status 'maybe'"),
        ({"status": "accepted"}, "names its reviewer"),
        ({"created": "yesterday"}, "ISO 8601"),
        ({"evidence": "context:3"}, "list of strings"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"schema": "sfc-annotations/2"}, "schema"),
        ({"decision": "maybe"}, "decision 'maybe'"),
    ]:
        with pytest.raises(SFCError, match=match) as e:
            A.check_record({**rec, **bad})
        assert "\n" not in str(e.value)


def test_history_review_and_latest(tmp_path):
    path = tmp_path / "team.jsonl"
    A.append_annotations(path, [A.make_record("resid_1/2", FP1, "plural subject", "alice")])
    records = A.read_annotations(path)
    with pytest.raises(SFCError, match="needs a second person"):
        A.review_record(records, "resid_1/2", "accepted", "alice")
    with pytest.raises(SFCError, match="no annotation of 'mlp_1/7'"):
        A.review_record(records, "mlp_1/7", "accepted", "bob")
    A.append_annotations(path, [A.review_record(records, "resid_1/2", "accepted", "bob", note="top contexts agree")])
    records = A.read_annotations(path)
    assert [r["status"] for r in records] == ["proposed", "accepted"]  # history kept: a review appends
    cur = A.latest(records)["resid_1/2"]
    assert (cur["label"], cur["author"], cur["reviewer"], cur["note"]) == (
        "plural subject",
        "alice",
        "bob",
        "top contexts agree",
    )
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(SFCError, match="line 3: not JSON"):
        A.read_annotations(path)


def test_merge_unites_histories_and_reports_conflicts():
    p = A.make_record("resid_1/2", FP1, "plural subject", "alice", created="2025-01-01T00:00:00Z")
    acc = A.review_record([p], "resid_1/2", "accepted", "bob", created="2025-01-02T00:00:00Z")
    other = A.make_record("mlp_1/7", FP2, "verb", "carol", created="2025-01-03T00:00:00Z")
    merged, conflicts = A.merge([("team", [p, acc]), ("viewer", [p, other])])
    assert conflicts == [] and merged == [p, acc, other]  # p seen once; the review supersedes the proposal
    assert A.latest(merged)["resid_1/2"]["status"] == "accepted"

    rival = A.make_record("resid_1/2", FP1, "singular object", "dave", created="2025-01-04T00:00:00Z")
    merged, conflicts = A.merge([("team", [p, acc]), ("dave", [p, rival])])
    assert merged == [] and [c.feature for c in conflicts] == ["resid_1/2"]
    line = conflicts[0].line()
    assert "'plural subject' (accepted, alice, reviewer bob; team)" in line and "'singular object'" in line

    merged, _ = A.merge([("team", [p, acc]), ("dave", [p, rival])], prefer="dave", merger="erin")
    head = A.latest(merged)["resid_1/2"]
    assert (
        head["label"] == "singular object" and "chose this label from dave" in head["note"] and "erin" in head["note"]
    )

    rejected = A.review_record([rival], "resid_1/2", "rejected", "bob", created="2025-01-05T00:00:00Z")
    merged, conflicts = A.merge([("team", [p, acc]), ("dave", [p, rival, rejected])])
    assert conflicts == [] and A.latest(merged)["resid_1/2"] == acc  # a rejected label does not conflict
    refused = A.review_record([p], "resid_1/2", "rejected", "dave", note="fires on objects too")
    merged, conflicts = A.merge([("team", [p, acc]), ("dave", [p, refused])])  # reviewers disagree
    assert merged == [] and "(accepted, alice, reviewer bob; team)" in conflicts[0].line()
    assert "(rejected, alice, reviewer dave; dave)" in conflicts[0].line()
    with pytest.raises(SFCError, match="--prefer 'nobody' is not one of the inputs"):
        A.merge([("team", [p])], prefer="nobody")


def test_label_provider_shows_accepted_and_refuses_another_sae(tmp_path):
    circuit, path = _circuit(), tmp_path / "a.jsonl"
    p1 = A.make_record("resid_1/2", FP1, "plural subject", "alice")
    p2 = A.make_record("mlp_1/7", FP2, "verb form", "carol")
    A.append_annotations(path, [p1, p2, A.review_record([p1], "resid_1/2", "accepted", "bob")])
    out = apply_labels(circuit, "annotations", path=str(path))
    labels = {n.id: n.label for n in out.nodes}
    assert labels["resid_1/2"] == "plural subject" and labels["mlp_1/7"] is None  # proposed: hidden by default
    info = out.provenance["node_info"]["resid_1/2"]
    assert (info["status"], info["author"], info["reviewer"], info["source"]) == (
        "accepted",
        "alice",
        "bob",
        "annotations",
    )
    assert out.provenance["labels"]["provider"] == "annotations"
    shown = apply_labels(circuit, "annotations", path=str(path), status="accepted,proposed")
    assert {n.id: n.label for n in shown.nodes}["mlp_1/7"] == "verb form"
    assert shown.provenance["node_info"]["mlp_1/7"]["status"] == "proposed"
    dot = shown.to_dot()
    assert "✓ alice" in dot and "? carol" in dot  # figures show status and author
    with pytest.raises(SFCError, match="status='maybe'"):
        apply_labels(circuit, "annotations", path=str(path), status="maybe")

    wrong = tmp_path / "wrong.jsonl"
    A.append_annotations(wrong, [A.make_record("resid_1/2", OTHER, "plural subject", "alice")])
    with pytest.raises(SFCError) as e:
        apply_labels(circuit, "annotations", path=str(wrong), status="all")
    assert "annotated on another SAE (fingerprint ffffffffffff" in str(e.value) and "\n" not in str(e.value)
    forced = apply_labels(circuit, "annotations", path=str(wrong), status="all", force=True)
    assert forced.provenance["labels"]["forced"] == ["resid_1/2"]
    assert "another SAE" in forced.provenance["node_info"]["resid_1/2"]["forced"]
    assert "⚠SAE" in forced.to_dot()


def test_the_papers_annotation_format_still_works(tmp_path):
    path = tmp_path / "paper.jsonl"
    path.write_text(json.dumps({"Name": "resid_1/2", "Annotation": "plural"}) + "\n")
    out = apply_labels(_circuit(), "annotations", path=str(path))
    assert {n.id: n.label for n in out.nodes}["resid_1/2"] == "plural"


def test_cli_round_trip_add_review_merge_export(tmp_path, capsys, monkeypatch):
    """add → review → a second file (a viewer download) → merge → --labels → the figure shows status and author."""
    monkeypatch.delenv("SFC_AUTHOR", raising=False)
    cpath, team, dl = tmp_path / "c.json", tmp_path / "team.jsonl", tmp_path / "dl.jsonl"
    _circuit().to_json(cpath)
    base = ["annotate", "add", str(team)]
    assert main(base + ["resid_1/2", "plural subject", "--author", "alice", "--circuit", str(cpath)]) == 0
    assert (
        main(base + ["mlp_1/7", "verb", "--author", "carol", "--circuit", str(cpath), "--evidence", "context:4"]) == 0
    )
    assert main(["annotate", "review", str(team), "resid_1/2", "--accept", "--reviewer", "alice"]) == 2
    assert "needs a second person" in capsys.readouterr().err
    assert main(["annotate", "review", str(team), "resid_1/2", "--accept", "--reviewer", "bob", "--note", "ok"]) == 0
    assert main(base + ["resid_1/9", "x", "--author", "a"]) == 2  # which SAE?
    assert "--circuit" in capsys.readouterr().err
    assert main(base + ["attn_0/1", "x", "--author", "a", "--circuit", str(cpath)]) == 2
    assert "records no SAE for submodule 'attn_0'" in capsys.readouterr().err

    dl.write_text(team.read_text())  # someone else's copy: they review carol's label
    monkeypatch.setenv("SFC_AUTHOR", "dave")
    assert main(["annotate", "review", str(dl), "mlp_1/7", "--reject", "--note", "fires on nouns too"]) == 0
    merged = tmp_path / "merged.jsonl"
    assert main(["annotate", "merge", str(team), str(dl), "-o", str(merged)]) == 0
    records = A.read_annotations(merged)
    assert len(records) == 4 and A.latest(records)["mlp_1/7"]["reviewer"] == "dave"
    capsys.readouterr()
    assert main(["annotate", "list", str(merged)]) == 0
    listing = capsys.readouterr().out
    assert (
        "✓ resid_1/2" in listing
        and "✗ mlp_1/7" in listing
        and "2 features: 1 accepted, 0 proposed, 1 rejected" in listing
    )
    assert main(["annotate", "list", str(merged), "--history", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4

    fig = tmp_path / "fig.dot"
    assert main(["export", str(cpath), "--format", "dot", "--labels", str(merged), "-o", str(fig)]) == 0
    dot = fig.read_text()
    assert "plural subject" in dot and "✓ alice" in dot and "verb" not in dot.split("legend")[0].replace("ε", "")

    rival = tmp_path / "rival.jsonl"
    A.append_annotations(rival, [A.make_record("resid_1/2", FP1, "singular", "erin")])
    assert main(["annotate", "merge", str(team), str(rival), "-o", str(tmp_path / "m2.jsonl")]) == 1
    out = capsys.readouterr().out
    assert "conflict: resid_1/2: 'plural subject'" in out and "'singular'" in out and "nothing written" in out
    assert not (tmp_path / "m2.jsonl").exists()

    wrong = tmp_path / "wrong.jsonl"
    A.append_annotations(wrong, [A.make_record("resid_1/2", OTHER, "x", "alice", status="accepted", reviewer="b")])
    assert main(["export", str(cpath), "--format", "dot", "--labels", str(wrong), "-o", str(fig)]) == 2
    err = capsys.readouterr().err.strip()
    assert "another SAE" in err and "--force" in err and len(err.splitlines()) == 1
    assert main(["export", str(cpath), "--format", "dot", "--labels", str(wrong), "--force", "-o", str(fig)]) == 0


def test_shift_file_judge_reads_accepted_annotations_and_records_who_decided(tmp_path, capsys):
    """SHIFT's ``file`` judge with an annotations file: accepted records with ``decision: ablate`` are ablated,
    a proposed one is not, and shift.json names the annotation (author, status) that decided each feature."""
    from sfc_plugin.shifting.judges import read_decisions
    from sfc_plugin.world import World

    fps = A.sae_fingerprints(World.load().provenance())
    path = tmp_path / "shift.jsonl"
    a = A.make_record("resid_2/179", fps["resid_2"], "profession: nurse", "alice", decision="ablate")
    b = A.make_record("resid_2/162", fps["resid_2"], "gendered pronoun", "carol", decision="ablate")
    A.write_annotations(path, [a, b, A.review_record([a], "resid_2/179", "accepted", "bob", note="gender, not job")])
    assert read_decisions(path) == {"resid_2/179": "ablate"}  # only the accepted decision
    args = ["shift", "--judge", "file", "--decisions", str(path), "--n-train", "64", "--n-eval", "64", "--steps", "2"]
    args += ["--top-k", "200", "--compare-judge", "none", "--no-side-effects", "-q", "-o", str(tmp_path / "shift")]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "shift" / "shift.json").read_text())
    features = {f["id"]: f for f in report["features"]}
    assert (
        {i for i, f in features.items() if f["decision"] == "ablate"}
        == {"resid_2/179"}
        == {f["id"] for f in json.loads((tmp_path / "shift" / "edit.json").read_text())["features"]}
    )
    decided = features["resid_2/179"]
    assert decided["judge"] == f"annotations:{path}"
    assert "'profession: nurse' by alice, accepted by bob" in decided["note"]
    if "resid_2/162" in features:
        assert features["resid_2/162"]["decision"] == "keep" and "proposed" in features["resid_2/162"]["note"]
    assert all(f["judge"].startswith("annotations:") for f in features.values())

    wrong = tmp_path / "wrong.jsonl"
    A.write_annotations(
        wrong, [A.make_record("resid_2/179", OTHER, "x", "alice", status="accepted", reviewer="bob", decision="ablate")]
    )
    args[args.index(str(path))] = str(wrong)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "annotated on another SAE" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "{f}", "resid_1", "x", "--author", "a", "--sae-fingerprint", FP1], "feature 'resid_1' is not"),
        (["add", "{f}", "resid_1/2", "x", "--author", "a", "--sae-fingerprint", "abc"], "64 lowercase hex"),
        (["add", "{f}", "resid_1/2", " ", "--author", "a", "--sae-fingerprint", FP1], "'label' must be a non-empty"),
        (["review", "{missing}", "resid_1/2", "--accept", "--reviewer", "b"], "does not exist"),
        (["review", "{f}", "resid_1/2", "--reviewer", "b"], "give --accept or --reject"),
        (["review", "{f}", "mlp_1/7", "--reject", "--reviewer", "b"], "no annotation of 'mlp_1/7'"),
        (["list", "{f}", "--status", "maybe"], "status='maybe'"),
        (["merge", "{f}", "{f}", "-o", "{f}", "--prefer", "other.jsonl"], "--prefer 'other.jsonl' is not one of"),
        (["list", "{bad}"], "line 1: not JSON"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    f, bad = tmp_path / "a.jsonl", tmp_path / "bad.jsonl"
    A.write_annotations(f, [A.make_record("resid_1/2", FP1, "plural subject", "alice")])
    bad.write_text("{oops\n")
    names = {"{f}": str(f), "{missing}": str(tmp_path / "none.jsonl"), "{bad}": str(bad)}
    before = f.read_text()
    assert main(["annotate", *[names.get(a, a) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert f.read_text() == before  # nothing written
