import os
import shutil
import time
from itertools import islice

import pytest
import torch

from workbench.config import ModelSpec
from workbench.errors import Cancelled, ModelLoadError
from workbench.models.generation import SamplingSettings, stream_chat
from workbench.models.loading import ModelSession
from workbench.models.sources import demo_gguf_path, grant_requested
from workbench.progress import Progress

MESSAGES = [{"role": "user", "content": "My order hasn't arrived. What should I do?"}]


def load(spec: ModelSpec, session: ModelSession | None = None, should_stop=lambda: False) -> ModelSession:
    session = session or ModelSession()
    items = list(session.load(spec, should_stop))
    assert all(isinstance(item, Progress) for item in items)
    return session


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def folder(path, **options) -> ModelSpec:
    return ModelSpec(kind="folder", location=str(path), **options)


def test_loads_a_tiny_llama_folder_and_describes_it(tiny_model_dir):
    session = load(folder(tiny_model_dir))
    info = session.info
    assert info.architecture == "LlamaForCausalLM"
    assert info.parameters == sum(p.numel() for p in session.model.parameters())
    assert info.memory_bytes > 0 and info.device == "cpu" and info.quantization == "none"
    assert info.dtype == "float32" and info.has_chat_template and info.context_length == 512


def test_streams_a_reply_and_stops_when_asked(tiny_model_dir):
    session = load(folder(tiny_model_dir))
    settings = SamplingSettings(max_new_tokens=30, seed=0, temperature=1.0)
    chunks = list(stream_chat(session.model, session.tokenizer, MESSAGES, settings))
    assert len(chunks) > 1 and "".join(c.text for c in chunks).strip()
    again = "".join(c.text for c in stream_chat(session.model, session.tokenizer, MESSAGES, settings))
    assert again == "".join(c.text for c in chunks)  # same seed, same reply

    calls = []
    stopped = list(stream_chat(session.model, session.tokenizer, MESSAGES,
                               SamplingSettings(max_new_tokens=200, temperature=1.0, seed=0),
                               should_stop=lambda: calls.append(1) or len(calls) > 3))
    assert 0 < len(stopped) < 10


def test_pickle_weights_are_refused_unless_allowed(pickle_model_dir):
    with pytest.raises(ModelLoadError, match="pickle weights.*Allow pickle"):
        load(folder(pickle_model_dir))
    # Asking is not enough: this machine's user grants it (a project file could ask too).
    with pytest.raises(ModelLoadError, match="this machine's decision.*--allow-pickle"):
        load(folder(pickle_model_dir, allow_pickle=True))
    assert [r.what for r in grant_requested(folder(pickle_model_dir, allow_pickle=True), {"allow_pickle"})] \
        == ["allow_pickle"]
    session = load(folder(pickle_model_dir, allow_pickle=True))
    assert session.info.architecture == "LlamaForCausalLM"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent", "does not exist"),
    (lambda tmp: tmp, "no config.json"),
    (lambda tmp: write(tmp / "model.gguf", b"GGUF"), "is a file.*GGUF"),
])
def test_wrong_folders_get_clear_messages(tmp_path, make, message):
    with pytest.raises(ModelLoadError, match=message):
        load(folder(make(tmp_path)))


def test_folder_without_weights_and_broken_config(tmp_path, tiny_model_dir):
    shutil.copy(tiny_model_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelLoadError, match="no weight files"):
        load(folder(tmp_path))
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match="cannot be read"):
        load(folder(tmp_path))


def test_mismatched_weights_fail_with_a_message_and_keep_the_old_model(tmp_path, tiny_model_dir):
    from workbench.models.tiny import make_tiny_llama

    other = make_tiny_llama(tmp_path / "other", hidden=32)
    shutil.copy(tiny_model_dir / "config.json", other / "config.json")  # config says 64, weights are 32
    session = load(folder(tiny_model_dir))
    with pytest.raises(ModelLoadError, match="Could not load the model"):
        load(folder(other), session)
    assert session.loaded and session.info.architecture == "LlamaForCausalLM"


def test_cancel_keeps_the_previous_model(tiny_model_dir):
    session = load(folder(tiny_model_dir))
    previous = session.model
    with pytest.raises(Cancelled):
        load(folder(tiny_model_dir), session, should_stop=lambda: True)
    assert session.model is previous


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_explained(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load(folder(tiny_model_dir, device="cuda"))


def test_hub_id_resolves_from_the_local_cache_only(tmp_path, tiny_model_dir, monkeypatch):
    import huggingface_hub.constants as hub

    repo = tmp_path / "hub" / "models--acme--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(tiny_model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    session = load(ModelSpec(kind="hub", location="acme/tiny"))
    assert session.info.name == "acme/tiny"
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        load(ModelSpec(kind="hub", location="acme/absent"))
    with pytest.raises(ModelLoadError, match="not a hub id"):
        load(ModelSpec(kind="hub", location="a/b/c"))


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load(ModelSpec(kind="gguf", location=str(path)))


@pytest.mark.demo
def test_a_truncated_gguf_gets_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "truncated.gguf"
    with open(demo_gguf_path(), "rb") as handle:
        path.write_bytes(handle.read(3_000_000))
    with pytest.raises(ModelLoadError, match="could not be read as a GGUF model"):
        load(ModelSpec(kind="gguf", location=str(path)))
    assert not any((tmp_path / "cache" / "models").iterdir())  # no half conversion left behind


@pytest.mark.demo
def test_gguf_file_converts_once_then_loads_fast(tmp_path, monkeypatch):
    """The demo model's GGUF through the GGUF path, in a private cache (about 25 s once)."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    spec = ModelSpec(kind="gguf", location=str(demo_gguf_path()))
    first = load(spec)
    assert first.info.architecture == "LlamaForCausalLM" and first.info.has_chat_template
    assert 130e6 < first.info.parameters < 140e6
    first.unload()
    started = time.monotonic()
    second = load(spec)
    assert time.monotonic() - started < 3.0
    reply = "".join(c.text for c in islice(stream_chat(second.model, second.tokenizer, MESSAGES,
                                                        SamplingSettings(max_new_tokens=12, seed=0)), 20))
    assert reply.strip()


def test_cancelling_a_gguf_conversion_kills_it_and_leaves_no_partial_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    try:
        spec = ModelSpec(kind="gguf", location=str(demo_gguf_path()))
    except ModelLoadError:
        pytest.skip("demo model package not installed")
    session = ModelSession()
    progress = session.load(spec, should_stop=lambda: stop[0])
    stop = [False]
    seen = []
    with pytest.raises(Cancelled):
        for item in progress:
            seen.append(item.message)
            if item.message.startswith("Converting"):
                stop[0] = True
    assert not session.loaded
    assert list((tmp_path / "cache" / "models").iterdir()) == []


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_loads_4bit_nf4_by_default(tiny_model_dir):
    session = load(folder(tiny_model_dir))
    assert session.info.device == "cuda" and session.info.quantization == "nf4"


def test_4bit_on_the_cpu_trains_lora_with_the_dequantized_models_gradients(tiny_model_dir):
    """QLoRA on the CPU: after a generation-style forward pass (eval, no gradient), the LoRA
    gradients of the 4-bit model equal those of a full-precision twin holding its dequantized
    weights. bitsandbytes' CPU inference repacking used to cut them off (None for q/v)."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    quantized = load(folder(tiny_model_dir, quantization="nf4")).model
    assert quantized.is_loaded_in_4bit
    twin = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weights = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            twin.get_submodule(name).weight.data.copy_(weights.float())
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        quantized.generate(ids, max_new_tokens=2, do_sample=False)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    grads = []
    for model in (quantized, twin):
        torch.manual_seed(0)
        peft_model = get_peft_model(model, lora)
        peft_model.train()
        peft_model(ids).logits.float().logsumexp(-1).sum().backward()
        grads.append({n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == 12
    for name, expected in grads[1].items():
        assert grads[0][name] is not None, name
        assert torch.allclose(grads[0][name], expected, rtol=1e-3, atol=1e-5), name
