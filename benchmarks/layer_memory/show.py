import json
import sys

d = json.loads(open(sys.argv[1]).read().splitlines()[-2 if open(sys.argv[1]).read().strip().endswith("done") else -1])
print({k: v for k, v in d.items() if k != "log"})
base = d["loaded"]
for e in d["log"]:
    print(
        e.get("at"),
        *(
            f"{k}={(v - base if k in ('peak_since_last', 'rss', 'trimmed') else v):.3f}"
            if isinstance(v, float)
            else f"{k}={v}"
            for k, v in e.items()
            if k != "at"
        ),
    )
