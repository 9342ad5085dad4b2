"""Feature ablation edits usable on any TransformerLens / SAELens model, saved as JSON.

An edit zero-ablates chosen SAE features and keeps the error term: at each hook
``x ↦ decode(f with the chosen features zeroed) + ε = x − Σ_j f_j W_dec[j]``. Apply it temporarily
(``with edit.applied(model):``) or permanently (``edit.attach(model)`` / ``edit.detach(model)``).

An edit made by :func:`~sfc_plugin.shift` carries the provenance of its run (model and SAE specs, dataset,
fingerprints); :meth:`FeatureEdit.from_json` refuses SAEs whose fingerprints differ from the recorded ones for
the submodules it edits, and the model is checked the same way when given there or on first
:meth:`~FeatureEdit.applied` / :meth:`~FeatureEdit.attach` (``force=True`` overrides; ``provenance_check`` says
what happened). Files without provenance load unchecked.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SFCError
from ..splicing import Submodule, node_hooks, read_hooks
from .encoding import encode_some

SCHEMA = "sfc-edit/1"


@dataclass
class FeatureEdit:
    """``ablate[submodule] = feature indices``; ``neurons[submodule]`` zeroes activation dimensions."""

    submodules: dict[str, Submodule]
    ablate: dict[str, list[int]] = field(default_factory=dict)
    neurons: dict[str, list[int]] = field(default_factory=dict)
    provenance: dict | None = None
    provenance_check: dict | None = None
    _handles: list = field(default_factory=list, repr=False)
    _force: bool = field(default=False, repr=False)
    _model_checked: bool = field(default=True, repr=False)
    _flags: object = field(default=None, repr=False)  # the read-hook flags held on while attached

    def __len__(self) -> int:
        return sum(map(len, self.ablate.values())) + sum(map(len, self.neurons.values()))

    def hooks(self) -> list[tuple[str, callable]]:
        """TransformerLens forward hooks ``(hook_name, fn)`` that carry out the edit (run them inside
        :meth:`read_hooks`: a transcoder's features are read at its input hook)."""
        plan = {}
        for name in sorted(set(self.ablate) | set(self.neurons), key=list(self.submodules).index):
            sub = self.submodules[name]
            feats = torch.tensor(sorted(self.ablate.get(name, [])), dtype=torch.long, device=sub.W_dec.device)
            dims = torch.tensor(sorted(self.neurons.get(name, [])), dtype=torch.long, device=sub.W_dec.device)
            plan[name] = (sub, feats, dims)

        def fn(sub, read, x):
            _, feats, dims = plan[sub.name]
            if feats.numel():  # only the ablated features are encoded (where the kind allows: encode_some)
                x = x - encode_some(sub, read, feats) @ sub.W_dec[feats]
            if dims.numel():
                x = x.index_fill(-1, dims, 0.0)
            return x

        return node_hooks([sub for sub, _, _ in plan.values()], fn)

    def check_model(self, model) -> None:
        """Refuse a model other than the recorded one (once per loaded edit; nothing recorded: nothing checked)."""
        if self._model_checked or not isinstance((self.provenance or {}).get("model_fingerprint"), dict):
            return
        from ..fingerprints import check

        found = check(
            {"model_fingerprint": self.provenance["model_fingerprint"]},
            model,
            {},
            self._force,
            "force=True (--force)",
            what="edit",
            made="made",
        )
        self._model_checked = True
        if found["status"] == "forced":
            prev = self.provenance_check or {}
            self.provenance_check = {"status": "forced", "mismatches": found["mismatches"] + prev.get("mismatches", [])}

    @contextlib.contextmanager
    def applied(self, model):
        """The edit on ``model`` for the duration of a ``with`` block."""
        self.check_model(model)
        with self.read_hooks(model), model.hooks(fwd_hooks=self.hooks()):
            yield model

    def attach(self, model) -> None:
        """Add the edit as permanent hooks (they survive ``model.reset_hooks()``) until :meth:`detach`."""
        self.check_model(model)
        if self._flags is None:  # the read hooks' flags stay on until detach
            self._flags = self.read_hooks(model)
            self._flags.__enter__()
        for name, fn in self.hooks():
            point = model.hook_dict[name]
            model.add_hook(name, fn, is_permanent=True)
            self._handles.append((point, point.fwd_hooks[-1]))

    def detach(self, model) -> None:
        """Remove the hooks added by :meth:`attach` (and nothing else)."""
        for point, handle in self._handles:
            handle.hook.remove()
            point.fwd_hooks.remove(handle)
        self._handles.clear()
        if self._flags is not None:
            self._flags.__exit__(None, None, None)
            self._flags = None

    def _edited(self) -> list[Submodule]:
        return [self.submodules[n] for n in set(self.ablate) | set(self.neurons)]

    def read_hooks(self, model):
        """A context in which :meth:`hooks` work: the model's flags for the hooks the edited transcoders read
        (``use_hook_mlp_in``) switched on, and restored on exit (:meth:`applied` and :meth:`attach` do it)."""
        return read_hooks(model, self._edited())

    def to_dict(self) -> dict:
        feats = [
            {"id": f"{name}/{j}", "submodule": name, "hook": self.submodules[name].hook, "feature": j}
            for name, js in self.ablate.items()
            for j in sorted(js)
        ]
        neurons = [
            {"submodule": name, "hook": self.submodules[name].hook, "neuron": i}
            for name, dims in self.neurons.items()
            for i in sorted(dims)
        ]
        out = {
            "schema": SCHEMA,
            "mode": "zero",
            "keep_error": True,
            "features": feats,
            "neurons": neurons,
            "hooks": sorted({self.submodules[n].hook for n in list(self.ablate) + list(self.neurons)}),
        }
        if self.provenance is not None:
            out["provenance"] = self.provenance
        return out

    def to_json(self, path: str | Path) -> None:
        from ..files import strict_json, write_atomic

        write_atomic(path, strict_json(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_json(
        cls, path: str | Path, submodules: dict[str, Submodule], *, model=None, force: bool = False
    ) -> FeatureEdit:
        """Re-create a saved edit on ``submodules`` (``{name: Submodule}``, e.g. from ``build_submodules``).

        The SAEs of the edited submodules must have the fingerprints recorded in the file (and ``model``, when
        given here or on first use, the recorded model's), else :class:`SFCError` unless ``force``."""
        data = read_edit(path)
        prov = data.get("provenance")
        edit = cls(submodules, provenance=prov, _force=force)
        for key, target, index in (("features", edit.ablate, "feature"), ("neurons", edit.neurons, "neuron")):
            items = data.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise SFCError(f"edit file {str(path)!r}: {key!r} must be a list of objects")
            for item in items:
                if item.get("submodule") not in submodules:
                    raise SFCError(
                        f"edit file {str(path)!r} names submodule {item.get('submodule')!r} with no SAE given"
                    )
                j = item.get(index)
                if not isinstance(j, int) or isinstance(j, bool) or j < 0:
                    raise SFCError(f"edit file {str(path)!r}: {index} {j!r} of {item['submodule']!r} is not an index")
                target.setdefault(item["submodule"], []).append(j)
        edit._check_saes(force)
        if model is not None:
            edit.check_model(model)
        return edit

    def _check_saes(self, force: bool) -> None:
        """Refuse SAEs other than the recorded ones at the hooks whose features this edit ablates."""
        from ..fingerprints import check

        if self.provenance is None:
            self.provenance_check = {"status": "unchecked (the edit records no provenance)"}
            return
        used = {self.submodules[n].key: self.submodules[n].sae for n in self.ablate}  # neurons need no SAE
        self.provenance_check = check(
            {"saes": self.provenance.get("saes")},
            None,
            used,
            force,
            "force=True (--force)",
            hooks=set(used),
            what="edit",
            made="made",
        )
        self._model_checked = not isinstance(self.provenance.get("model_fingerprint"), dict)
        if self.provenance_check["status"].startswith("unchecked") and not self._model_checked:
            self.provenance_check = {"status": "match"}  # only the model is recorded: checked on first use


def read_edit(path: str | Path) -> dict:
    """The JSON of an ``sfc-edit/1`` file, its top level checked (one-line :class:`SFCError` otherwise)."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SFCError(f"edit file {str(path)!r} cannot be read ({exc})".splitlines()[0]) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise SFCError(f"edit file {str(path)!r} is not an {SCHEMA} edit")
    prov = data.get("provenance")
    if prov is not None and not isinstance(prov, dict):
        raise SFCError(f"edit file {str(path)!r}: 'provenance' must be an object, got {type(prov).__name__}")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")
