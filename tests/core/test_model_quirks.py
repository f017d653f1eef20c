"""Each family quirk that made a path wrong, one test apiece (families in tests/core/families.py):
generation defaults inherited from generation_config.json, Gemma 2's soft-capped logits, two
prompt formats for models without a template, pad == EOS in the exported reward model, and
templates with rules (no system role, strict alternation, a date from the clock)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GenerationMixin

from workbench.config import ModelSpec
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.response_generation import GenerationConfig, generate_responses
from workbench.data.sft_store import SftStore
from workbench.models.generation import SamplingSettings, chat_input_ids, stream_chat
from workbench.models.tiny import make_tiny_llama
from workbench.project import Project
from workbench.train.ppo import PpoConfig, _PpoTrainer
from workbench.train.reward import RewardConfig, load_reward_model, reward_runs, train_rm
from workbench.train.reward_export import export_reward_model
from workbench.train.runs import RunRecord, TrainingError
from workbench.train.sft import SftConfig, train_sft
from workbench.train.sft_data import IGNORE, tokenize_example

from .conftest import loaded
from .families import gemma2, gpt2, llama3, mistral, phi3, qwen2

ORDER = [{"role": "user", "content": "My order hasn't arrived. What should I do?"}]
# Everything a generation_config.json can set that changes which tokens are sampled, at values
# that change them a lot (Qwen2.5 ships repetition_penalty 1.05 and top_k 20; others min_p, ngrams).
QUIRKY_DEFAULTS = dict(do_sample=True, temperature=0.3, top_k=5, top_p=0.5, min_p=0.2, repetition_penalty=1.3,
                       no_repeat_ngram_size=2, typical_p=0.9)


def project_on(path, spec: ModelSpec, prompts: int = 4) -> Project:
    project = Project.create(path)
    project.set_base_model(spec)
    for i in range(prompts):
        PromptStore(project).add(f"My order number {i} hasn't arrived. What should I do?")
    return project


@pytest.fixture
def quirky_llama(tmp_path):
    """The tiny Llama whose generation_config.json sets every sampling default it can."""
    folder = make_tiny_llama(tmp_path / "quirky", init_std=0.5)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **QUIRKY_DEFAULTS}))
    return folder


@pytest.fixture
def merged_configs(monkeypatch):
    """The generation config each generate() call really ran with, after transformers filled in
    what the call left unset from the model's defaults."""
    seen = []
    original = GenerationMixin.generate

    def recording(self, *args, **kwargs):
        seen.append(self._prepare_generation_config(kwargs.get("generation_config"), **{
            k: v for k, v in kwargs.items() if k not in ("generation_config", "input_ids", "attention_mask",
                                                          "streamer", "stopping_criteria", "adapter_names")})[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    return seen


def test_no_generation_inherits_the_models_sampling_defaults(tmp_path, quirky_llama, merged_configs):
    models = loaded(quirky_llama)
    project = project_on(tmp_path / "p.rlhf", ModelSpec(kind="folder", location=str(quirky_llama)))
    list(generate_responses(project, models, [1], GenerationConfig(k=2, max_new_tokens=4, seed=0)))  # Rank page
    list(stream_chat(models.model, models.tokenizer, ORDER, SamplingSettings(max_new_tokens=4)))  # Try-it
    trainer = _PpoTrainer(project, models, PpoConfig(max_new_tokens=4), RunRecord.create(project, "ppo", {}),
                          "ppo-check", lambda prompts, texts: [0.0] * len(texts))
    with models.hold("test"):
        _, device = trainer.setup()
        trainer.generate([PromptStore(project).messages(1)] * 2, device)  # PPO's rollouts
    rank, try_it, ppo = merged_configs
    assert (rank.temperature, rank.top_p, rank.top_k, rank.repetition_penalty) == (0.8, 0.95, 50, 1.1)
    assert (try_it.temperature, try_it.top_p, try_it.top_k, try_it.repetition_penalty) == (0.7, 0.9, 50, 1.1)
    assert (ppo.temperature, ppo.top_p, ppo.top_k or 0, ppo.repetition_penalty) == (0.7, 1.0, 0, 1.0)
    for config in merged_configs:
        assert config.min_p is None and config.no_repeat_ngram_size == 0 and config.typical_p == 1.0


@pytest.mark.parametrize("family", [qwen2, gemma2], ids=["qwen2-defaults", "gemma2-softcap"])
def test_ppo_samples_exactly_the_distribution_its_log_probs_describe(family, tmp_path, monkeypatch):
    """The processed scores generate() sampled from, against the log-probs PPO keeps for those
    tokens: Qwen2.5's repetition_penalty and top_k, or Gemma 2's soft-capped logits, made them differ."""
    spec = family(tmp_path / "model")
    folder = spec.location
    config = json.loads((tmp_path / "model" / "generation_config.json").read_text())
    (tmp_path / "model" / "generation_config.json").write_text(json.dumps({**config, **QUIRKY_DEFAULTS}))
    models = loaded(folder)
    project = project_on(tmp_path / "p.rlhf", spec)
    scores = []
    original = GenerationMixin.generate

    def with_scores(self, *args, **kwargs):
        generation_config = kwargs.pop("generation_config", None)
        out = original(self, *args, generation_config=generation_config, output_scores=True,
                       return_dict_in_generate=True, **kwargs)
        scores.append(torch.stack(out.scores, 1))
        return out.sequences

    monkeypatch.setattr(GenerationMixin, "generate", with_scores)
    trainer = _PpoTrainer(project, models, PpoConfig(max_new_tokens=8), RunRecord.create(project, "ppo", {}),
                          "ppo-check", lambda prompts, texts: [0.0] * len(texts))
    with models.hold("test"):
        head, device = trainer.setup()
        torch.manual_seed(0)
        rollout = trainer.generate([PromptStore(project).messages(1), PromptStore(project).messages(2)], device)
        with torch.no_grad():
            kept, _, _ = trainer.heads(rollout.states, rollout, head)
            forward, _, _ = trainer.forward(rollout, head, "ppo-check")
    [sampled_from] = scores
    tokens = rollout.input_ids[:, rollout.prompt_length:]
    steps = sampled_from.shape[1]
    sampled = torch.log_softmax(sampled_from.float(), -1).gather(-1, tokens[:, :steps, None]).squeeze(-1)
    real = rollout.response_mask.bool()[:, :steps]
    assert real.sum() >= 4
    assert torch.allclose(kept[:, :steps][real], sampled[real], atol=1e-4)
    assert torch.allclose(forward[:, :steps][real], sampled[real], atol=1e-4)


def test_a_model_without_a_template_gets_one_prompt_format_on_every_path(tmp_path):
    """GPT-2-style base model: SFT learned replies after the very prompt generation asks with,
    and a reply ends with the model's own EOS, where generation stops."""
    spec = gpt2(tmp_path / "gpt2")
    models = loaded(spec.location)
    tokenizer = models.tokenizer
    example = tokenize_example(tokenizer, [*ORDER, {"role": "assistant", "content": "I'm sorry."}])
    first_label = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    assert example.input_ids[:first_label] == chat_input_ids(tokenizer, ORDER)[0].tolist()
    assert tokenizer.eos_token_id in [t for t in example.labels if t != IGNORE]


def exported_and_app_scores(tmp_path, spec: ModelSpec) -> tuple[list[float], list[float]]:
    """Scores of a 3-step reward model in the app and through its export, the export scored as a
    user would: its tokenizer's chat template, a padded batch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    models = loaded(spec.location)
    project = project_on(tmp_path / "p.rlhf", spec, prompts=6)
    rankings = RankingStore(project)
    for prompt_id in range(1, 7):
        batch = rankings.add_batch(prompt_id, ["I'm sorry, I will help.", "the quick brown fox"], [{}] * 2)
        rankings.save_ranking(batch.uid, "ana", [[batch.responses[0].id], [batch.responses[1].id]])
    assert list(train_rm(project, models, RewardConfig(max_steps=3, batch_size=4)))[-1].status == "finished"
    [(run_id, folder)] = reward_runs(project)
    out = export_reward_model(project.base_model, folder, tmp_path / "export")
    chats = [(PromptStore(project).messages(p), text) for p in (1, 2)
             for text in ("I'm sorry, I will help.", "the quick brown fox", "Check the tracking link.")]
    with models.hold("scoring"):
        ours = load_reward_model(models, folder, f"rm-run-{run_id}").score(chats)
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = [tokenizer.apply_chat_template([*m, {"role": "assistant", "content": r}], tokenize=False) for m, r in chats]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        theirs = AutoModelForSequenceClassification.from_pretrained(out)(**batch).logits[:, 0].tolist()
    project.close()
    return ours, theirs


@pytest.mark.parametrize("family", [phi3, llama3], ids=["phi3-ends-on-eos", "llama3-no-pad"])
def test_the_exported_reward_model_scores_as_the_app_where_pad_is_eos(family, tmp_path):
    """Phi-3's template ends every conversation on <|endoftext|>, its pad token; transformers'
    classifier read the score one token early there."""
    ours, theirs = exported_and_app_scores(tmp_path, family(tmp_path / "model"))
    assert theirs == pytest.approx(ours, abs=1e-4)


def test_a_template_without_a_system_role_gets_the_system_text_in_the_first_user_turn(tmp_path):
    """Gemma 2 refuses a system role ("System role not supported")."""
    from workbench.models.chat_format import render

    gemma = loaded(gemma2(tmp_path / "gemma").location).tokenizer
    text = render(gemma, [{"role": "system", "content": "Be kind."}, *ORDER], add_generation_prompt=True)
    assert text == ("<bos><start_of_turn>user\nBe kind.\n\nMy order hasn't arrived. What should I do?"
                    "<end_of_turn>\n<start_of_turn>model\n")


def test_a_template_that_prints_todays_date_gives_the_same_prompt_on_any_day(tmp_path):
    """Llama 3.x prints strftime_now's date unless given date_string."""
    from workbench.models.chat_format import render

    llama = loaded(llama3(tmp_path / "llama").location).tokenizer
    assert "Today Date: 26 Jul 2024" in render(llama, ORDER, add_generation_prompt=True)


def test_a_conversation_the_template_refuses_is_named_before_training(tmp_path):
    """Mistral demands strict user/assistant alternation: the run says which example breaks it."""
    spec = mistral(tmp_path / "mistral")
    project = project_on(tmp_path / "p.rlhf", spec)
    SftStore(project).add([*ORDER, {"role": "assistant", "content": "Sorry."}])
    bad = SftStore(project).add([*ORDER, *ORDER, {"role": "assistant", "content": "Sorry."}])
    with pytest.raises(TrainingError, match=f"SFT example {bad}: the model's chat template refuses .*alternate"):
        list(train_sft(project, loaded(spec.location), SftConfig(max_steps=1)))
