"""Export a trained reward model for other tools.

- `export_reward_model`: a standard `AutoModelForSequenceClassification` folder (num_labels=1):
  a fresh full-precision copy of the base with the LoRA adapter merged in and our head as its
  `score` layer, plus the tokenizer. transformers reads the score at the last token that is not
  the pad token, which must be the token our head reads: where the pad token is one that a
  conversation can hold (pad == EOS on Llama 3, Phi-3, GPT-2 and SmolLM2, and Phi-3's template
  ends every conversation on EOS), the export gets a pad token of its own. Its tokenizer carries
  the prompt format we trained with (`chat_format.portable_template`), so scoring a
  conversation through its chat template gives the app's scores.
- `export_reward_adapter`: the adapter folder alone (peft adapter + reward head files).

The base is loaded from its source again, never from the (possibly 4-bit) copy in memory, so
the merged weights are full precision.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.config import ModelSpec
from workbench.errors import WorkbenchError
from workbench.models import chat_format
from workbench.models.sources import resolved
from workbench.paths import copy_tree
from workbench.project import Project
from workbench.train.reward import HEAD_FILE, HEAD_INFO, reward_runs
from workbench.train.runs import choose_run


EXPORT_PAD = "<|reward_pad|>"


def pad_is_safe(tokenizer) -> bool:
    """Whether no conversation can hold the pad token: it is not EOS, BOS or the end-of-turn
    token, and a rendered conversation does not contain it."""
    pad = tokenizer.pad_token_id
    if pad is None or pad in chat_format.end_of_turn_ids(tokenizer) | {tokenizer.bos_token_id}:
        return False
    try:
        sample = chat_format.conversation_ids(tokenizer, [{"role": "user", "content": "Where is it?"}], "On its way.")
    except chat_format.TemplateRefused:
        return False
    return pad not in sample


def reward_run_folder(project: Project, run_id: int | None) -> tuple[int, Path]:
    """The adapter folder of reward-model run `run_id`, or of the newest finished one."""
    return choose_run(reward_runs(project), run_id,
                      f"{project.path.name} has no finished reward model; train one first (workbench train rm, "
                      "or the Reward page).", "reward-model run")


def export_reward_adapter(adapter: Path, out: Path) -> Path:
    if out.exists():
        raise WorkbenchError(f"{out} already exists; choose a new folder.")
    copy_tree(adapter, out)
    return out


def export_reward_model(spec: ModelSpec, adapter: Path, out: Path, dtype: str = "float32") -> Path:
    import torch
    from peft import PeftConfig, PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if out.exists():
        raise WorkbenchError(f"{out} already exists; choose a new folder.")
    source = resolved(spec)
    model = AutoModelForSequenceClassification.from_pretrained(
        source.folder, num_labels=1, dtype=getattr(torch, dtype), local_files_only=True,
        use_safetensors=not source.uses_pickle, trust_remote_code=source.trust_remote_code)
    score = getattr(model, "score", None)
    if not isinstance(score, torch.nn.Linear) or score.bias is not None:
        raise WorkbenchError(f"{type(model).__name__} has no plain linear `score` layer; this architecture "
                             "cannot be exported as a sequence classifier. Export the adapter alone.")
    # The adapter was trained on the causal-LM model; the layers it changes are the same here, so
    # load it as a plain (task-less) peft model rather than as a causal-LM one.
    config = PeftConfig.from_pretrained(str(adapter))
    config.task_type = None
    merged = PeftModel.from_pretrained(model, str(adapter), config=config).merge_and_unload()
    head = load_file(str(adapter / HEAD_FILE))["weight"]
    merged.score.weight.data.copy_(head.to(merged.score.weight.dtype))
    tokenizer = AutoTokenizer.from_pretrained(source.folder, local_files_only=True)
    if not pad_is_safe(tokenizer):
        tokenizer.add_special_tokens({"pad_token": EXPORT_PAD})
        merged.resize_token_embeddings(len(tokenizer))
    merged.config.pad_token_id = tokenizer.pad_token_id
    prompt_format = chat_format.describe(tokenizer)
    tokenizer.chat_template = chat_format.portable_template(tokenizer)
    merged.config.id2label, merged.config.label2id = {0: "reward"}, {"reward": 0}
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    merged.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    info = json.loads((adapter / HEAD_INFO).read_text())
    (partial / "reward_model.json").write_text(json.dumps({
        **info, "prompt_format": prompt_format,
        "how_to_score": "tokenize the prompt messages plus the reply as an assistant message with the "
        "tokenizer's chat template (no generation prompt, add_special_tokens=False: the template writes its "
        "own BOS); logits[:, 0] is the reward. A template without a system role was trained with the system "
        "text in front of the first user turn"}, indent=2))
    partial.rename(out)
    return out
