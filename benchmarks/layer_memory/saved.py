import collections
import sys

import torch

from sfc_plugin.hf_convert import load_hf_model_dir

torch.set_num_threads(1)
model = load_hf_model_dir(sys.argv[1])
for p in model.parameters():
    p.requires_grad_(False)
for B in (1, 8):
    seen = {}
    shapes = collections.Counter()

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen[key] = t.untyped_storage().nbytes()
            shapes[
                (
                    tuple(t.shape),
                    str(t.dtype),
                    any(t.untyped_storage().data_ptr() == p.untyped_storage().data_ptr() for p in model.parameters()),
                )
            ] += t.untyped_storage().nbytes()
        return t

    tokens = torch.randint(0, 1000, (B, 32))
    leaf = {}

    def cut(act, hook):
        l = act.detach().requires_grad_(True)
        leaf[hook.name] = l
        return l

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        res = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.hook_resid_pre", cut)], stop_at_layer=model.cfg.n_layers
        )
    tot = sum(seen.values())
    print("B", B, "saved MB (distinct storages)", round(tot / 1e6, 1))
    for k, v in shapes.most_common(12):
        print("   ", k, round(v / 1e6, 1), "MB")
