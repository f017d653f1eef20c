"""Generate K responses per prompt and save them as a batch to rank: the code behind the
ranking page's background queue and `workbench generate`.

All K responses of a prompt come from one batched `generate` call. Each pane may come from a
different model (the base, or any finished SFT adapter): peft runs a mixed batch, one adapter per
row, over the one base in memory. A batch is saved only once it is complete, so a stop or a
crash never leaves half-written responses to rank.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.errors import WorkbenchError
from workbench.models import chat_format
from workbench.models.generation import SamplingSettings, stream_batch
from workbench.models.loading import ModelSession
from workbench.project import Project
from workbench.train.loop import named_adapters

BASE = "base"
K_RANGE = (2, 6)


@dataclass(frozen=True)
class GenerationConfig:
    k: int = 4
    """Responses per prompt, generated together in one batched call (2 to 6)."""
    sources: tuple[str, ...] = ()
    """The model of each pane, in order: "base" or an adapter such as "sft-run-3". Shorter than
    K: repeated. Empty: every pane from the base model."""
    temperature: float = 0.8
    """Sampling temperature; higher gives more varied responses to choose between."""
    top_p: float = 0.95
    """Nucleus sampling: sample from the smallest set of tokens holding this much probability."""
    top_k: int = 50
    """Sample from at most this many most likely tokens."""
    max_new_tokens: int = 160
    """Longest response, in tokens."""
    repetition_penalty: float = 1.1
    """Above 1 discourages repeating the same words."""
    seed: int = -1
    """Random seed of a prompt's call (recorded with each response); -1 picks a new one each time."""

    def __post_init__(self) -> None:
        if not K_RANGE[0] <= self.k <= K_RANGE[1]:
            raise ValueError(f"k must be between {K_RANGE[0]} and {K_RANGE[1]}, not {self.k}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")

    def pane_sources(self) -> list[str]:
        chosen = list(self.sources) or [BASE]
        return [chosen[i % len(chosen)] for i in range(self.k)]


@dataclass(frozen=True)
class GenerationEvent:
    """Where generation is: prompt `index` of `total`, its K texts so far."""

    prompt_id: int
    index: int
    total: int
    batch_uid: str = ""             # the uid the batch is saved under (known from the start, so
    texts: tuple[str, ...] = ()     # the page can show the streaming responses in blind order)
    finished: tuple[bool, ...] = ()
    saved: bool = False             # the last event of a prompt: its batch is in the project
    message: str = ""
    sources: tuple[str, ...] = field(default=())
    tokens: tuple[int, ...] = ()    # tokens written so far, per response


def available_sources(project: Project) -> dict[str, Path | None]:
    """Models a pane can come from: the base, then finished SFT adapters and PPO, DPO and
    imported policies, newest first."""
    sources: dict[str, Path | None] = {BASE: None}
    for kind in ("sft", "ppo", "dpo", "policy"):
        sources.update(named_adapters(project, kind))
    return sources


def check_sources(project: Project, config: GenerationConfig) -> dict[str, Path | None]:
    """The project's sources, after checking that every pane's source is one of them."""
    known = available_sources(project)
    missing = sorted(set(config.pane_sources()) - set(known))
    if missing:
        raise WorkbenchError(f"No finished adapter named {', '.join(missing)} in this project; "
                             f"choose from: {', '.join(known)}.")
    return known


def generate_responses(project: Project, models: ModelSession, prompt_ids: Sequence[int],
                       config: GenerationConfig = GenerationConfig(),
                       should_stop: Callable[[], bool] = lambda: False) -> Iterator[GenerationEvent]:
    """For each prompt in turn: stream its K responses, then save them as one batch."""
    known = check_sources(project, config)
    sources = config.pane_sources()
    prompts, rankings = PromptStore(project), RankingStore(project)
    total = len(prompt_ids)
    for index, prompt_id in enumerate(prompt_ids):
        if should_stop():
            return
        try:
            messages = prompts.messages(prompt_id)
        except WorkbenchError:
            continue  # deleted while queued
        seed = config.seed if config.seed >= 0 else random.randrange(2**31)
        settings = SamplingSettings(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                                    max_new_tokens=config.max_new_tokens,
                                    repetition_penalty=config.repetition_penalty, seed=seed)
        last, batch_uid = None, uuid.uuid4().hex
        with models.hold("generating responses"):
            try:
                chat_format.prompt_ids(models.tokenizer, messages)
            except chat_format.TemplateRefused as error:
                raise WorkbenchError(f"Prompt {prompt_id}: {error}. Edit the prompt on the Rank page.") from error
            for name in set(sources) - {BASE}:
                models.load_adapter(name, known[name])
            model, adapter_names = _model_for(models, sources)
            model.eval()
            for update in stream_batch(model, models.tokenizer, messages, config.k, settings,
                                       adapter_names, should_stop):
                last = update
                yield GenerationEvent(prompt_id, index, total, batch_uid, update.texts, update.finished,
                                      sources=tuple(sources), tokens=update.tokens)
        if should_stop() or last is None or not last.done:
            return  # stopped mid-prompt: nothing half-made is saved
        generators = [dict(source=source, base_model=project.base_model.display_name
                           if project.base_model else "", row=row, finished=last.finished[row],
                           tokens=last.tokens[row], **asdict(settings))
                      for row, source in enumerate(sources)]
        try:
            rankings.add_batch(prompt_id, list(last.texts), generators, batch_uid)
        except WorkbenchError:
            continue  # the prompt was deleted while its responses were being made
        yield GenerationEvent(prompt_id, index, total, batch_uid, last.texts, last.finished, True,
                              f"Generated {config.k} responses for prompt {index + 1} of {total}.",
                              tuple(sources), last.tokens)


def _model_for(models: ModelSession, sources: list[str]):
    """The model to call and, with adapters in memory, which one each row uses."""
    if models.peft is None:
        return models.model, None
    return models.peft, ["__base__" if source == BASE else source for source in sources]
