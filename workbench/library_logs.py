"""Where the libraries' warnings go: by default stderr (the command line shows them), or, once
the GUI calls `route_to(handler)`, the log file, so a window's start is not a wall of text.

Python's warnings (FutureWarning and the like) and the loggers of torch, bitsandbytes, peft,
accelerate and huggingface_hub are routed at once. transformers installs its own stderr handler
when it is first imported, so `after_transformers_import` (called by the model loader) swaps
that handler for ours; its progress bars are switched off with the hub's.
"""

from __future__ import annotations

import logging
import os

LIBRARIES = ("py.warnings", "torch", "bitsandbytes", "peft", "accelerate", "huggingface_hub", "datasets")
_handler: logging.Handler | None = None


def route_to(handler: logging.Handler) -> None:
    global _handler
    _handler = handler
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when huggingface_hub is imported
    logging.captureWarnings(True)
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False  # not also to the last-resort stderr handler


def after_transformers_import() -> None:
    if _handler is None:
        return
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.disable_progress_bar()
    logger = logging.getLogger("transformers")
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
    logger.propagate = False
