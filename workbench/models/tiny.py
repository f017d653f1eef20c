"""A tiny random Llama with its own small tokenizer, built offline in a second.

Used by the tests and benchmarks wherever the real weights do not matter: the tokenizer is a
byte-level BPE trained on a few sentences, with a ChatML chat template like SmolLM2's.
"""

from __future__ import annotations

from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "My order hasn't arrived. What should I do?",
    "I'm sorry your order is late. Check the tracking link, and tell me the order number.",
    "How do I return a pair of shoes that don't fit? You have 30 days to return them for free.",
    "The package was damaged. I will send a replacement at no cost.",
    "system user assistant: the quick brown fox jumps over the lazy dog 0123456789.",
]


def make_tokenizer(special_tokens: list[str], vocab_size: int = 400, add_bos: str | None = None,
                   corpus: list[str] = CORPUS, **roles):
    """A byte-level BPE trained on `corpus`, with `special_tokens` first in its vocabulary.
    `roles`: eos_token, pad_token, bos_token, unk_token (None: the tokenizer has none).
    `add_bos`: a token the tokenizer puts in front of every text it encodes with special
    tokens (as Llama 3's and Gemma's do), on top of any the chat template writes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus * 4, trainer=trainer)
    if add_bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{add_bos} $A", pair=f"{add_bos} $A {add_bos} $B",
            special_tokens=[(add_bos, core.token_to_id(add_bos))])
    return PreTrainedTokenizerFast(tokenizer_object=core, **{key: value for key, value in roles.items()})


def make_tiny_tokenizer(vocab_size: int = 400):
    tokenizer = make_tokenizer(SPECIAL_TOKENS, vocab_size, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               bos_token=None)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def make_tiny_llama(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 64, init_std: float = 0.02) -> Path:
    """Write a random 2-layer Llama and its tokenizer to `folder` (safetensors) and return it.

    With the usual init_std (0.02) its next-token distribution is nearly uniform and a LoRA
    adapter can hardly sharpen it; a larger init_std gives peaked, learnable distributions."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
