"""RLHF Workbench core: plain Python, torch and Hugging Face libraries. Never imports Qt.

Kept import-free so that `python3 -m workbench.bootstrap` runs before any dependency exists.
"""

__version__ = "0.1.0"
