"""Tiny random models of each family practitioners bring, with that family's real quirks.

Each builder writes a 2-layer model of the family's architecture, a tokenizer trained here with
the family's special tokens, a chat template and a generation_config.json that reproduce what
the real checkpoints ship (the comment on each quirk says where it comes from), and returns the
ModelSpec a user would give. Between them they cover the layouts users meet: plain folders, a
sharded checkpoint with an index (Mistral), tied embeddings (Qwen2.5, Gemma 2, GPT-2), GPT-2's
Conv1D layers with no template, and the Hugging Face hub-cache layout (Gemma 2).

The templates are written here to behave like the families' own (same special tokens, same
rules and refusals); they are not copies of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.config import ModelSpec
from workbench.models.tiny import CORPUS, make_tokenizer

SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512)
# Words the templates write, so the tiny vocabulary holds them as a few tokens each.
FAMILY_CORPUS = CORPUS + ["User: Assistant: system user model assistant Cutting Knowledge Date: December 2023 "
                          "Today Date: 26 Jul 2024 You are Qwen, created by Alibaba Cloud. You are a helpful "
                          "assistant. [INST] [/INST]"]

# Llama 3.1/3.2: a system header with "Cutting Knowledge Date" and "Today Date" taken from the
# clock (strftime_now) unless date_string is passed; every message's content is trimmed; turns
# end with <|eot_id|>, while the tokenizer's EOS is <|end_of_text|>.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if date_string is not defined %}{% if strftime_now is defined %}"
    "{% set date_string = strftime_now('%d %b %Y') %}{% else %}{% set date_string = '26 Jul 2024' %}{% endif %}"
    "{% endif %}"
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] | trim %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: {{ date_string }}\n\n{{ system }}<|eot_id|>"
    "{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Qwen2.5-Instruct: ChatML, and a default system prompt injected when the conversation has none.
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Mistral-7B-Instruct v0.1/v0.2: [INST] turns, strict user/assistant alternation, no system
# role at all; the reply follows [/INST] directly and ends with the EOS token.
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)
# Gemma 2: refuses a system turn, strict alternation, the assistant is called "model", content
# trimmed, turns end with <end_of_turn> (not the tokenizer's EOS).
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Phi-3-mini-instruct: <|user|>/<|assistant|> turns ending with <|end|>, and, without a
# generation prompt, the EOS token (<|endoftext|>, also its pad token) after the last turn.
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def _save(model, tokenizer, folder: Path, generation: dict | None, **save) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, **save)
    tokenizer.save_pretrained(folder)
    if generation is not None:  # written as the hub ships it, whole
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
    return folder


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _seeded(seed: int = 0):
    import torch

    torch.manual_seed(seed)


def llama3(folder: Path) -> ModelSpec:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                "<|eot_id|>"], corpus=FAMILY_CORPUS, add_bos="<|begin_of_text|>",
                               bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")  # no pad token
    tokenizer.chat_template = LLAMA3_TEMPLATE
    bos, eos, eot = _ids(tokenizer, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>")
    _seeded()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **SIZE, rope_theta=500000.0,
                                         bos_token_id=bos, eos_token_id=[eos, eot], tie_word_embeddings=False))
    # Llama-3.1-8B-Instruct's generation_config.json: sampling on, temperature 0.6, top_p 0.9.
    return ModelSpec(kind="folder", location=str(_save(model, tokenizer, folder, dict(
        bos_token_id=bos, eos_token_id=[eos, eot], do_sample=True, temperature=0.6, top_p=0.9))))


def qwen2(folder: Path) -> ModelSpec:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = make_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], corpus=FAMILY_CORPUS,
                               eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None)
    tokenizer.chat_template = QWEN_TEMPLATE
    end, im_end = _ids(tokenizer, "<|endoftext|>", "<|im_end|>")
    _seeded()
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), **SIZE, tie_word_embeddings=True,
                                         eos_token_id=end, bos_token_id=end))
    # Qwen2.5-Instruct's generation_config.json: repetition_penalty 1.05, top_k 20, top_p 0.8.
    return ModelSpec(kind="folder", location=str(_save(model, tokenizer, folder, dict(
        bos_token_id=end, pad_token_id=end, eos_token_id=[im_end, end], do_sample=True,
        repetition_penalty=1.05, temperature=0.7, top_p=0.8, top_k=20))))


def mistral(folder: Path) -> ModelSpec:
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = make_tokenizer(["<unk>", "<s>", "</s>"], corpus=FAMILY_CORPUS, add_bos="<s>",
                               bos_token="<s>", eos_token="</s>", unk_token="<unk>")  # no pad token
    tokenizer.chat_template = MISTRAL_TEMPLATE
    bos, eos = _ids(tokenizer, "<s>", "</s>")
    _seeded()
    model = MistralForCausalLM(MistralConfig(vocab_size=len(tokenizer), **SIZE, sliding_window=256,
                                             bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False))
    # Sharded as large checkpoints are: model-0000N-of-0000M.safetensors and an index.
    return ModelSpec(kind="folder", location=str(_save(model, tokenizer, folder, dict(
        bos_token_id=bos, eos_token_id=eos), max_shard_size="60KB")))


def gemma2(folder: Path, hub_cache: Path | None = None) -> ModelSpec:
    """With `hub_cache`, written in the hub-cache layout under it and returned as a hub id."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tokenizer = make_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
                               corpus=FAMILY_CORPUS, add_bos="<bos>", bos_token="<bos>", eos_token="<eos>",
                               pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = GEMMA_TEMPLATE
    pad, eos, bos, eot = _ids(tokenizer, "<pad>", "<eos>", "<bos>", "<end_of_turn>")
    _seeded()
    # Gemma 2's logits are soft-capped (tanh at 30) after the LM head, its attention at 50.
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=len(tokenizer), **SIZE, head_dim=16, query_pre_attn_scalar=16, sliding_window=128,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, pad_token_id=pad, eos_token_id=[eos, eot], bos_token_id=bos))
    generation = dict(bos_token_id=bos, pad_token_id=pad, eos_token_id=[eos, eot], cache_implementation="hybrid")
    if hub_cache is None:
        return ModelSpec(kind="folder", location=str(_save(model, tokenizer, folder, generation)))
    repo = hub_cache / "models--tiny--gemma-2"
    revision = "0123456789abcdef0123456789abcdef01234567"
    _save(model, tokenizer, repo / "snapshots" / revision, generation)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return ModelSpec(kind="hub", location="tiny/gemma-2")


def phi3(folder: Path) -> ModelSpec:
    from transformers import Phi3Config, Phi3ForCausalLM

    tokenizer = make_tokenizer(["<unk>", "<s>", "<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>",
                                "<|system|>"], corpus=FAMILY_CORPUS, bos_token="<s>", eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>", unk_token="<unk>")  # pad == EOS
    tokenizer.chat_template = PHI3_TEMPLATE
    bos, eos, assistant, end = _ids(tokenizer, "<s>", "<|endoftext|>", "<|assistant|>", "<|end|>")
    _seeded()
    # Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj (LoRA targets differ).
    model = Phi3ForCausalLM(Phi3Config(vocab_size=len(tokenizer), **SIZE, pad_token_id=eos, bos_token_id=bos,
                                       eos_token_id=eos, tie_word_embeddings=False))
    # Phi-3-mini-4k-instruct's generation_config.json stops on <|endoftext|>, <|assistant|> and <|end|>.
    return ModelSpec(kind="folder", location=str(_save(model, tokenizer, folder, dict(
        bos_token_id=bos, pad_token_id=eos, eos_token_id=[eos, assistant, end]))))


def gpt2(folder: Path) -> ModelSpec:
    from transformers import GPT2Config, GPT2LMHeadModel

    # GPT-2: no chat template, one special token that is BOS and EOS, no pad token, Conv1D layers.
    tokenizer = make_tokenizer(["<|endoftext|>"], corpus=FAMILY_CORPUS, bos_token="<|endoftext|>",
                               eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    _seeded()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=512,
                                       bos_token_id=end, eos_token_id=end))
    return ModelSpec(kind="folder", location=str(_save(model, tokenizer, folder, dict(
        bos_token_id=end, eos_token_id=end))))


FAMILIES = {"llama3": llama3, "qwen2": qwen2, "mistral": mistral, "gemma2": gemma2, "phi3": phi3, "gpt2": gpt2}
