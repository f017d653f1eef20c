"""K responses per prompt from one batched call, streamed, saved as a batch, per-pane models."""

import pytest

from workbench.cli import main
from workbench.config import ModelSpec
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.response_generation import GenerationConfig, available_sources, generate_responses
from workbench.data.sft_store import SftStore
from workbench.errors import WorkbenchError
from workbench.models.generation import SamplingSettings, stream_batch
from workbench.project import Project
from workbench.train.sft import SftConfig, train_sft

SHORT = GenerationConfig(k=3, max_new_tokens=12, seed=7)


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    project = Project.create(tmp_path / "p")
    project.set_base_model(ModelSpec(kind="folder", location=str(tiny_model_dir)))
    for text in ("Where is my order?", "I want a refund.", "The box was damaged."):
        PromptStore(project).add(text)
    yield project
    project.close()


def test_each_prompt_streams_then_saves_one_batch_with_what_made_it(project, models):
    ids = [row.id for row in PromptStore(project).rows()]
    events = list(generate_responses(project, models, ids[:2], SHORT))
    saved = [e for e in events if e.saved]
    assert [e.prompt_id for e in saved] == ids[:2]
    streamed = [e for e in events if e.prompt_id == ids[0] and not e.saved]
    assert len(streamed) >= 1 and all(len(e.texts) == 3 for e in streamed)
    batch = RankingStore(project).latest_batch(ids[0])
    assert [r.position for r in batch.responses] == [0, 1, 2]
    assert [r.text for r in batch.responses] == list(saved[0].texts)
    generator = batch.responses[1].generator
    assert generator["source"] == "base" and generator["seed"] == 7 and generator["row"] == 1
    assert generator["max_new_tokens"] == 12 and generator["temperature"] == SHORT.temperature
    assert 0 < generator["tokens"] <= 12
    assert RankingStore(project).latest_batch(ids[2]) is None


def test_a_stop_mid_prompt_saves_nothing_half_made(project, models):
    ids = [row.id for row in PromptStore(project).rows()]
    stop = []
    for event in generate_responses(project, models, ids, GenerationConfig(k=2, max_new_tokens=400, seed=1),
                                    should_stop=lambda: bool(stop)):
        stop.append(True)  # the first streamed update asks for a stop
    assert project.counts()["responses"] == 0
    assert models.busy_with is None  # the model is free again


def test_rows_from_different_adapters_in_one_call_match_separate_calls(project, models):
    from peft import LoraConfig

    models.add_adapter("sft-run-1", LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    models.peft.eval()
    greedy = SamplingSettings(temperature=0, max_new_tokens=8)
    chat = [{"role": "user", "content": "Where is my order?"}]
    *_, mixed = stream_batch(models.peft, models.tokenizer, chat, 2, greedy, ["__base__", "sft-run-1"])
    with models.peft.disable_adapter():
        *_, base = stream_batch(models.peft, models.tokenizer, chat, 1, greedy)
    models.peft.set_adapter("sft-run-1")
    *_, adapted = stream_batch(models.peft, models.tokenizer, chat, 1, greedy)
    assert mixed.texts == (base.texts[0], adapted.texts[0])
    assert base.texts != adapted.texts


def test_panes_can_come_from_a_finished_sft_adapter(project, models):
    SftStore(project).add_many([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]] * 4)
    *_, last = train_sft(project, models, SftConfig(max_steps=2, batch_size=2, validation_fraction=0.0))
    assert last.status == "finished"
    assert list(available_sources(project)) == ["base", "sft-run-1"]
    config = GenerationConfig(k=4, sources=("base", "sft-run-1"), max_new_tokens=6, seed=3)
    prompt = PromptStore(project).rows()[0].id
    list(generate_responses(project, models, [prompt], config))
    batch = RankingStore(project).latest_batch(prompt)
    assert [r.generator["source"] for r in batch.responses] == ["base", "sft-run-1", "base", "sft-run-1"]
    with pytest.raises(WorkbenchError, match="No finished adapter named ppo-run-1"):
        next(generate_responses(project, models, [prompt], GenerationConfig(sources=("ppo-run-1",))))


def test_generation_settings_are_checked():
    with pytest.raises(ValueError, match="between 2 and 6"):
        GenerationConfig(k=7)
    assert GenerationConfig(k=5, sources=("a", "b")).pane_sources() == ["a", "b", "a", "b", "a"]


def test_cli_generate_fills_prompts_without_responses(project, capsys):
    path = project.path
    project.close()
    assert main(["generate", str(path), "--k", "2", "--limit", "2", "--set", "max_new_tokens=5"]) == 0
    assert "generated 2 responses for each of 2 prompts" in capsys.readouterr().out
    assert main(["generate", str(path), "--k", "2", "--set", "max_new_tokens=5"]) == 0  # only the third is left
    reopened = Project.open(path)
    assert [row.responses for row in PromptStore(reopened).rows()] == [2, 2, 2]
    reopened.close()
    assert main(["generate", str(path), "--source", "nope"]) == 1
    assert "No finished adapter named nope" in capsys.readouterr().err
    assert main(["generate", str(path), "--set", "temperature=hot"]) == 1
