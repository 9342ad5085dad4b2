"""Checks for input at the edges: options, data files, devices, tensors.

At the bottom of the data flow (imports only :mod:`sfc_plugin.errors`; torch is imported inside the
functions that need it). Every check raises :class:`SFCError` with one line naming the bad value and
where it came from (an option, a file and line, an SAE path), before any expensive work.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from .errors import SFCError


def finite_number(value: Any, name: str) -> float:
    """``value`` as a float; refuses non-numbers, booleans, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SFCError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise SFCError(f"{name} must be a finite number, got {value!r}")
    return out


def threshold(value: Any, name: str) -> float:
    """A finite, non-negative threshold."""
    out = finite_number(value, name)
    if out < 0:
        raise SFCError(f"{name} must be non-negative, got {value!r}")
    return out


def integer(value: Any, name: str, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int (None passes when ``optional``); refuses floats, booleans and values below ``minimum``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise SFCError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SFCError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def device(value: Any, name: str = "device"):
    """A torch device that exists on this machine (checked before anything is moved to it)."""
    import torch

    if value is None:
        return None
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise SFCError(f"{name} {value!r} is not a torch device") from None
    kind = dev.type
    if kind == "cpu" or kind == "meta":
        return dev
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SFCError(f"{name} {value!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SFCError(f"{name} {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return dev
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise SFCError(f"{name} {value!r}: MPS is not available on this machine")
        return dev
    backend = getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    if callable(available) and available():
        return dev
    raise SFCError(f"{name} {value!r} is not available on this machine")


def finite_tensor(tensor, where: str) -> None:
    """Refuse a tensor holding NaN or an infinity (``where`` names it: an SAE path and weight name)."""
    import torch

    if tensor.is_floating_point() or tensor.is_complex():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            first = bad.nonzero()[0].tolist()
            raise SFCError(
                f"{where} holds {int(bad.sum())} non-finite value(s) (first at index {first}: "
                f"{tensor[tuple(first)].item()})"
            )


def read_text_lines(path: str | Path, what: str = "file"):
    """``(lineno, line)`` pairs of a UTF-8 text file; a missing file or bad bytes raise a one-line SFCError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SFCError(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise SFCError(f"{what} {str(path)!r} is a directory") from None
    except OSError as exc:
        raise SFCError(f"cannot read {what} {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        try:
            yield lineno, line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SFCError(
                f"{path}:{lineno}: not UTF-8 text (byte {line[exc.start]:#04x} at column {exc.start + 1})"
            ) from None


def safe_url(value: Any) -> str | None:
    """``value`` when it is an http(s) URL, else None (links from data never get another scheme)."""
    if not isinstance(value, str):
        return None
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return value.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def strict_json_loads(text: str, where: str, one_line: bool = False):
    """JSON without NaN/Infinity (Python's json module accepts them by default); bad JSON is one line naming ``where``.

    ``one_line``: ``where`` is ``file:line`` of one JSON-lines record.
    """
    import json

    def refuse(const):
        raise SFCError(f"{where}: {const} is not valid JSON (numbers must be finite)")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        if one_line:
            raise SFCError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        raise SFCError(f"{where} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise SFCError(f"{where} is nested too deeply") from None


def safetensors_file(path: str | Path, what: str) -> None:
    """Refuse a safetensors file that is truncated or has a corrupt header (cheap: reads the header only)."""
    import json
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            raw = fh.read(n) if n is not None and n <= min(size - 8, 100_000_000) else None
    except FileNotFoundError:
        raise SFCError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SFCError(f"cannot read {what} {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    if n is None:
        raise SFCError(f"{what} {str(path)!r} is truncated ({size} bytes)")
    if raw is None:
        raise SFCError(f"{what} {str(path)!r} is corrupt or truncated (header of {n} bytes in a {size}-byte file)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        raise SFCError(f"{what} {str(path)!r} has a corrupt header") from None
    if not isinstance(header, dict):
        raise SFCError(f"{what} {str(path)!r} has a corrupt header")
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if any(not isinstance(e, int) for e in ends) or (ends and max(ends) > size - 8 - n):
        raise SFCError(
            f"{what} {str(path)!r} is truncated (its header names {max(ends)} bytes of data, "
            f"the file holds {size - 8 - n})"
        )


def json_file(path: str | Path, what: str):
    """A JSON file's content; a missing, non-UTF-8 or invalid file is one line naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SFCError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise SFCError(f"cannot read {what} {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SFCError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})"
        ) from None
    return strict_json_loads(text, f"{what} {str(path)!r}")


def sae_weights(sae, where: str) -> None:
    """Refuse an SAE whose parameters hold NaN or an infinity."""
    for name, tensor in sorted(sae.state_dict().items()):
        finite_tensor(tensor, f"{where}: {name}")


def _simple_type(hint):
    """``(type, optional)`` for hints bool/int/float/str and their Optional forms, else None."""
    import types
    import typing

    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0], True) if len(rest) == 1 and rest[0] in (bool, int, float, str) else None
    return (hint, False) if hint in (bool, int, float, str) else None


def config_fields(cfg, where: str) -> None:
    """Refuse config fields whose value does not have the type the dataclass declares (bool/int/float/str)."""
    import dataclasses
    import typing

    if not dataclasses.is_dataclass(cfg):
        return
    try:
        hints = typing.get_type_hints(type(cfg))
    except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check against
        return
    for f in dataclasses.fields(cfg):
        simple = _simple_type(hints.get(f.name))
        value = getattr(cfg, f.name, None)
        if simple is None:
            if dataclasses.is_dataclass(value):
                config_fields(value, where)
            continue
        kind, optional = simple
        if value is None and optional:
            continue
        ok = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if kind is float
            else isinstance(value, str)
        )
        if not ok:
            raise SFCError(
                f"{where}: {f.name!r} must be {'a' if kind is not int else 'an'} {kind.__name__}"
                f"{' or null' if optional else ''}, got {value!r}"[:300]
            )


def sae_works(sae, where: str) -> None:
    """Config types, weight shapes and one encode/decode of a zero input: a bad SAE fails here, not mid-run."""
    import torch

    config_fields(sae.cfg, where)
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    if d_in < 1 or d_sae < 1:
        raise SFCError(f"{where}: d_in and d_sae must be positive, got {d_in} and {d_sae}")
    d_out = getattr(sae.cfg, "d_out", None) or d_in  # a transcoder's output width
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_out)}
    for name, shape in shapes.items():
        w = getattr(sae, name, None)
        if w is not None and tuple(w.shape) != shape:
            raise SFCError(f"{where}: {name} has shape {tuple(w.shape)}, its config says {shape}")
    sequence = sae.cfg.architecture() == "temporal"  # its encoder reads a whole sequence [batch, pos, d_in]
    try:
        with torch.no_grad():
            x = torch.zeros((1, 1, d_in) if sequence else (1, d_in), dtype=sae.W_dec.dtype, device=sae.W_dec.device)
            out = sae.decode(sae.encode(x))
            out = out[0] if sequence else out
    except Exception as exc:  # noqa: BLE001 - whatever a bad config makes SAELens do
        raise SFCError(f"{where} fails on a test input ({type(exc).__name__}: {exc})".splitlines()[0][:300]) from None
    if tuple(out.shape) != (1, d_out) or not bool(torch.isfinite(out).all()):
        raise SFCError(f"{where} gives a non-finite or misshapen output on a test input")
