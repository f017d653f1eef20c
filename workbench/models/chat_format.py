"""The one prompt format: how a conversation becomes this model's text, on every path.

SFT, reward-model training and scoring, response generation, Try-it, PPO, "Did it work?" and
the exports all render through `render`, so a prompt is the same string wherever it is used
(the model learns on exactly the text it is later asked with, and an exported reward model
reads what ours read). The model's own chat template is used when it has one, with three
rules for the quirks real templates carry:

- a fixed `date_string`: Llama 3.x templates print "Today Date: ..." from the clock
  (`strftime_now`) unless one is given, so a prompt rendered on another day would differ;
- a template that refuses a system turn (Gemma 2's "System role not supported") gets the
  system text folded into the first user turn, what Gemma's own later templates do;
- any other refusal (Mistral's strict user/assistant alternation, say) becomes a
  `TemplateRefused` naming the template's reason; callers add which example it was.

Models without a template (GPT-2-style base models) get `PLAIN_TEMPLATE`: "User:"/"Assistant:"
turns, each reply ending with the tokenizer's own end-of-sequence token, so generation stops
where SFT taught the model to stop (a ChatML fallback would end replies on `<|im_end|>`, which
such a vocabulary lacks: the model would spell it out and never stop).
"""

from __future__ import annotations

from workbench.errors import WorkbenchError

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n\n"
    "{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
# Llama 3.1's own default when no date is given: any fixed date would do, this one is theirs.
FIXED_DATE = "26 Jul 2024"


class TemplateRefused(WorkbenchError):
    """The model's chat template refuses a conversation (its `raise_exception` fired)."""


def template_of(tokenizer) -> str:
    """The template this model's conversations are rendered with."""
    return getattr(tokenizer, "chat_template", None) or PLAIN_TEMPLATE


def _apply(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template_of(tokenizer),
                                             add_generation_prompt=add_generation_prompt,
                                             date_string=FIXED_DATE)
    except TemplateError as error:
        reason = str(error).rstrip(". ")  # callers go on with a sentence of their own
        raise TemplateRefused(f"the model's chat template refuses this conversation: {reason}") from error


def fold_system(messages: list[dict]) -> list[dict]:
    """The conversation with its system turns put in front of the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{system}\n\n{message['content']}" if system else message["content"]
            return rest
    return [{"role": "user", "content": system}, *rest] if system else rest


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """`messages` as this model's text; with `add_generation_prompt`, ready for the reply."""
    if not messages and not add_generation_prompt:
        return ""  # templates cannot render an empty conversation: nothing comes before a "text" row
    try:
        return _apply(tokenizer, messages, add_generation_prompt)
    except TemplateRefused:
        if not any(m["role"] == "system" for m in messages):
            raise
        return _apply(tokenizer, fold_system(messages), add_generation_prompt)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` ready for the assistant's reply. Special tokens come from the
    template's text (a template writes its own BOS), never added a second time."""
    return tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def conversation_ids(tokenizer, messages: list[dict], reply: str) -> list[int]:
    """Token ids of the prompt and its reply as one conversation (what a reward model reads)."""
    text = render(tokenizer, [*messages, {"role": "assistant", "content": reply}])
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer) -> set[int]:
    """Tokens that end a reply: the tokenizer's EOS, and the special token the template writes
    right after a reply (Llama 3's <|eot_id|>, ChatML's <|im_end|>, Gemma's <end_of_turn>,
    Phi-3's <|end|>), which is often not the tokenizer's EOS."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    marker = "Xq7Zr"  # a reply no template changes, to find what the template writes after it
    try:
        text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}])
    except TemplateRefused:
        return ids
    after = text[text.rfind(marker) + len(marker):]
    following = tokenizer(after, add_special_tokens=False)["input_ids"][:1] if after else []
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return ids | {token for token in following if token in special}


def portable_template(tokenizer) -> str:
    """The template to save with an exported model, so other tools render exactly our text:
    the plain template where the model has none, and the fixed date set up front (a template
    asking `date_string is not defined` then finds ours instead of today's)."""
    return ("{%- if date_string is not defined %}{%- set date_string = '" + FIXED_DATE + "' %}{%- endif %}"
            + template_of(tokenizer))


def describe(tokenizer) -> str:
    """Which prompt format is used, in a phrase for the Model page."""
    if not getattr(tokenizer, "chat_template", None):
        eos = tokenizer.eos_token or "no end token"
        return f"none in the model: plain 'User:/Assistant:' turns, replies ending with {eos}"
    system = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        _apply(tokenizer, system, True)
    except TemplateRefused:
        return "the model's chat template (it has no system role: system text goes into the first user turn)"
    return "the model's chat template"
