"""Model sources, loading, generation. The workbench never contacts a model hub."""

import os

# Set before transformers/huggingface_hub are imported anywhere in the process: offline always.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
