"""Feature ablation edits usable on any TransformerLens / SAELens model, saved as JSON.

An edit zero-ablates chosen SAE features and keeps the error term: at each hook
``x ↦ decode(f with the chosen features zeroed) + ε = x − Σ_j f_j W_dec[j]``. Apply it temporarily
(``with edit.applied(model):``) or permanently (``edit.attach(model)`` / ``edit.detach(model)``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SFCError
from ..splicing import Submodule

SCHEMA = "sfc-edit/1"


@dataclass
class FeatureEdit:
    """``ablate[submodule] = feature indices``; ``neurons[submodule]`` zeroes activation dimensions."""

    submodules: dict[str, Submodule]
    ablate: dict[str, list[int]] = field(default_factory=dict)
    neurons: dict[str, list[int]] = field(default_factory=dict)
    _handles: list = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return sum(map(len, self.ablate.values())) + sum(map(len, self.neurons.values()))

    def hooks(self) -> list[tuple[str, callable]]:
        """TransformerLens forward hooks ``(hook_name, fn)`` that carry out the edit."""
        out = []
        for name in sorted(set(self.ablate) | set(self.neurons), key=list(self.submodules).index):
            sub = self.submodules[name]
            feats = torch.tensor(sorted(self.ablate.get(name, [])), dtype=torch.long, device=sub.W_dec.device)
            dims = torch.tensor(sorted(self.neurons.get(name, [])), dtype=torch.long, device=sub.W_dec.device)

            def fn(act, hook, sub=sub, feats=feats, dims=dims):
                x = sub.flat(act)
                if feats.numel():
                    x = x - sub.encode(x)[..., feats] @ sub.W_dec[feats]
                if dims.numel():
                    x = x.index_fill(-1, dims, 0.0)
                return sub.unflat(x)

            out.append((sub.hook, fn))
        return out

    @contextlib.contextmanager
    def applied(self, model):
        """The edit on ``model`` for the duration of a ``with`` block."""
        with model.hooks(fwd_hooks=self.hooks()):
            yield model

    def attach(self, model) -> None:
        """Add the edit as permanent hooks (they survive ``model.reset_hooks()``) until :meth:`detach`."""
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

    def to_dict(self) -> dict:
        feats = [{"id": f"{name}/{j}", "submodule": name, "hook": self.submodules[name].hook, "feature": j}
                 for name, js in self.ablate.items() for j in sorted(js)]
        neurons = [{"submodule": name, "hook": self.submodules[name].hook, "neuron": i}
                   for name, dims in self.neurons.items() for i in sorted(dims)]
        return {"schema": SCHEMA, "mode": "zero", "keep_error": True, "features": feats, "neurons": neurons,
                "hooks": sorted({self.submodules[n].hook for n in list(self.ablate) + list(self.neurons)})}

    def to_json(self, path: str | Path) -> None:
        from ..files import write_atomic

        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_json(cls, path: str | Path, submodules: dict[str, Submodule]) -> "FeatureEdit":
        """Re-create a saved edit on ``submodules`` (``{name: Submodule}``, e.g. from ``build_submodules``)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SFCError(f"edit file {str(path)!r} cannot be read ({exc})".splitlines()[0]) from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise SFCError(f"edit file {str(path)!r} is not an {SCHEMA} edit")
        edit = cls(submodules)
        for key, target, index in (("features", edit.ablate, "feature"), ("neurons", edit.neurons, "neuron")):
            for item in data.get(key, []):
                if item.get("submodule") not in submodules:
                    raise SFCError(f"edit file {str(path)!r} names submodule {item.get('submodule')!r} with no SAE given")
                target.setdefault(item["submodule"], []).append(int(item[index]))
        return edit
