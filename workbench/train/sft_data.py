"""Turn chat examples into training tensors: the model's chat template, loss on replies only.

The whole conversation is rendered once and tokenized once, with character offsets. Each
assistant message's span is found by rendering the conversation up to it (with the generation
prompt) and up to its end: both renderings are prefixes of the whole text for any sane
template, so the reply's tokens, and the end-of-turn token after it, are the only labelled ones.
Tokenizing the pieces separately instead would shift boundaries where tokens merge.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.models.chat_format import render

IGNORE = -100  # the label value that torch's cross-entropy skips



@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def trainable_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def reply_spans(tokenizer, messages: list[dict], text: str) -> list[tuple[int, int]]:
    """Character spans of `text` that the model should learn to produce: each non-empty reply
    and the end-of-turn text after it (so the model learns to stop)."""
    spans, searched_from = [], 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if not message["content"].strip():
            continue  # an empty turn would teach the model to answer with nothing
        through = render(tokenizer, messages[:index + 1])
        # Templates cannot render an empty conversation: a reply with nothing before it (a TRL
        # "text" row) starts where its content does.
        before = render(tokenizer, messages[:index], add_generation_prompt=True) if index else None
        start = len(before) if before is not None and text.startswith(before) else \
            text.find(message["content"], searched_from)
        if start >= 0 and text.startswith(through) and len(through) > start:
            spans.append((start, len(through)))
            searched_from = len(through)
            continue
        # An unusual template: the reply text itself, plus the end-of-sequence token after it.
        start = text.find(message["content"], searched_from)
        if start >= 0:
            end = start + len(message["content"])
            eos = getattr(tokenizer, "eos_token", None)
            if eos and text.startswith(eos, end):
                end += len(eos)
            spans.append((start, end))
            searched_from = end
    return spans


def tokenize_example(tokenizer, messages: list[dict], max_length: int | None = None) -> TokenizedExample:
    text = render(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    spans = reply_spans(tokenizer, messages, text)
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE
        for token, (begin, _) in zip(input_ids, offsets)
    ]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedExample(input_ids, labels)


def token_count(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"])


def collate(examples: list[TokenizedExample], pad_id: int):
    """Right-padded batch tensors: input_ids, attention_mask, labels."""
    import torch

    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def predicted_tokens(batch) -> int:
    """Tokens the loss is taken over: labelled ones after the causal shift (the first is never predicted)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
