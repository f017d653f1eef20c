"""`workbench import PROJECT PATH --kind adapter|model --as sft|rm|policy`: a LoRA adapter (or a
merged model) trained elsewhere becomes a finished run of the project, so it answers in Try it,
starts PPO or DPO, is compared in "Did it work?" and is ranked blind like our own runs.

The folder is someone else's: only JSON and safetensors are read (never a pickle), and before
anything is copied every tensor is checked against the project's base, built from its config on
PyTorch's meta device (no weights loaded): a LoRA pair must fit the layer it names, a reward
head must read the base's hidden size. An adapter for another base is refused, naming a layer
that does not fit.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.project import Project

AS_KINDS = ("sft", "rm", "policy")
"""What an import becomes, as the kind of its run: an SFT adapter, a reward model, or a policy
(kind "policy", listed with PPO and DPO policies)."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>A|B)(?:\.[^.]+)?\.weight$")
OUR_HEAD = "score.weight"  # our reward_head.safetensors, read under the name peft gives a head
SCORE_KEY = re.compile(r"^(?:base_model\.model\.)?(?:score|v_head|value_head)(?:\.modules_to_save\.[^.]+)?\.weight$")


def import_adapter(project: Project, path: Path, as_kind: str) -> int:
    """Check the adapter folder `path` against the project's base and record it as a finished
    run of kind `as_kind`; returns the run id."""
    from safetensors import safe_open

    from workbench.train.reward import HEAD_FILE

    if as_kind not in AS_KINDS:
        raise WorkbenchError(f"--as must be one of {', '.join(AS_KINDS)}, not {as_kind!r}.")
    folder = _adapter_folder(Path(path))
    config = _adapter_config(folder)
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as tensors:
        shapes = {key: tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()}
    if (folder / HEAD_FILE).is_file():  # our own reward models keep the head beside the adapter
        with safe_open(str(folder / HEAD_FILE), framework="pt") as tensors:
            shapes[OUR_HEAD] = tuple(tensors.get_slice("weight").get_shape())
    base = _meta_base(project)
    lora, head = _check_shapes(shapes, base, as_kind, folder)
    return _record(project, folder, config, as_kind, lora, head)


def _adapter_folder(path: Path) -> Path:
    if not path.is_dir():
        raise WorkbenchError(f"{path} is not a folder; an adapter is a folder with {' and '.join(ADAPTER_FILES)}.")
    if not (path / "adapter_config.json").is_file():
        # A TRL output folder holds the adapter itself; a checkpoint-N inside it does too.
        raise WorkbenchError(f"{path} has no adapter_config.json: it is not a LoRA adapter folder "
                             "(for a merged model, use --kind model).")
    if not (path / "adapter_model.safetensors").is_file():
        found = ", ".join(p.name for p in path.glob("adapter_model.*")) or "no adapter weights"
        raise WorkbenchError(f"{path} has {found} but no adapter_model.safetensors; only safetensors are read "
                             "(a .bin is a pickle, which can run code). Save the adapter with safe_serialization.")
    return path


def _adapter_config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WorkbenchError(f"{folder / 'adapter_config.json'} cannot be read: {error}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise WorkbenchError(f"{folder} is not a LoRA adapter (peft_type {config.get('peft_type')!r} in "
                             "adapter_config.json); only LoRA adapters can be imported.")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise WorkbenchError(f"adapter_config.json has no valid {key}.")
    if config.get("use_dora"):
        raise WorkbenchError("this is a DoRA adapter; the workbench runs plain LoRA adapters only.")
    return config


def _meta_base(project: Project):
    """The project's base as a causal LM on the meta device: its layers' shapes, no weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source = _base_source(project)
    config = AutoConfig.from_pretrained(source.folder, local_files_only=True,
                                        trust_remote_code=source.trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=source.trust_remote_code)


def _check_shapes(shapes: dict, base, as_kind: str, folder: Path) -> tuple[dict, str | None]:
    """(LoRA tensors' shapes by key, the reward head's key or None), after checking every one."""

    hidden = base.config.get_text_config().hidden_size
    lora, head, other = {}, None, []
    for key, shape in shapes.items():
        if SCORE_KEY.match(key):
            if as_kind != "rm":
                raise WorkbenchError(f"{folder.name} holds a reward head ({key}); import it with --as rm.")
            if shape != (1, hidden):
                raise WorkbenchError(f"the reward head {key} has shape {list(shape)}, but this base's hidden size "
                                     f"is {hidden}: the adapter was trained on another base.")
            head = key
            continue
        match = LORA_KEY.match(key)
        if not match:
            other.append(key)
            continue
        module_path = match["module"]
        try:
            module = base.get_submodule(module_path)
        except AttributeError:
            raise WorkbenchError(f"the adapter changes {module_path}, which {type(base).__name__} does not have: "
                                 "it was trained on another base.") from None
        features = _in_out(module)
        if features is not None:
            inputs, outputs = features
            expected = (shape[0], inputs) if match["side"] == "A" else (outputs, shape[1])
            if shape != expected:
                wanted = inputs if match["side"] == "A" else outputs
                raise WorkbenchError(f"the adapter's {key} has shape {list(shape)}, but {module_path} of the "
                                     f"project's base has {wanted} {'inputs' if match['side'] == 'A' else 'outputs'}"
                                     ": the adapter was trained on another base.")
        lora[key] = shape
    if other:
        raise WorkbenchError(f"the adapter also replaces whole layers ({', '.join(sorted(other)[:3])}"
                             f"{'...' if len(other) > 3 else ''}); only LoRA layers"
                             + (" and a reward head" if as_kind == "rm" else "") + " can be imported.")
    if not lora:
        raise WorkbenchError(f"{folder.name} holds no LoRA weights.")
    if as_kind == "rm" and head is None:
        raise WorkbenchError(f"{folder.name} has no reward head (a `score` weight of shape [1, {hidden}]); a "
                             "reward model trained with peft keeps it when lora_task_type is SEQ_CLS.")
    return lora, head


def _in_out(module) -> tuple[int, int] | None:
    """(inputs, outputs) of a layer LoRA can adapt: nn.Linear, or GPT-2's Conv1D; else None."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.nx, module.nf
    return None


def _record(project: Project, folder: Path, config: dict, as_kind: str, lora: dict, head: str | None) -> int:
    from safetensors.torch import load_file, save_file

    from workbench.train.reward import HEAD_FILE, HEAD_INFO
    from workbench.train.runs import RunRecord

    origin = _origin(folder)
    settings = {"imported_from": str(folder.resolve()), "lora_rank": config["r"], "lora_alpha": config["lora_alpha"],
                "target_modules": config.get("target_modules"),
                "trained_on": config.get("base_model_name_or_path") or "", **origin}
    record = RunRecord.create(project, as_kind, settings)
    adapter = record.folder / "adapter"
    try:
        adapter.mkdir(parents=True)
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        if head == OUR_HEAD and (folder / HEAD_FILE).is_file():
            tensors[OUR_HEAD] = load_file(str(folder / HEAD_FILE))["weight"]
        if head is not None:
            weight = tensors.pop(head).float().contiguous()
            save_file({"weight": weight}, str(adapter / HEAD_FILE))
            (adapter / HEAD_INFO).write_text(json.dumps({
                "hidden_size": int(weight.shape[1]), "pooling": "last token", "max_length": 512,
                "score": "imported: a linear head on the base's last hidden state at the last token"}, indent=2))
        save_file({key: value.contiguous() for key, value in tensors.items() if key in lora},
                  str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
        ours = {key: value for key, value in config.items() if key not in ("modules_to_save", "auto_mapping")}
        ours.update(task_type="CAUSAL_LM", modules_to_save=None, inference_mode=True)
        (adapter / "adapter_config.json").write_text(json.dumps(ours, indent=2))
        record.set_artifact(adapter)
        _prompt_split(project, origin, record.folder)
        curves = _trainer_curves(folder)
        for step, metrics in curves.items():
            record.add_metrics(step, metrics)
        record.log(f"Imported from {folder} ({len(lora)} LoRA tensors, rank {config['r']}"
                   + (", with a reward head" if head else "") + ").")
        record.set_status("finished", f"imported from {origin.get('engine') or 'elsewhere'}")
    except Exception:
        record.set_status("failed", "the import could not be written")
        raise
    return record.id


def _trainer_curves(folder: Path) -> dict[int, dict[str, float]]:
    """The curves a transformers Trainer (TRL's) logged, from the newest trainer_state.json in the
    folder or its checkpoints, under our names where ours differ (loss/train, loss/validation)."""
    states = [folder / "trainer_state.json", *folder.glob("checkpoint-*/trainer_state.json")]
    states = [s for s in states if s.is_file()]
    if not states:
        return {}
    try:
        state = json.loads(max(states, key=lambda s: s.stat().st_mtime).read_text(encoding="utf-8"))
        history = state["log_history"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    renamed = {"loss": "loss/train", "eval_loss": "loss/validation", "learning_rate": "train/lr",
               "grad_norm": "train/grad_norm"}
    curves: dict[int, dict[str, float]] = {}
    for entry in history if isinstance(history, list) else []:
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, int) or step < 0:
            continue
        for key, value in entry.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                    and key not in ("step", "epoch", "total_flos") and not key.startswith("train_") \
                    and not key.endswith(("_runtime", "_per_second")):
                name = renamed.get(key) or (f"eval/{key[5:]}" if key.startswith("eval_") else key)
                curves.setdefault(step, {})[name[:100]] = float(value)
    return curves


def _prompt_split(project: Project, origin: dict, run_folder: Path) -> None:
    """Which of the project's prompts the job trained on and held out, from its data, so "Did
    it work?" compares on prompts the imported policy never saw (as for our own runs)."""
    from workbench.data.prompts import PromptStore
    from workbench.train.ppo import HELDOUT_FILE, TRAIN_FILE

    if not origin.get("job") or origin.get("stage") == "sft":
        return
    store = PromptStore(project)
    by_conversation = {json.dumps(store.messages(row.id), sort_keys=True): row.id for row in store.rows()}
    for split, name in (("train", TRAIN_FILE), ("test", HELDOUT_FILE)):
        ids = set()
        data = Path(origin["job"]) / "data" / f"{split}.jsonl"
        for line in data.read_text(encoding="utf-8").split("\n") if data.is_file() else []:
            try:
                prompt = json.loads(line)["prompt"] if line.strip() else None
            except (ValueError, KeyError, TypeError):
                continue
            found = by_conversation.get(json.dumps(prompt, sort_keys=True))
            if found is not None:
                ids.add(found)
        (run_folder / name).write_text(json.dumps(sorted(ids)))


def _origin(folder: Path) -> dict:
    """Where it came from: an exported job's job.json beside or above the adapter."""
    for candidate in (folder / "job.json", folder.parent / "job.json", folder.parent.parent / "job.json"):
        if candidate.is_file():
            try:
                job = json.loads(candidate.read_text(encoding="utf-8"))
                return {"engine": f"{job.get('engine')} {job.get('engine_version')}", "stage": job.get("stage"),
                        "job": str(candidate.parent)}
            except (OSError, ValueError, AttributeError):
                break
    return {}


def import_merged_model(project: Project, path: Path, as_kind: str, rank: int = 64) -> int:
    """A merged model (full weights) trained from the project's base, stored as what it adds to
    the base: each linear layer's difference, cut to a rank-`rank` LoRA pair by SVD (exact when
    the model was a LoRA merged at that rank or less). Layers that are not linear (embeddings,
    norms) must be unchanged, since LoRA cannot hold them."""
    import torch
    from safetensors.torch import save_file

    if as_kind not in AS_KINDS:
        raise WorkbenchError(f"--as must be one of {', '.join(AS_KINDS)}, not {as_kind!r}.")
    if rank < 1:
        raise WorkbenchError("--rank must be at least 1.")
    merged = _weights(Path(path), "the merged model")
    base_folder = _base_source(project).folder
    base = _weights(base_folder, "the project's base")
    meta = _meta_base(project)
    pairs, head, worst = {}, None, 0.0
    for key, (file, tensor_name) in merged.items():
        name = key.removeprefix("base_model.model.")
        if SCORE_KEY.match(name):
            head = _read(file, tensor_name)
            continue
        if name not in base:
            raise WorkbenchError(f"the model has {name}, which the project's base has not: it is another architecture.")
        new, old = _read(file, tensor_name).float(), _read(*base[name]).float()
        if new.shape != old.shape:
            raise WorkbenchError(f"{name} has shape {list(new.shape)} in the model but {list(old.shape)} in the "
                                 "project's base: it was trained from another base.")
        delta = new - old
        if not delta.abs().max() > 1e-6 * max(1.0, float(old.abs().max())):
            continue
        module_name = name.removesuffix(".weight")
        module = meta.get_submodule(module_name) if name.endswith(".weight") else None
        if _in_out(module) is None or name.startswith("lm_head"):
            raise WorkbenchError(f"{name} differs from the base, and LoRA can hold only linear layers' changes: "
                                 "import the adapter the model was merged from instead (--kind adapter).")
        if not isinstance(module, torch.nn.Linear):
            delta = delta.T  # GPT-2's Conv1D keeps its weight as [in, out]; LoRA's pair is [out, in] as for Linear
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        pairs[f"base_model.model.{module_name}.lora_A.weight"] = (root[:, None] * vh[:r]).contiguous()
        pairs[f"base_model.model.{module_name}.lora_B.weight"] = (u[:, :r] * root[None, :]).contiguous()
        lost = float(s[r:].square().sum().sqrt() / s.square().sum().sqrt()) if s.numel() > r else 0.0
        worst = max(worst, lost)
    if not pairs:
        raise WorkbenchError("the model's weights equal the project's base: there is nothing to import.")
    if as_kind == "rm" and head is None:
        raise WorkbenchError("the model has no reward head (score.weight); a reward model is saved as "
                             "AutoModelForSequenceClassification with num_labels=1.")
    if head is not None and as_kind != "rm":
        raise WorkbenchError("the model holds a reward head (score.weight); import it with --as rm.")
    targets = sorted({key.split(".lora_")[0].rsplit(".", 1)[-1] for key in pairs})
    staging = project.artifacts_dir / "imports" / f"{Path(path).name}-lora"
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        tensors = dict(pairs)
        if head is not None:
            tensors["base_model.model.score.weight"] = head.float().contiguous()
        save_file(tensors, str(staging / "adapter_model.safetensors"), metadata={"format": "pt"})
        (staging / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
            "target_modules": targets, "bias": "none", "base_model_name_or_path": str(base_folder),
            "inference_mode": True}, indent=2))
        run_id = import_adapter(project, staging, as_kind)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    from workbench.train.runs import RunRecord

    record = RunRecord(project, run_id)
    record.set_config({**record.config, "imported_from": str(Path(path).resolve()), "merged_model": True,
                       "svd_relative_error": round(worst, 6)})
    record.log(f"A merged model, stored as rank-{rank} LoRA pairs of its {len(pairs) // 2} changed layers; the largest "
               f"share of a layer's change lost to the rank cut: {worst:.2%}.")
    return run_id


def _base_source(project: Project):
    """The project's base as resolved on this machine (the folder its config and weights are read from)."""
    from workbench.models.sources import resolved

    if project.base_model is None:
        raise WorkbenchError(f"{project.path.name} has no base model to check against; choose one on the Model "
                             "page first.")
    return resolved(project.base_model)


def _weights(folder: Path, what: str) -> dict[str, tuple[Path, str]]:
    """Tensor name to (file, name) over a folder's safetensors files, shards included; never a pickle."""
    from safetensors import safe_open

    if not folder.is_dir():
        raise WorkbenchError(f"{folder} is not a folder; {what} is a folder with config.json and safetensors.")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        raise WorkbenchError(f"{folder} has no safetensors weights" + (f" (only {', '.join(pickles)}: pickles, which "
                             "can run code, are never read)" if pickles else "") + f"; {what} cannot be read.")
    found = {}
    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            found.update({key: (file, key) for key in tensors.keys()})
    return found


def _read(file: Path, name: str):
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as tensors:
        return tensors.get_tensor(name)
