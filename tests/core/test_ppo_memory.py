"""The memory estimate the PPO page shows before launch: its sizes at 7B shapes, and its largest
term, the activations kept for backward, against what autograd really saves for a micro-batch."""

import pytest
import torch

from workbench.data.prompts import PromptStore
from workbench.models.tiny import make_tiny_tokenizer
from workbench.project import Project
from workbench.train.ppo import PpoConfig, Rollout, _PpoTrainer
from workbench.train.ppo_memory import GIB, ModelShape, estimate_for_session, estimate_ppo_memory
from workbench.train.runs import RunRecord

from .conftest import loaded


def saved_for_backward(fn) -> dict[int, int]:
    """Bytes of each storage autograd keeps for backward while `fn()` runs, by address: a
    storage saved twice (a view of it, say) counts once."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return storages


@pytest.mark.parametrize("quantization,checkpointing", [("nf4", False), ("none", False), ("nf4", True)])
def test_the_activation_term_matches_what_autograd_saves(tmp_path, quantization, checkpointing):
    """A Llama with grouped-query attention and an MLP 2.7 times wider, as 7B-class models have;
    one micro-batch of the policy's training forward pass, as the update runs it, padding on
    both sides. With gradient checkpointing only each layer's input is kept (the layer's own
    activations, counted once in the estimate, come back during its backward)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(hidden_size=128, intermediate_size=344, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    models = loaded(tmp_path / "model", quantization=quantization)
    project = Project.create(tmp_path / "p")
    PromptStore(project).add("Where is my parcel?")
    prompt, response, micro = 40, 24, 4
    ppo = PpoConfig(batch_size=micro, micro_batch_size=micro, num_minibatches=1, max_length=prompt,
                    max_new_tokens=response, gradient_checkpointing=checkpointing)
    trainer = _PpoTrainer(project, models, ppo, RunRecord.create(project, "ppo", {}), "ppo-check", None)
    trainer.reward_fn = lambda messages, texts: [0.0] * len(texts)
    ids = torch.randint(10, 300, (micro, prompt + response), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[:2, :9] = 0  # left-padded prompts
    mask[1:3, -5:] = 0  # responses that ended early
    with models.hold("test"):
        head, device = trainer.setup()  # on a GPU machine: CUDA, and its attention kernels
        parameters = {p.untyped_storage().data_ptr() for p in models.model.parameters()}
        rollout = Rollout(ids.to(device), mask.to(device), prompt, mask[:, prompt:].float().to(device), [], [], [])
        with trainer.update_mode():
            saved = saved_for_backward(lambda: sum(t.sum() for t in trainer.forward(rollout, head, "ppo-check")[:2]))
    measured = sum(size for pointer, size in saved.items() if pointer not in parameters)
    estimate = estimate_for_session(models, ppo).parts["activations"]
    # A planning figure for the peak: never below what is saved, and not far above it (the
    # logits' gradient and log-softmax, counted in the estimate, exist only during backward).
    if not checkpointing:
        assert measured <= estimate < 1.3 * measured, (measured, estimate)
    else:  # the estimate adds the one layer recomputed during backward, which no hook sees here
        full = estimate_for_session(models, PpoConfig(**{**ppo.to_dict(), "gradient_checkpointing": False}))
        assert measured <= estimate and measured < full.parts["activations"] / 4, (measured, estimate)
    project.close()


LLAMA_2_7B = ModelShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000,
                        tied_embeddings=False)


def test_memory_estimate_at_7b_shapes():
    config = PpoConfig(batch_size=16, max_length=128, max_new_tokens=128, micro_batch_size=4)
    four_bit = estimate_ppo_memory(LLAMA_2_7B, config, "4bit")
    assert 3.5 * GIB < four_bit.parts["base"] < 4.5 * GIB  # 6.5B linear weights at 4.5 bits + bf16 embeddings
    assert 12 * GIB < estimate_ppo_memory(LLAMA_2_7B, config, "none").parts["base"] < 13 * GIB
    assert four_bit.total < 16 * GIB
    lean = estimate_ppo_memory(LLAMA_2_7B, PpoConfig(**{**config.to_dict(), "gradient_checkpointing": True}))
    assert lean.parts["activations"] < four_bit.parts["activations"] / 4
    bigger = estimate_ppo_memory(LLAMA_2_7B, PpoConfig(**{**config.to_dict(), "batch_size": 32}))
    assert bigger.parts["generation cache"] == pytest.approx(2 * four_bit.parts["generation cache"])
    assert four_bit.describe().startswith("about ")


def test_memory_estimate_for_the_loaded_model(models):
    estimate = estimate_for_session(models, PpoConfig())
    assert estimate is not None and 0 < estimate.total < GIB
