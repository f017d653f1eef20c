"""The memory estimate the PPO page shows before launch: its sizes at 7B shapes, and its largest
term, the activations kept for backward, against what autograd really saves for a micro-batch."""

import pytest
import torch

from workbench.data.prompts import PromptStore
from workbench.models.tiny import make_tiny_tokenizer
from workbench.project import Project
from workbench.train.memory import GIB, ModelShape, estimate_for_session, estimate_ppo_memory
from workbench.train.ppo import PpoConfig, Rollout, _PpoTrainer, train_ppo
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


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral", "gemma2", "phi3", "gpt2"])
def test_the_shape_counts_each_familys_real_layers(family, tmp_path):
    """Phi-3's fused qkv_proj and gate_up_proj, GPT-2's Conv1D layers, Gemma's head size: the
    shape read from the loaded model counts the base's linear weights and the LoRA parameters
    of an all-linear adapter exactly as they are."""
    from workbench.train.loop import train_adapter
    from workbench.train.sft import SftConfig

    from .families import FAMILIES

    models = loaded(FAMILIES[family](tmp_path / family).location)
    shape = ModelShape.from_model(models.model)
    embeddings = {id(m.weight) for m in (models.model.get_input_embeddings(), models.model.get_output_embeddings())}
    linear = sum(p.numel() for name, p in models.model.named_parameters()
                 if p.dim() == 2 and id(p) not in embeddings and "wpe" not in name)  # GPT-2's position table
    assert shape.linear_params() == linear
    peft = train_adapter(models, "sft-check", SftConfig(lora_rank=8))
    assert shape.lora_params(8) == sum(p.numel() for p in peft.parameters() if p.requires_grad)


def test_a_run_that_will_not_fit_is_refused_before_it_starts(tmp_path, tiny_model_dir, models, monkeypatch):
    from workbench.data.sft_store import SftStore
    from workbench.train.runs import TrainingError
    from workbench.train.sft import SftConfig, train_sft

    project = Project.create(tmp_path / "p")
    SftStore(project).add([{"role": "user", "content": "Where is it?"}, {"role": "assistant", "content": "Here."}])
    PromptStore(project).add("Where is my parcel?")
    monkeypatch.setattr("workbench.train.memory.free_memory_bytes", lambda device: 1024)
    with pytest.raises(TrainingError, match=r"This run will not fit: .* needs about .* and 0\.0 GiB is available in "
                                            r"RAM\. Lower batch_size"):
        list(train_sft(project, models, SftConfig(max_steps=1)))
    with pytest.raises(TrainingError, match="This run will not fit"):
        list(train_ppo(project, models, PpoConfig(max_steps=1), reward_fn=lambda p, t: [0.0] * len(t)))
    assert [status for (status,) in project.query("SELECT status FROM runs")] == ["failed", "failed"]
    assert not models.adapters  # refused before any adapter was made
