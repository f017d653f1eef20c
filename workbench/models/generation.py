"""Stream a chat reply from a loaded model, token by token, and stop when asked."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.errors import WorkbenchError
from workbench.progress import TextChunk


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.7
    """0 means greedy decoding."""
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 256
    repetition_penalty: float = 1.1
    seed: int | None = None


def chat_input_ids(tokenizer, messages: list[dict]):
    """Token ids of `messages` after the chat template, ready for the assistant's reply."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
        return encoded["input_ids"]
    # No template: plain concatenation, which base models continue reasonably.
    text = "\n\n".join(m["content"] for m in messages) + "\n\n"
    return tokenizer(text, return_tensors="pt")["input_ids"]


def generate_kwargs(input_ids, settings: SamplingSettings, streamer, should_stop: Callable[[], bool],
                    pad_token_id) -> dict:
    """`model.generate` arguments for sampling settings, with a stop the caller can trigger."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return should_stop()

    sampling = settings.temperature > 0
    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                  max_new_tokens=settings.max_new_tokens, do_sample=sampling,
                  repetition_penalty=settings.repetition_penalty, streamer=streamer,
                  stopping_criteria=StoppingCriteriaList([StopWhenAsked()]), pad_token_id=pad_token_id)
    if sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    return kwargs


def start_generate(model, kwargs: dict, seed: int | None,
                   end_stream: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    """Run `model.generate(**kwargs)` in a helper thread; an error lands in the returned list.
    The stream is ended however generate returns, so its reader never waits for more tokens."""
    import torch

    failure: list[BaseException] = []

    def run() -> None:
        try:
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised by the reader via raise_failure
            failure.append(error)
        finally:
            end_stream()

    thread = threading.Thread(target=run, name="generate", daemon=True)
    thread.start()
    return thread, failure


def raise_failure(failure: list[BaseException], advice: str) -> None:
    if failure:
        import torch

        error = failure[0]
        if isinstance(error, torch.OutOfMemoryError):
            raise WorkbenchError(f"Out of memory while generating: {advice}.") from error
        raise WorkbenchError(f"Generation failed: {error}") from error


def stream_chat(model, tokenizer, messages: list[dict], settings: SamplingSettings,
                should_stop: Callable[[], bool] = lambda: False) -> Iterator[TextChunk]:
    """Yield the reply as it is generated. `model.generate` runs in a helper thread."""
    from transformers import TextIteratorStreamer

    if model is None:
        raise WorkbenchError("No model is loaded. Load one on the Model page first.")
    input_ids = chat_input_ids(tokenizer, messages).to(model.device)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=0.1)
    kwargs = generate_kwargs(input_ids, settings, streamer, should_stop, tokenizer.pad_token_id)
    thread, failure = start_generate(model, kwargs, settings.seed, streamer.end)
    while True:
        try:
            text = next(streamer)
        except StopIteration:
            break
        except queue.Empty:
            if thread.is_alive():
                continue
            break
        if text:
            yield TextChunk(text)
    thread.join()
    raise_failure(failure, "lower max new tokens")


@dataclass(frozen=True)
class BatchText:
    """The K replies of a batched call so far; `finished[i]` once reply i is complete."""

    texts: tuple[str, ...]
    finished: tuple[bool, ...]
    tokens: tuple[int, ...]
    done: bool = False  # the call has returned: every reply is as long as it will get


class _BatchStreamer:
    """Collects each row's new tokens as `generate` produces them (transformers' own streamers
    take one row only). A row is finished at its first end-of-sequence token; what `generate`
    appends after that is padding."""

    def __init__(self, rows: int, eos_ids: set[int]):
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.finished = [False] * rows
        self.eos_ids = eos_ids
        self.changed = threading.Event()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.tokens), -1)[:, -1].tolist()):
            if self.finished[row]:
                continue
            if token in self.eos_ids:
                self.finished[row] = True
            else:
                self.tokens[row].append(token)
        self.changed.set()

    def end(self) -> None:
        self.changed.set()


def eos_token_ids(model, tokenizer) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def stream_batch(model, tokenizer, messages: list[dict], rows: int, settings: SamplingSettings,
                 adapter_names: list[str] | None = None,
                 should_stop: Callable[[], bool] = lambda: False, interval_s: float = 0.05) -> Iterator[BatchText]:
    """Generate `rows` replies to one conversation in a single batched call, yielding all of
    them every `interval_s` while they grow. `adapter_names` (one per row, "__base__" for the
    plain base) lets each row come from another LoRA adapter of a peft model in the same call."""
    if model is None:
        raise WorkbenchError("No model is loaded. Load one on the Model page first.")
    input_ids = chat_input_ids(tokenizer, messages).to(model.device).repeat(rows, 1)
    streamer = _BatchStreamer(rows, eos_token_ids(model, tokenizer))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(streamer.eos_ids), 0)
    kwargs = generate_kwargs(input_ids, settings, streamer, should_stop, pad)
    if adapter_names is not None:
        kwargs["adapter_names"] = list(adapter_names)

    def snapshot(done: bool = False) -> BatchText:
        tokens = [list(t) for t in streamer.tokens]
        return BatchText(tuple(tokenizer.decode(t, skip_special_tokens=True) for t in tokens),
                         tuple(streamer.finished), tuple(len(t) for t in tokens), done)

    thread, failure = start_generate(model, kwargs, settings.seed, streamer.end)
    while thread.is_alive():
        if streamer.changed.wait(interval_s):
            streamer.changed.clear()
            yield snapshot()
            time.sleep(interval_s)  # coalesce tokens: one update per interval, not per token
    thread.join()
    raise_failure(failure, "lower K or max new tokens")
    yield snapshot(done=True)
