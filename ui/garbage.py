"""Keep Python's cycle collector from freezing the window once a model is in memory.

The app collects garbage in the GUI thread only (ui/app.py). A full collection walks every
tracked object: with a model, its tokenizer and the training machinery loaded, that took
50-150 ms in the GUI thread during a run. Objects alive after a model load or at the start of
a run are long-lived, so they are moved out of the collector's view with `gc.freeze()`.
"""

import gc


def freeze_long_lived_objects() -> None:
    gc.freeze()
