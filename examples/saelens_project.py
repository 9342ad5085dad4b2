"""Adding circuit discovery to an existing SAELens project.

You already have a TransformerLens model in memory and SAEs that SAELens saved to directories
(``sae.save_model(dir)`` during or after training). Here both come from the toy world shipped with
sfc_plugin; swap in your own model and SAE directories.

    python examples/saelens_project.py [OUT_DIR]
"""

import sys
from pathlib import Path

from sae_lens import SAE

import sfc_plugin
from sfc_plugin import toy

out = Path(sys.argv[1] if len(sys.argv) > 1 else "sfc-out/example")

model, _ = toy.load()  # your HookedTransformer / HookedSAETransformer, already in memory
sae_dirs = sorted(p for p in (toy.ARTIFACTS / "saes").iterdir() if (p / "cfg.json").is_file())
saes = [SAE.load_from_disk(str(d)) for d in sae_dirs]  # hooks come from each SAE's cfg.metadata.hook_name

pairs = sfc_plugin.load_dataset("toy/sva-rc", split="test")[:20]  # or your own JSON-lines file of pairs
circuit = sfc_plugin.discover(model, saes, pairs, method="ig", node_threshold=0.1, edge_threshold=0.01)

print(circuit.summary())
circuit.to_json(out / "circuit.json")
(out / "circuit.dot").write_text(circuit.to_dot())
print(f"wrote {out / 'circuit.json'}")
