"""The plain items long-running core generators yield: no tensors, models or widgets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """One step of long work. `fraction` is None while the length of a stage is unknown."""

    message: str
    fraction: float | None = None
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TextChunk:
    """A piece of streamed generated text."""

    text: str
