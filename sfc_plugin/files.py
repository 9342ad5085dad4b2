"""Writing output files safely: one file atomically, or a set of files that lands together.

At the bottom of the data flow (imports only :mod:`sfc_plugin.errors`), so every stage can use it.

- :func:`write_atomic` writes one file through a temporary file in the target's directory: the data is
  fsynced before the rename, the temporary file is removed on every failure (interrupts included), an
  existing file keeps its permissions (new files get the usual ``0666 & ~umask``), a symlink is written
  through (its target is replaced, the link stays) and a device file or FIFO is written in place.
- :func:`write_set` writes several files into one directory so that an interrupted run leaves either the
  old set or the new one: every file is first written in full to a temporary name, then a journal naming
  the renames is written, then the renames run and the journal is removed. A journal left by a run killed
  during its renames is finished by the next :func:`write_set` or :func:`recover_set` on that directory.
  The directory's ``.sfc-manifest.json`` lists the files sfc wrote there (with their SHA-256), which is
  how a later command knows the directory is one it owns.
- :func:`check_output_dir` refuses a non-empty directory sfc does not own unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import SFCError

MANIFEST = ".sfc-manifest.json"
JOURNAL = ".sfc-pending.json"
_TMP_MARK = ".sfc-tmp-"


def _as_bytes(data: str | bytes) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"write_atomic needs str or bytes, got {type(data).__name__}")


def _oserror(exc: OSError, path: Path, what: str = "cannot write") -> SFCError:
    reason = exc.strerror or type(exc).__name__
    return SFCError(f"{what} {str(path)!r}: {reason}")


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: some filesystems and platforms cannot open directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def resolve_target(path: str | Path) -> Path:
    """The file a write to ``path`` must replace: symlinks followed; directories refused."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.is_dir():
        raise SFCError(f"output path {str(path)!r} is a directory, expected a file")
    return target


def _ensure_parent(target: Path, shown: Path) -> None:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SFCError(f"cannot write {str(shown)!r}: {str(parent)!r} is not a directory") from None
    except OSError as exc:
        raise _oserror(exc, parent, "cannot create directory") from None
    if not parent.is_dir():
        raise SFCError(f"cannot write {str(shown)!r}: {str(parent)!r} is not a directory")


@contextlib.contextmanager
def _removed_on_failure(tmp: str, shown: Path):
    """Remove ``tmp`` if the block fails (Ctrl-C included); OS errors become one-line :class:`SFCError`."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _oserror(exc, shown) from None
        raise


def _write_temp(target: Path, payload: bytes, shown: Path) -> str:
    """A fully written, fsynced temporary file next to ``target``; its permissions are the final ones."""
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}{_TMP_MARK}")
    except OSError as exc:
        raise _oserror(exc, shown) from None
    with _removed_on_failure(tmp, shown):
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = _default_mode()
        os.chmod(tmp, mode)
    return tmp


def _is_special(target: Path) -> bool:
    """A device file, FIFO or socket: written in place, never replaced."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (str as UTF-8, or bytes) to ``path`` so that a crash never leaves a half-written file.

    Returns ``path``. Bad paths (a directory, an unwritable place) raise a one-line :class:`SFCError`.
    """
    path = Path(path)
    payload = _as_bytes(data)
    target = resolve_target(path)
    if _is_special(target):
        try:
            with open(target, "wb") as fh:
                fh.write(payload)
        except OSError as exc:
            raise _oserror(exc, path) from None
        return path
    _ensure_parent(target, path)
    tmp = _write_temp(target, payload, path)
    with _removed_on_failure(tmp, path):
        os.replace(tmp, target)
    _fsync_dir(target.parent)
    return path


# ---- output sets ---------------------------------------------------------------------------------


def read_manifest(directory: str | Path) -> dict | None:
    """The directory's sfc manifest (``{"files": {name: sha256}}``), or None when there is none or it is unreadable."""
    try:
        data = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return None
    return data


def check_output_dir(directory: str | Path, names=(), overwrite: bool = False, option: str = "--overwrite") -> Path:
    """Refuse an output directory that is a file, or non-empty and not written by sfc (unless ``overwrite``).

    A directory is sfc's when it holds a ``.sfc-manifest.json``; files named in ``names`` that a previous
    sfc run wrote there may be replaced. Returns the directory as a Path.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise SFCError(f"output directory {str(directory)!r} is a file")
    if overwrite or not directory.exists():
        return directory
    try:
        entries = sorted(p.name for p in directory.iterdir())
    except OSError as exc:
        raise _oserror(exc, directory, "cannot read output directory") from None
    foreign = [e for e in entries if e not in (MANIFEST, JOURNAL) and _TMP_MARK not in e]
    if not foreign or read_manifest(directory) is not None:
        return directory
    what = f" ({', '.join(names)})" if names else ""
    raise SFCError(
        f"output directory {str(directory)!r} is not empty and was not written by sfc (it holds "
        f"{foreign[0]!r}); choose another directory or pass {option} to write{what} into it"
    )


def recover_set(directory: str | Path) -> bool:
    """Finish a :func:`write_set` that was killed during its renames; True when there was one to finish."""
    directory = Path(directory)
    journal = directory / JOURNAL
    try:
        pending = json.loads(journal.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        pending = None
    if isinstance(pending, dict) and isinstance(pending.get("renames"), list):
        for src, dst in pending["renames"]:
            # not done yet: every source was complete before the journal was written. A directory moves only
            # onto a free name (the old one was moved aside by an earlier step of the same journal).
            if os.path.isdir(src) and not os.path.islink(src):
                if not os.path.lexists(dst):
                    os.rename(src, dst)
            elif os.path.lexists(src):
                os.replace(src, dst)
        if isinstance(pending.get("manifest"), dict):
            write_atomic(directory / MANIFEST, json.dumps(pending["manifest"], indent=1, sort_keys=True) + "\n")
        for path in pending.get("remove") or []:
            shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        journal.unlink()
    _fsync_dir(directory)
    return True


def _remove_stale_temps(directory: Path) -> None:
    """Temporary files of earlier runs killed while writing (before their journal existed).

    Two sfc commands writing into one directory at the same moment are not supported.
    """
    with contextlib.suppress(OSError):
        for p in directory.iterdir():
            if p.name.startswith(".") and _TMP_MARK in p.name:
                with contextlib.suppress(OSError):
                    p.unlink()


def write_set(
    directory: str | Path, files: Mapping[str, str | bytes], overwrite: bool = False, option: str = "--overwrite"
) -> list[Path]:
    """Write ``{name: data}`` into ``directory`` as one set; returns the paths in the order given.

    Names are plain file names (no directories). Only these files (plus the manifest) are touched; other
    files in the directory stay. See the module docstring for the guarantees.
    """
    directory = Path(directory)
    for name in files:
        if not name or Path(name).name != name or name in (".", "..", MANIFEST, JOURNAL):
            raise ValueError(f"write_set: bad file name {name!r}")
    check_output_dir(directory, list(files), overwrite, option)
    _ensure_parent(directory / "x", directory)
    recover_set(directory)
    _remove_stale_temps(directory)
    payloads = {name: _as_bytes(data) for name, data in files.items()}
    targets = {name: resolve_target(directory / name) for name in files}
    manifest = read_manifest(directory) or {"files": {}}
    manifest = {"written_by": "sfc_plugin", "files": dict(manifest["files"])}
    for name, payload in payloads.items():
        manifest["files"][name] = hashlib.sha256(payload).hexdigest()
    temps: list[str] = []
    special: list[tuple[Path, bytes]] = []
    try:
        renames = []
        for name, payload in payloads.items():
            target = targets[name]
            if _is_special(target):
                special.append((target, payload))
                continue
            _ensure_parent(target, directory / name)
            temps.append(_write_temp(target, payload, directory / name))
            renames.append((temps[-1], str(target)))
        journal = json.dumps({"renames": renames, "manifest": manifest}, indent=1) + "\n"
        write_atomic(directory / JOURNAL, journal)
    except BaseException:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    # committed: from here on, recover_set can finish the job whatever happens
    recover_set(directory)
    for target, payload in special:
        write_atomic(target, payload)
    return [directory / name for name in files]


def staging_dir(directory: str | Path) -> Path:
    """A fresh, empty directory next to ``directory`` (same filesystem) to build a tree in before :func:`install_tree`."""
    directory = Path(directory)
    _ensure_parent(directory, directory)
    for old in directory.parent.glob(f".{directory.name}{_TMP_MARK}*"):  # left by a build that was killed
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}{_TMP_MARK}"))


def install_tree(
    stage: str | Path, directory: str | Path, overwrite: bool = False, option: str = "--overwrite"
) -> Path:
    """Move every entry of ``stage`` (files and directories) into ``directory`` as one set, then remove ``stage``.

    Entries that sfc wrote there before are replaced; an entry of the same name that sfc did not write is
    never removed: that is an error (even with ``overwrite``, which only allows writing next to other files).
    """
    stage, directory = Path(stage), Path(directory)
    names = sorted(p.name for p in stage.iterdir())
    check_output_dir(directory, names, overwrite, option)
    directory.mkdir(parents=True, exist_ok=True)
    recover_set(directory)
    owned = (read_manifest(directory) or {"files": {}})["files"]
    for name in names:
        if os.path.lexists(directory / name) and name not in owned:
            raise SFCError(
                f"{str(directory / name)!r} exists and was not written by sfc; move it away or choose "
                f"another directory (sfc never deletes what it did not write)"
            )
    trash = Path(tempfile.mkdtemp(dir=directory, prefix=f".old{_TMP_MARK}"))
    renames = [(str(directory / n), str(trash / n)) for n in names if os.path.lexists(directory / n)]
    renames += [(str(stage / n), str(directory / n)) for n in names]
    manifest = {"written_by": "sfc_plugin", "files": dict(owned)}
    manifest["files"].update({n: "directory" if (stage / n).is_dir() else "file" for n in names})
    write_atomic(
        directory / JOURNAL,
        json.dumps({"renames": renames, "manifest": manifest, "remove": [str(trash), str(stage)]}, indent=1) + "\n",
    )
    recover_set(directory)
    return directory


def strict_json(obj, *, refuse: str | None = None, **dumps_kwargs) -> str:
    """JSON text with no NaN/Infinity (strict JSON parsers reject them): non-finite floats become ``null``, or,
    with ``refuse`` (what is being written, e.g. ``"circuit"``), an :class:`SFCError` naming the first one's
    place (``circuit: nodes[3].effect is nan, not a finite number``). Every JSON file sfc writes goes through it."""
    import math

    def clean(v, where):
        if isinstance(v, float) and not math.isfinite(v):
            if refuse:
                raise SFCError(f"{refuse}: {where or 'the value'} is {v}, not a finite number")
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{where}[{i}]") for i, x in enumerate(v)]
        return v

    return json.dumps(clean(obj, ""), allow_nan=False, **dumps_kwargs)
