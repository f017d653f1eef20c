"""The whole loop on every model family's quirks (tests/core/families.py), headless through the
code the GUI runs: load, SFT, generate K=2, rank, reward model, PPO, "Did it work?", export of
the reward model and of the policy. On each: the exported reward model scores as the app does,
the exported policy loads in plain peft with the app's logits, every path renders the prompt
as the same string, and no generation inherits the model's sampling defaults.

`MATRIX` collects one row per family; the last test prints it as the table the issue asks for
(run with -s to see it)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from transformers import GenerationMixin

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.response_generation import GenerationConfig, generate_responses
from workbench.data.sft_store import SftStore
from workbench.jobs.export_job import export_job
from workbench.jobs.import_run import import_adapter, import_merged_model
from workbench.models import chat_format
from workbench.models.loading import ModelSession
from workbench.models.sources import ResolvedSource, resolve
from workbench.project import Project
from workbench.train.dpo import DpoConfig, train_dpo
from workbench.train.loop import adapter_for
from workbench.train.policy_export import export_policy
from workbench.train.ppo import PpoConfig, train_ppo
from workbench.train.ppo_eval import compare_policy
from workbench.train.reward import RewardConfig, load_reward_model, reward_runs, train_rm
from workbench.train.reward_data import conversation_ids
from workbench.train.reward_export import export_reward_model
from workbench.train.runs import RunRecord
from workbench.train.sft import SftConfig, train_sft
from workbench.train.sft_data import IGNORE, tokenize_example

from .families import FAMILIES, gemma2

QUESTIONS = ["My order hasn't arrived. What should I do?", "How do I return a pair of shoes?",
             "The package was damaged.", "Where is my parcel?", "Can I change my address?",
             "Do you ship abroad?"]
SYSTEM = {"role": "system", "content": "You are a kind support agent."}
MATRIX: dict[str, dict] = {}
STAGES = ["load", "sft", "generate", "rm", "ppo", "did it work", "export rm", "export policy", "dpo", "job + import"]


def build(family: str, root, monkeypatch):
    """The family's ModelSpec; Gemma 2 in the hub-cache layout, found as a user's cached hub id."""
    if family == "gemma2":
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(root / "hub"))
        return gemma2(root / family, hub_cache=root / "hub")
    return FAMILIES[family](root / family)


@pytest.fixture
def calls(monkeypatch):
    """Every generate() call's prompt rows and the generation config it really ran with, after
    transformers merged in the model's defaults."""
    seen: list[dict] = []
    original = GenerationMixin.generate

    def recording(self, *args, **kwargs):
        merged, _ = self._prepare_generation_config(kwargs.get("generation_config"))
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        rows = [row[m.bool()].tolist() if mask is not None else row.tolist() for row, m in
                zip(ids, mask if mask is not None else ids)]
        seen.append(dict(rows=rows, config=merged))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    return seen


def assert_nothing_inherited(config, temperature: float, top_k: int, top_p: float, repetition_penalty: float):
    assert (config.temperature, config.top_k, config.top_p) == (temperature, top_k, top_p)
    assert config.repetition_penalty == repetition_penalty
    assert config.min_p is None and config.no_repeat_ngram_size == 0 and config.typical_p == 1.0


# Every family in full precision; two also with a 4-bit NF4 base (bitsandbytes on the CPU).
RUNS = [(family, "none") for family in FAMILIES] + [("llama3", "nf4"), ("qwen2", "nf4")]


@pytest.mark.parametrize("family,quantization", RUNS, ids=[f"{f}-{'4bit' if q == 'nf4' else 'full'}" for f, q in RUNS])
def test_the_whole_loop_on_each_family(family, quantization, tmp_path, monkeypatch, calls):
    row = MATRIX.setdefault(f"{family} ({'4-bit' if quantization == 'nf4' else 'full'})", {})
    spec = replace(build(family, tmp_path, monkeypatch), quantization=quantization)
    project = Project.create(tmp_path / "p.rlhf")
    project.set_base_model(spec)
    models = ModelSession()
    for _ in models.load(spec):
        pass
    tokenizer = models.tokenizer
    row["load"] = "pass"
    # Prompts with a system turn: Gemma's and Mistral's templates refuse one, and fold it.
    prompts = PromptStore(project)
    prompt_ids = [prompts.add(q) for q in QUESTIONS]
    for question in QUESTIONS:
        SftStore(project).add([SYSTEM, {"role": "user", "content": question},
                               {"role": "assistant", "content": "I'm sorry. Check the tracking link."}])

    # SFT: two steps; the labels start right after the prompt generation renders.
    sft = list(train_sft(project, models, SftConfig(max_steps=2, batch_size=2, warmup_steps=0)))
    assert sft[-1].status == "finished", sft[-1].message
    row["sft"] = "pass"

    # Generate K=2 per prompt, one pane from the base and one from the SFT adapter.
    before = len(calls)
    events = list(generate_responses(project, models, prompt_ids, GenerationConfig(
        k=2, sources=("base", "sft-run-1"), max_new_tokens=6, seed=1)))
    assert sum(e.saved for e in events) == len(QUESTIONS)
    for call in calls[before:]:  # the Rank page's settings, none of the model's (Qwen's 1.05, top_k 20)
        assert_nothing_inherited(call["config"], 0.8, 50, 0.95, 1.1)
    row["generate"] = "pass"

    # Rank every batch (the first pane over the second) and train the reward model two steps.
    rankings = RankingStore(project)
    for prompt_id in prompt_ids:
        batch = rankings.latest_batch(prompt_id)
        rankings.save_ranking(batch.uid, "ana", [[batch.responses[0].id], [batch.responses[1].id]])
    # Texts the tiny models sample may repeat; two fixed different answers make every prompt a pair.
    for prompt_id in prompt_ids:
        batch = rankings.add_batch(prompt_id, ["I'm sorry, I will help.", "the quick brown fox"],
                                   [{"source": "base"}] * 2)
        rankings.save_ranking(batch.uid, "ana", [[batch.responses[0].id], [batch.responses[1].id]])
    rm = list(train_rm(project, models, RewardConfig(max_steps=2, batch_size=4, warmup_steps=0)))
    assert rm[-1].status == "finished", rm[-1].message
    row["rm"] = "pass"

    # PPO two steps from the SFT adapter: rollouts sample the whole distribution at PPO's temperature.
    before = len(calls)
    ppo = list(train_ppo(project, models, PpoConfig(
        max_steps=2, init_adapter="sft-run-1", batch_size=4, micro_batch_size=2, max_new_tokens=6,
        heldout_fraction=0.34, learning_rate=1e-3)))
    assert ppo[-1].status == "finished", ppo[-1].message
    ppo_calls = calls[before:]
    for call in ppo_calls:
        assert_nothing_inherited(call["config"], PpoConfig().temperature, 0, 1.0, 1.0)
    row["ppo"] = "pass"

    *_, comparison = compare_policy(project, models, ppo[-1].run_id, answers_per_prompt=1)
    assert len(comparison.pairs) == 2
    row["did it work"] = "pass"

    # The rendered prompt is the same string on every path.
    messages = prompts.messages(prompt_ids[0])
    expected = chat_format.prompt_ids(tokenizer, messages)
    reply = "I'm sorry. Check the tracking link."
    sft_example = tokenize_example(tokenizer, [*messages, {"role": "assistant", "content": reply}])
    first_label = next(i for i, label in enumerate(sft_example.labels) if label != IGNORE)
    assert sft_example.input_ids[:first_label] == expected  # SFT learns the reply after exactly this prompt
    assert conversation_ids(tokenizer, messages, reply, 10_000)[:len(expected)] == expected  # reward model
    generation_prompts = {tuple(r) for call in calls for r in call["rows"]}
    for prompt_id in prompt_ids:
        assert tuple(chat_format.prompt_ids(tokenizer, prompts.messages(prompt_id))) in generation_prompts
    assert {tuple(r) for call in ppo_calls for r in call["rows"]} <= {
        tuple(chat_format.prompt_ids(tokenizer, prompts.messages(p))) for p in prompt_ids}

    # The exported reward model, scored through its own tokenizer and chat template, as a user would.
    # Exports are full precision: from a 4-bit base in the app they differ by the quantization error.
    exact = quantization == "none"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    [(run_id, folder)] = reward_runs(project)
    out = export_reward_model(project.base_model, folder, tmp_path / "rm-export")
    chats = [(prompts.messages(p), text) for p in prompt_ids[:3]
             for text in ("I'm sorry, I will help.", "the quick brown fox", reply)]
    with models.hold("scoring"):
        ours = load_reward_model(models, folder, f"rm-run-{run_id}").score(chats)
    their_tokenizer = AutoTokenizer.from_pretrained(out)
    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    # A template without a system role was trained with the system text folded in (reward_model.json says so).
    folds = "no system role" in chat_format.describe(tokenizer)
    texts = [their_tokenizer.apply_chat_template([*(chat_format.fold_system(m) if folds else m),
                                                  {"role": "assistant", "content": r}], tokenize=False)
             for m, r in chats]
    assert texts == [chat_format.render(tokenizer, [*m, {"role": "assistant", "content": r}]) for m, r in chats]
    batch = their_tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        theirs = classifier(**batch).logits[:, 0].tolist()
    difference = max(abs(a - b) for a, b in zip(ours, theirs))
    row["rm score diff"] = f"{difference:.1e}"
    assert difference < (1e-4 if exact else 0.5)
    row["export rm"] = "pass"

    # The exported policy in plain peft on a plain transformers base: the app's logits.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    policy_out = tmp_path / "policy-export"
    export_policy(project, ppo[-1].run_id, policy_out)
    source = [item for item in resolve(spec) if isinstance(item, ResolvedSource)][-1]
    base = AutoModelForCausalLM.from_pretrained(source.folder).eval()
    plain = PeftModel.from_pretrained(base, str(policy_out)).eval()
    ids = torch.tensor([expected])
    record = RunRecord(project, ppo[-1].run_id)
    with models.using(adapter_for("ppo", record.id), "comparing", record.artifact) as model:
        with torch.no_grad():
            app_logits = model(input_ids=ids).logits
    with torch.no_grad():
        logit_difference = float((plain(input_ids=ids).logits - app_logits).abs().max())
    row["policy logit diff"] = f"{logit_difference:.1e}"
    assert logit_difference < (1e-4 if exact else 1.0)
    # Its tokenizer prompts it with our text: the policy's prompt is the same string there too.
    policy_tokenizer = AutoTokenizer.from_pretrained(policy_out)
    asked = policy_tokenizer.apply_chat_template(chat_format.fold_system(messages) if folds else messages,
                                                 tokenize=False, add_generation_prompt=True)
    assert asked == chat_format.render(tokenizer, messages, add_generation_prompt=True)
    row["export policy"] = "pass"

    # DPO two steps on the reward model's own pairs, then "Did it work?" on the prompt it held out.
    dpo = list(train_dpo(project, models, DpoConfig(max_steps=2, batch_size=4, grad_accum=1, warmup_steps=0,
                                                    max_new_tokens=6, validation_fraction=0.34)))
    assert dpo[-1].status == "finished", dpo[-1].message
    *_, versus = compare_policy(project, models, dpo[-1].run_id, answers_per_prompt=1)
    assert versus.reference == "base" and versus.pairs
    row["dpo"] = "pass"

    # A job for another engine renders exactly our text with the tokenizer it ships (system folded
    # where the template has no system role), and what comes back fits the base.
    job = export_job(project, tmp_path / "job", "trl", "dpo")
    job_tokenizer = AutoTokenizer.from_pretrained(job.folder / "tokenizer")
    for line in (job.folder / "data" / "train.jsonl").read_text().splitlines():
        job_row = json.loads(line)
        assert job_tokenizer.apply_chat_template(job_row["prompt"] + job_row["chosen"], tokenize=False) == \
            chat_format.render(tokenizer, job_row["prompt"] + job_row["chosen"])
    imported = import_adapter(project, RunRecord(project, 1).artifact, "sft")
    assert RunRecord(project, imported).status == "finished"
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(source.folder),
                                       str(policy_out)).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    back = RunRecord(project, import_merged_model(project, tmp_path / "merged", "policy", rank=16))
    with models.using(adapter_for("policy", back.id), "comparing", back.artifact) as model:
        with torch.no_grad():
            back_logits = model(input_ids=ids).logits
    back_difference = float((back_logits - app_logits).abs().max())
    row["job + import"] = f"pass ({back_difference:.1e})"
    assert back_difference < (1e-3 if exact else 1.0)
    project.close()


def test_print_the_matrix():
    """The family x stage table of this session's runs (pytest -s shows it)."""
    if not MATRIX:
        pytest.skip("run with the matrix tests")
    columns = STAGES + ["rm score diff", "policy logit diff"]
    print("\n| family | " + " | ".join(columns) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for family, row in MATRIX.items():
        print(f"| {family} | " + " | ".join(row.get(c, "-") for c in columns) + " |")
