import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "tests"))
import gemma_memory as gm
import offline_hub as hub

layers, vocab = int(sys.argv[1]), int(sys.argv[2])
extra = sys.argv[3:]
work = Path("/tmp/sfc-gemma-memory")
md, specs = gm.build(work, layers, "16k", vocab)
print("built", flush=True)
env = {
    **hub.HubCache(work / f"hf-v{vocab}").env(),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    **{k: v for k, v in __import__("os").environ.items() if k in ("TRIM", "MALLOC_MMAP_THRESHOLD_")},
}
d = subprocess.run(
    [
        sys.executable,
        str(__import__("pathlib").Path(__file__).with_name("probe.py")),
        "--model-dir",
        str(md),
        "--specs",
        json.dumps(specs),
        "--layers",
        str(layers),
        *extra,
    ],
    env=env,
    capture_output=True,
    text=True,
)
if d.returncode:
    sys.exit(d.stderr[-3000:])
print(d.stdout.strip().splitlines()[-1])
