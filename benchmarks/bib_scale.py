"""An offline hub replica for SHIFT at scale: Pythia-70M-deduped at its true shape with the 19 true-width
``pythia-70m-sfc`` SAEs (random weights) and ``LabHC/bias_in_bios`` with synthetic biographies of a chosen length.

    .venv/bin/python benchmarks/bib_scale.py /tmp/bib-scale [--words 199]
    HF_HOME=/tmp/bib-scale/hf HF_HUB_OFFLINE=1 /usr/bin/time -v nice -n 10 \\
        sfc shift --preset pythia-70m-sfc --data bias_in_bios --max-memory 4GB --method atp --compare-judge none -o OUT

The default counts give 1,000 ambiguous training biographies, a balanced val of 200 (from the train split) and
1,000 test biographies (800 in the balanced cut); ``--words 199`` makes each 200 tokens with BOS (the test
tokenizer is word-level). Results of the run are on docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import offline_hub as hub  # noqa: E402

COUNTS = {  # (profession label, gender) -> rows; 21 professor, 13 nurse
    "train": {(21, 0): 520, (13, 1): 500, (21, 1): 100, (13, 0): 50},
    "dev": {(21, 0): 5, (21, 1): 5, (13, 0): 5, (13, 1): 5},
    "test": {(21, 0): 350, (21, 1): 250, (13, 0): 200, (13, 1): 200},
}


def main() -> None:
    from sfc_plugin.hf_convert import load_hf_model_dir
    from sfc_plugin.presets import get_preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--words", type=int, default=199, help="words per biography (tokens = words + 1)")
    args = parser.parse_args()
    cache, stage = hub.HubCache(args.root / "hf"), args.root / "stage"
    pythia = hub.hf_model_dir(stage / "pythia", hub.PYTHIA_70M_CONFIG, appended_words=hub.BIB_WORDS)
    tl = load_hf_model_dir(pythia)
    tokens = tl.to_tokens([r["clean_prefix"] for r in hub.sva_records()], prepend_bos=False)
    scales = hub.hook_scales(tl, tokens, [h for _, h in get_preset("pythia-70m-sfc").saes])
    del tl
    cache.put_dir("EleutherAI/pythia-70m-deduped", pythia)
    hub.pythia_sae_releases(cache, stage / "saes", scales)
    rows = hub.bias_in_bios_replica(cache, stage / "bias_in_bios", counts=COUNTS, n_words=args.words)
    shutil.rmtree(stage)
    print({split: len(r) for split, r in rows.items()}, f"-> HF_HOME={args.root / 'hf'}")


if __name__ == "__main__":
    main()
