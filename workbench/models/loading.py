"""Load a base model once and describe what was loaded.

`ModelSession.load(spec, should_stop)` is a generator (DESIGN.md principle 2): it yields
Progress items and, once the weights are in place, swaps the new model in and yields a last
Progress whose data is the ModelInfo as a dict. Cancelling between stages drops the half-loaded
model and frees its memory; the previously loaded model stays usable until then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench import library_logs
from workbench.config import ModelSpec
from workbench.errors import Cancelled, ModelLoadError
from workbench.models import chat_format
from workbench.models.generation import strip_generation_defaults
from workbench.models.sources import ResolvedSource, resolve
from workbench.progress import Progress


@dataclass(frozen=True)
class ModelInfo:
    """What the model page shows about the loaded model: plain data only."""

    name: str
    architecture: str
    parameters: int
    memory_bytes: int
    device: str
    quantization: str
    dtype: str
    has_chat_template: bool
    prompt_format: str
    """Which prompt format every path uses (chat_format.describe)."""
    ignored_generation_defaults: str
    """What the model's generation_config.json suggests for sampling, which we never apply."""
    context_length: int | None
    vocab_size: int
    load_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(preference: str) -> str:
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if preference == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if preference == "cuda" and not cuda:
        raise ModelLoadError("CUDA was chosen, but torch sees no CUDA GPU. Choose 'auto' or 'cpu'.")
    if preference == "mps" and not mps:
        raise ModelLoadError("Apple MPS was chosen, but it is not available here. Choose 'auto' or 'cpu'.")
    return preference


def pick_quantization(preference: str, device: str) -> str:
    if preference == "auto":
        return "nf4" if device == "cuda" else "none"
    if preference != "none" and device == "mps":
        raise ModelLoadError("4-bit and 8-bit quantization need CUDA (or the CPU); choose 'none' on MPS.")
    return preference


def pick_dtype(preference: str, device: str):
    import torch

    if preference != "auto":
        return getattr(torch, preference)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def quantization_config(quantization: str, dtype):
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True)
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def keep_4bit_layers_differentiable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its fast CPU inference kernel.

    On CPUs with AVX512-BF16 it repacks a layer's weights at its first forward pass in eval mode
    without gradient (generation), for good. The packed kernel has no backward, so afterwards
    no gradient flows back through a quantized layer: an adapter whose only way to the loss
    passes one (q/k/v through o_proj) gets none, the others get wrong ones, silently, and the
    bf16 scales make training log-probs differ from sampling's. The unpacked path dequantizes
    and its LoRA gradients equal those of the dequantized full-precision model."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def describe(model, tokenizer, spec: ModelSpec, device: str, quantization: str, seconds: float,
             shipped_defaults: dict) -> ModelInfo:
    config = model.config
    architectures = getattr(config, "architectures", None) or [type(model).__name__]
    return ModelInfo(
        name=spec.display_name,
        architecture=architectures[0],
        parameters=int(model.num_parameters()),
        memory_bytes=int(model.get_memory_footprint()),
        device=device,
        quantization=quantization,
        dtype=str(model.dtype).removeprefix("torch."),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        prompt_format=chat_format.describe(tokenizer),
        ignored_generation_defaults=", ".join(f"{key} {value}" for key, value in sorted(shipped_defaults.items())),
        context_length=getattr(config, "max_position_embeddings", None),
        vocab_size=len(tokenizer),
        load_seconds=round(seconds, 2),
    )


def _explain(error: Exception, folder) -> ModelLoadError:
    """One clear sentence for the failures users actually meet, keeping the library's reason."""
    import torch

    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, torch.OutOfMemoryError):
        return ModelLoadError("Out of memory while loading the model. Choose 4-bit quantization, a "
                              "smaller model, or free memory used by other programs.")
    if isinstance(error, ImportError):
        return ModelLoadError(f"A library this model needs is missing: {reason}")
    return ModelLoadError(f"Could not load the model from {folder}: {reason}")


class ModelSession:
    """Owns the one loaded base model, its tokenizer, and the LoRA adapters on it.

    One copy of the base serves every adapter (DESIGN.md principle 4): the first adapter wraps
    the base in a peft model, later ones are added to that wrapper by name. Work that runs the
    model (training, generation) holds it with `using(...)`, so two jobs never change the active
    adapter under each other.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        self.spec: ModelSpec | None = None
        self.info: ModelInfo | None = None
        self.peft: Any = None  # the PeftModel around `model` once an adapter exists
        self.adapters: dict[str, Path | None] = {}  # name -> folder it was loaded from (None: in training)
        self._busy = threading.Lock()
        self.busy_with: str | None = None

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self, spec: ModelSpec, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Progress]:
        if self.busy_with is not None:
            raise ModelLoadError(f"The model is busy ({self.busy_with}); stop that before loading another.")
        yield Progress("Preparing libraries...", 0.01)
        from transformers import AutoModelForCausalLM, AutoTokenizer  # the first import costs seconds

        library_logs.after_transformers_import()
        # Imported now, in the loading worker, so starting a training run does not import them:
        # a worker busy importing holds the GIL in short slices and the window stutters.
        import peft  # noqa: F401
        import torch.optim  # noqa: F401
        import transformers.optimization  # noqa: F401

        # Timed from here: load_seconds is the model's own load (plus any one-time conversion).
        started = time.monotonic()

        def check_stop() -> None:
            if should_stop():
                raise Cancelled("Model loading was cancelled.")

        yield Progress("Checking the model source...", 0.02)
        device = pick_device(spec.device)
        quantization = pick_quantization(spec.quantization, device)
        dtype = pick_dtype(spec.dtype, device)
        source = None
        for item in resolve(spec, should_stop):
            if isinstance(item, ResolvedSource):
                source = item
            else:
                yield item
        check_stop()

        yield Progress("Loading the tokenizer...", 0.3)
        model = tokenizer = None
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                source.folder, trust_remote_code=source.trust_remote_code, local_files_only=True)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            check_stop()
            yield Progress(f"Loading the weights ({quantization}, {str(dtype).removeprefix('torch.')}) "
                           f"onto {device}...", 0.4)
            quant = quantization_config(quantization, dtype)
            model = AutoModelForCausalLM.from_pretrained(
                source.folder,
                dtype=dtype,
                quantization_config=quant,
                device_map={"": device} if quant is not None else None,
                use_safetensors=not source.uses_pickle,
                trust_remote_code=source.trust_remote_code,
                local_files_only=True,
            )
            if quant is None and device != "cpu":
                model.to(device)
            if quantization == "nf4" and device == "cpu":
                keep_4bit_layers_differentiable(model)
            model.eval()
            shipped_defaults = strip_generation_defaults(model)
            check_stop()
        except Cancelled:
            del model, tokenizer
            free_memory()
            raise
        except Exception as error:  # noqa: BLE001 - turned into a message the user can act on
            del model, tokenizer
            free_memory()
            raise _explain(error, source.folder) from error
        info = describe(model, tokenizer, spec, device, quantization, time.monotonic() - started, shipped_defaults)
        self.unload()
        self.model, self.tokenizer, self.spec, self.info = model, tokenizer, spec, info
        yield Progress(f"Loaded {info.name} in {info.load_seconds:.1f} s.", 1.0, {"info": info.to_dict()})

    def unload(self) -> None:
        if self.busy_with is not None:
            raise ModelLoadError(f"The model is busy ({self.busy_with}); stop that first.")
        self.model = self.tokenizer = self.spec = self.info = self.peft = None
        self.adapters = {}
        free_memory()

    # ---- adapters ----------------------------------------------------------------------

    @contextmanager
    def hold(self, purpose: str, wait_s: float = 0.0,
             should_stop: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Claim the model for one job. A second job is refused with a message, or, given
        `wait_s`, waits that long for the first to finish (short jobs such as scoring)."""
        if self.model is None:
            raise ModelLoadError("No model is loaded. Load one on the Model page first.")
        deadline = time.monotonic() + wait_s
        while not self._acquire_until(deadline):
            if time.monotonic() >= deadline or should_stop():
                raise ModelLoadError(f"The model is busy ({self.busy_with}). Wait for it, or stop it first.")
        self.busy_with = purpose
        try:
            yield
        finally:
            self.busy_with = None
            self._busy.release()

    def _acquire_until(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        return self._busy.acquire(timeout=min(0.1, left)) if left > 0 else self._busy.acquire(blocking=False)

    @contextmanager
    def using(self, adapter: str | None, purpose: str, folder: Path | None = None) -> Iterator[Any]:
        """A context manager: hold the model for `purpose` and yield the module to call, with
        `adapter` active, or with every adapter switched off for None (the plain base). An adapter
        not in memory yet is loaded from `folder` first; without a folder it must already be
        loaded (ModelLoadError otherwise). Raises ModelLoadError while another job holds it."""
        with self.hold(purpose):
            if adapter is not None and adapter not in self.adapters and folder is not None:
                self.load_adapter(adapter, folder)
            if adapter is None:
                if self.peft is None:
                    yield self.model
                else:
                    with self.peft.disable_adapter():
                        yield self.peft
            else:
                if adapter not in self.adapters:
                    raise ModelLoadError(f"The adapter {adapter} is not loaded.")
                self.peft.set_adapter(adapter)
                yield self.peft

    def add_adapter(self, name: str, lora_config) -> None:
        """A new trainable LoRA adapter on the shared base."""
        from peft import get_peft_model

        if name in self.adapters:  # a same-named adapter of another project: replaced, never mixed
            self.remove_adapter(name)
        if self.peft is None:
            self.peft = get_peft_model(self.model, lora_config, adapter_name=name)
        else:
            self.peft.add_adapter(name, lora_config)
        self.adapters[name] = None

    def load_adapter(self, name: str, folder: Path) -> None:
        """A saved adapter (e.g. a finished SFT run), loaded once and kept for later use."""
        from peft import PeftModel

        if name in self.adapters:
            return
        if not (Path(folder) / "adapter_config.json").is_file():
            raise ModelLoadError(f"{folder} is not a LoRA adapter folder (no adapter_config.json).")
        if not (Path(folder) / "adapter_model.safetensors").is_file():
            # Our runs always write safetensors; anything else (a .bin) would be unpickled.
            raise ModelLoadError(f"{folder} has no adapter_model.safetensors; only safetensors adapters are loaded.")
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, str(folder), adapter_name=name)
            else:
                self.peft.load_adapter(str(folder), adapter_name=name)
        except Exception as error:  # noqa: BLE001 - a mismatched adapter gets a message, not a crash
            raise ModelLoadError(f"Could not load the adapter in {folder}: {error}") from error
        self.adapters[name] = Path(folder)

    def remove_all_adapters(self) -> None:
        """Back to the plain base (another project is opened: its runs reuse the same names)."""
        if self.busy_with is not None:
            raise ModelLoadError(f"The model is busy ({self.busy_with}); stop that first.")
        if self.peft is not None:
            self.model = self.peft.unload()
        self.peft = None
        self.adapters = {}

    def remove_adapter(self, name: str) -> None:
        if name in self.adapters and self.peft is not None:
            if len(self.adapters) == 1:
                # peft cannot delete its last adapter; take the LoRA layers out of the base instead
                self.model = self.peft.unload()
                self.peft = None
            else:
                self.peft.delete_adapter(name)
            del self.adapters[name]


def free_memory() -> None:
    # Dropping the references frees the weights; no gc.collect() here, because this runs in a
    # worker thread, and a full collection there can destroy Qt objects off the GUI thread (a
    # segfault seen in the UI tests).
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
