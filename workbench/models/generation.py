"""Stream a chat reply from a loaded model, token by token, and stop when asked."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.errors import WorkbenchError
from workbench.models import chat_format
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
    """Token ids of `messages` in the one prompt format, ready for the assistant's reply (1 x n)."""
    import torch

    return torch.tensor([chat_format.prompt_ids(tokenizer, messages)], dtype=torch.long)


# What a checkpoint's generation_config.json may set that changes which tokens are sampled. Each
# is pinned to its neutral value by `sampling_config`, so none is inherited from the model.
NEUTRAL_SAMPLING = dict(
    num_beams=1, num_beam_groups=1, penalty_alpha=None, min_length=0, typical_p=1.0,
    epsilon_cutoff=0.0, eta_cutoff=0.0, min_p=None, top_h=None, no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0, encoder_repetition_penalty=1.0, bad_words_ids=None, force_words_ids=None,
    renormalize_logits=False, forced_bos_token_id=None, forced_eos_token_id=None, remove_invalid_values=False,
    exponential_decay_length_penalty=None, suppress_tokens=None, begin_suppress_tokens=None, sequence_bias=None,
    token_healing=False, guidance_scale=None, watermarking_config=None, length_penalty=1.0, diversity_penalty=0.0,
    dola_layers=None, low_memory=None, stop_strings=None, max_length=None, max_time=None,
)


@functools.cache
def neutral_fields() -> dict:
    """NEUTRAL_SAMPLING less the fields this transformers version does not have."""
    from transformers import GenerationConfig

    known = GenerationConfig()
    return {key: value for key, value in NEUTRAL_SAMPLING.items() if hasattr(known, key)}


def sampling_config(settings: SamplingSettings, stop_ids: set[int], pad_token_id: int):
    """The complete GenerationConfig of one call, from our settings alone.

    transformers fills every field a call leaves unset from the model's generation_config.json
    (Qwen2.5-Instruct's repetition_penalty 1.05, top_k 20 elsewhere, min_p, no_repeat_ngram_size),
    so each field that shapes the distribution is set here. `ModelSession.load` also strips
    the model's own defaults to its token ids, for the fields whose neutral value is None."""
    from transformers import GenerationConfig

    sampling = settings.temperature > 0
    return GenerationConfig(
        **neutral_fields(), max_new_tokens=settings.max_new_tokens, do_sample=sampling,
        temperature=settings.temperature if sampling else 1.0, top_p=settings.top_p if sampling else 1.0,
        # Greedy decoding applies no warper; these are transformers' own defaults, which it does
        # not flag as "set but unused" as it would any other value.
        top_k=settings.top_k if sampling else 50, repetition_penalty=settings.repetition_penalty,
        eos_token_id=sorted(stop_ids), pad_token_id=pad_token_id, use_cache=True,
        num_return_sequences=1, output_scores=False, return_dict_in_generate=False)


def strip_generation_defaults(model) -> dict:
    """Replace the model's generation_config with one holding only its token ids, so no call can
    inherit its sampling defaults; returns the sampling values it shipped (for the Model page)."""
    from transformers import GenerationConfig

    shipped = model.generation_config
    defaults = GenerationConfig._get_default_generation_params()
    suggested = {key: value for key, value in shipped.to_diff_dict().items()
                 if key in defaults or key in NEUTRAL_SAMPLING or key == "max_new_tokens"}
    suggested = {key: value for key, value in suggested.items()
                 if value is not None and value != defaults.get(key, NEUTRAL_SAMPLING.get(key))}
    model.generation_config = GenerationConfig(
        **{key: getattr(shipped, key, None) for key in
           ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")})
    return suggested


def generate_kwargs(input_ids, settings: SamplingSettings, streamer, should_stop: Callable[[], bool],
                    stop_ids: set[int], pad_token_id: int) -> dict:
    """`model.generate` arguments for sampling settings, with a stop the caller can trigger."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return should_stop()

    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                generation_config=sampling_config(settings, stop_ids, pad_token_id),
                stopping_criteria=StoppingCriteriaList([StopWhenAsked()]))


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
    stop_ids = stop_token_ids(model, tokenizer)
    kwargs = generate_kwargs(input_ids, settings, streamer, should_stop, stop_ids, pad_token_id(tokenizer, stop_ids))
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


def stop_token_ids(model, tokenizer) -> set[int]:
    """Tokens that end a reply: the model's EOS ids, the tokenizer's, and the end-of-turn token
    its chat template writes after a reply."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return ids | chat_format.end_of_turn_ids(tokenizer)


def pad_token_id(tokenizer, stop_ids: set[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids, default=0)


def stream_batch(model, tokenizer, messages: list[dict], rows: int, settings: SamplingSettings,
                 adapter_names: list[str] | None = None,
                 should_stop: Callable[[], bool] = lambda: False, interval_s: float = 0.05) -> Iterator[BatchText]:
    """Generate `rows` replies to one conversation in a single batched call, yielding all of
    them every `interval_s` while they grow. `adapter_names` (one per row, "__base__" for the
    plain base) lets each row come from another LoRA adapter of a peft model in the same call."""
    if model is None:
        raise WorkbenchError("No model is loaded. Load one on the Model page first.")
    input_ids = chat_input_ids(tokenizer, messages).to(model.device).repeat(rows, 1)
    stop_ids = stop_token_ids(model, tokenizer)
    streamer = _BatchStreamer(rows, stop_ids)
    kwargs = generate_kwargs(input_ids, settings, streamer, should_stop, stop_ids, pad_token_id(tokenizer, stop_ids))
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
