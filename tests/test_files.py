"""Safe output writing: atomic files through symlinks, output sets that land together, owned directories."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from sfc_plugin import files
from sfc_plugin.errors import SFCError
from sfc_plugin.files import MANIFEST, check_output_dir, recover_set, write_atomic, write_set


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if files._TMP_MARK in p.name or p.name == files.JOURNAL)


def test_write_atomic_is_reexported_from_circuit():
    from sfc_plugin.circuit import write_atomic as again

    assert again is write_atomic


def test_write_atomic_writes_text_and_bytes_with_usual_permissions(tmp_path):
    write_atomic(tmp_path / "a" / "b.txt", "héllo\n")
    assert (tmp_path / "a" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a" / "b.txt").stat().st_mode) == 0o666 & ~umask
    write_atomic(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"


def test_write_atomic_keeps_existing_permissions(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("old")
    f.chmod(0o640)
    write_atomic(f, "new")
    assert f.read_text() == "new" and stat.S_IMODE(f.stat().st_mode) == 0o640


def test_write_atomic_writes_through_a_symlink(tmp_path):
    real = tmp_path / "elsewhere" / "real.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


def test_write_atomic_writes_into_a_device_file_without_replacing_it(tmp_path):
    """A character device made here (never the system's /dev/null: a broken write_atomic run as root would replace
    it); where device nodes cannot be made, the FIFO test below covers the same path."""
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # the null device's numbers
        with open(dev, "wb") as fh:
            fh.write(b"")
    except (OSError, AttributeError) as exc:
        pytest.skip(f"cannot make a usable device node here ({exc})")
    before = os.stat(dev)
    write_atomic(dev, "discarded")
    after = os.stat(dev)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev and after.st_ino == before.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # written in place: no temporary file


def test_write_atomic_writes_into_a_fifo_without_replacing_it(tmp_path):
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, "through the pipe")
    reader.join(timeout=60)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_write_atomic_refuses_a_directory_and_a_file_as_parent(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(SFCError, match=r"output path '.*/d' is a directory, expected a file"):
        write_atomic(tmp_path / "d", "x")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(SFCError, match=r"cannot write .*plain/x.json"):
        write_atomic(tmp_path / "plain" / "x.json", "x")


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_write_atomic_cleans_up_on_failure(tmp_path, monkeypatch, exc):
    f = tmp_path / "f.txt"
    f.write_text("old")

    def boom(*_a, **_k):
        raise exc

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises((KeyboardInterrupt, SFCError)):
        write_atomic(f, "new")
    assert f.read_text() == "old" and leftovers(tmp_path) == []


def test_write_atomic_cleans_up_when_fsync_fails(tmp_path, monkeypatch):
    def boom(_fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files.os, "fsync", boom)
    with pytest.raises(SFCError, match="Input/output error"):
        write_atomic(tmp_path / "f.txt", "new")
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_syncs_the_file_and_then_its_directory(tmp_path, monkeypatch):
    """Durability (what no crash-free test can see otherwise): the data is fsynced before the rename and the
    directory after it, so the new name survives a power loss."""
    synced = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    target = write_atomic(tmp_path / "f.txt", "new")
    assert synced == [("file", target.stat().st_ino), ("dir", tmp_path.stat().st_ino)]


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '"files"', '{"files": 3}', '{"files": ["a"]}', "{}", "not json"],
    ids=["list", "string", "files-number", "files-list", "empty", "not-json"],
)
def test_a_manifest_that_is_not_an_object_with_a_files_object_is_none(tmp_path, text):
    (tmp_path / MANIFEST).write_text(text)
    assert files.read_manifest(tmp_path) is None
    (tmp_path / MANIFEST).write_text('{"files": {"a.json": "file"}}')
    assert files.read_manifest(tmp_path) == {"files": {"a.json": "file"}}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_write_atomic_unwritable_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SFCError, match="Permission denied"):
            write_atomic(ro / "f.txt", "x")
    finally:
        ro.chmod(0o700)


def test_write_set_writes_all_files_and_a_manifest(tmp_path):
    out = tmp_path / "out"
    paths = write_set(out, {"a.json": "{}\n", "b.dot": "digraph {}\n"})
    assert paths == [out / "a.json", out / "b.dot"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["a.json", "b.dot"]
    assert leftovers(out) == []
    write_set(out, {"c.csv": "x\n"})  # a second command adds to the same owned directory
    assert sorted(json.loads((out / MANIFEST).read_text())["files"]) == ["a.json", "b.dot", "c.csv"]


def test_write_set_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        SFCError, match=r"is not empty and was not written by sfc \(it holds 'notes.txt'\).*--overwrite"
    ):
        write_set(tmp_path, {"circuit.json": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    write_set(tmp_path, {"circuit.json": "{}"}, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the named files are written
    (tmp_path / "f").write_text("x")
    with pytest.raises(SFCError, match="is a file"):
        check_output_dir(tmp_path / "f")


def test_write_set_failure_while_staging_keeps_the_old_set(tmp_path, monkeypatch):
    write_set(tmp_path, {"a": "old a", "b": "old b"})
    real = files._write_temp
    calls = []

    def second_fails(target, payload, shown):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(target, payload, shown)

    monkeypatch.setattr(files, "_write_temp", second_fails)
    with pytest.raises(KeyboardInterrupt):
        write_set(tmp_path, {"a": "new a", "b": "new b"})
    assert (tmp_path / "a").read_text() == "old a" and (tmp_path / "b").read_text() == "old b"
    assert leftovers(tmp_path) == []


KILLER = textwrap.dedent("""
    import os, signal, sys
    from sfc_plugin import files
    stage, after = sys.argv[2], int(sys.argv[3])
    calls = []
    if stage == "rename":
        real = os.replace
        def replace(a, b):
            if not str(b).endswith(files.JOURNAL) and not os.path.basename(a).startswith(files.JOURNAL):
                calls.append(b)
                if len(calls) > after:
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
        files.os.replace = replace
    else:
        real = files._write_temp
        def write_temp(target, payload, shown):
            calls.append(target)
            if len(calls) > after:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(target, payload, shown)
        files._write_temp = write_temp
    files.write_set(sys.argv[1], {"circuit.json": "new json", "circuit.dot": "new dot", "circuit.svg": "new svg"})
""")


@pytest.mark.parametrize("stage,after", [("stage", 1), ("stage", 2), ("rename", 1), ("rename", 2)])
def test_kill_between_files_leaves_the_old_set_or_the_new_one(tmp_path, stage, after):
    out = tmp_path / "out"
    old = {"circuit.json": "old json", "circuit.dot": "old dot", "circuit.svg": "old svg"}
    write_set(out, old)
    done = subprocess.run([sys.executable, "-c", KILLER, str(out), stage, str(after)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    recover_set(out)  # what the next write (or a reader) does first
    got = {name: (out / name).read_text() for name in old}
    assert got in (old, {k: v.replace("old", "new") for k, v in old.items()})
    if stage == "rename":  # the journal was committed: the new set wins
        assert got["circuit.json"] == "new json"
    write_set(out, {"circuit.json": "x"})
    assert leftovers(out) == []
