"""Stream a chat reply from a loaded model, token by token, and stop when asked."""

from __future__ import annotations

import queue
import threading
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


def stream_chat(model, tokenizer, messages: list[dict], settings: SamplingSettings,
                should_stop: Callable[[], bool] = lambda: False) -> Iterator[TextChunk]:
    """Yield the reply as it is generated. `model.generate` runs in a helper thread."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    if model is None:
        raise WorkbenchError("No model is loaded. Load one on the Model page first.")
    input_ids = chat_input_ids(tokenizer, messages).to(model.device)

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return should_stop()

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=0.1)
    sampling = settings.temperature > 0
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=settings.max_new_tokens,
        do_sample=sampling,
        repetition_penalty=settings.repetition_penalty,
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([StopWhenAsked()]),
        pad_token_id=tokenizer.pad_token_id,
    )
    if sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as error:  # noqa: BLE001 - re-raised in the generator below
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=run, name="generate", daemon=True)
    thread.start()
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
    if failure:
        error = failure[0]
        if isinstance(error, torch.OutOfMemoryError):
            raise WorkbenchError("Out of memory while generating: lower max new tokens.") from error
        raise WorkbenchError(f"Generation failed: {error}") from error
