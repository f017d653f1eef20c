"""Log-probabilities of response tokens under the shared base with whichever adapter is active.

The LM head is applied to the response positions only (never full-vocabulary logits for every
prompt token), and the logits are those the model's own forward gives (Gemma 2's soft cap
included), so PPO's rollouts, DPO's pairs and "Did it work?" all score text the way generate()
samples it.
"""

from __future__ import annotations

from workbench.models import chat_format
from workbench.train import ops


def lm_logits(peft, states):
    """The LM head's logits of hidden `states` as the model's own forward gives them: Gemma 2
    soft-caps them (cap · tanh(logits / cap)) after the head, and generate() samples from those."""
    import torch

    model = peft.get_base_model()
    logits = model.get_output_embeddings()(states)
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def backbone(peft):
    """The transformer without its LM head (LlamaModel and the like)."""
    return peft.get_base_model().base_model


def split_conversation(tokenizer, messages: list[dict], reply: str, max_length: int) -> tuple[list[int], int]:
    """(token ids of the prompt and reply as one conversation, where the reply starts). The reply
    is what follows the prompt rendered ready for it (the longest common prefix of the two, so a
    template that renders the assistant's header differently once a reply follows still splits
    at the right place); its end-of-turn tokens belong to it, so a policy learns where to stop.
    Too long: the start of the prompt is cut, never the reply; a reply alone longer than
    `max_length` keeps its last max_length - 1 tokens after one token of context."""
    ids = chat_format.conversation_ids(tokenizer, messages, reply)
    prompt = chat_format.prompt_ids(tokenizer, messages)
    start = 0
    for a, b in zip(ids, prompt):
        if a != b:
            break
        start += 1
    start = max(1, start)  # the first reply token needs a position before it
    if len(ids) > max_length:
        cut = len(ids) - max_length
        ids, start = ids[cut:], max(1, start - cut)
    return ids, start


def response_logprobs(peft, input_ids, attention_mask, starts, temperature: float = 1.0):
    """(summed log-probs [rows], token counts [rows]) of each right-padded row's tokens from
    `starts[row]` to its end, under the active adapter. Gradients flow when enabled."""
    import torch

    hidden = backbone(peft)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    lengths = attention_mask.sum(1) - starts                       # reply tokens per row
    width = int(lengths.max())
    offsets = torch.arange(width, device=input_ids.device).unsqueeze(0)
    # The hidden state before each reply token predicts it.
    before = (starts.unsqueeze(1) - 1 + offsets).clamp(max=input_ids.shape[1] - 2)
    states = hidden.gather(1, before.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    tokens = input_ids.gather(1, before + 1)
    mask = (offsets < lengths.unsqueeze(1)).float()
    logprobs = ops.token_logprobs(lm_logits(peft, states), tokens, temperature=temperature)
    return (logprobs * mask).sum(1), lengths
