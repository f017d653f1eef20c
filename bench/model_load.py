"""Time the demo model's load: the one-time GGUF conversion and later loads.

    .venv/bin/python bench/model_load.py [--fresh-cache]

Each figure is measured in a fresh child process, as a user starting the app would meet it:
'import' is the first import of torch+transformers, 'load' is ModelSession.load's own time
(tokenizer, weights, placement), 'first reply' is 32 greedy tokens through the chat template.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, time
t0 = time.monotonic()
import workbench.models
from transformers import AutoModelForCausalLM
t1 = time.monotonic()
from workbench.config import ModelSpec
from workbench.models.loading import ModelSession
from workbench.models.generation import SamplingSettings, stream_chat
session = ModelSession()
for _ in session.load(ModelSpec(kind="demo")):
    pass
t2 = time.monotonic()
text = "".join(c.text for c in stream_chat(session.model, session.tokenizer,
        [{"role": "user", "content": "My order hasn't arrived. What should I do?"}],
        SamplingSettings(temperature=0, max_new_tokens=32)))
t3 = time.monotonic()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "reply_s": t3 - t2,
                  "memory_mib": session.info.memory_bytes / 2**20}))
"""


def measure(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-cache", action="store_true", help="convert again in an empty cache first")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.fresh_cache:
        env["WORKBENCH_CACHE"] = tempfile.mkdtemp(prefix="wb-bench-")
    runs = [("first (converts if needed)", measure(env))] + [(f"later #{i}", measure(env)) for i in (1, 2)]
    print(f"{'run':28} {'import s':>9} {'load s':>8} {'reply s':>8} {'memory MiB':>11}")
    for name, r in runs:
        print(f"{name:28} {r['import_s']:9.2f} {r['load_s']:8.2f} {r['reply_s']:8.2f} {r['memory_mib']:11.0f}")


if __name__ == "__main__":
    main()
