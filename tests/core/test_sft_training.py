"""SFT on a tiny random model: it learns, it masks prompts, it resumes, it fails clearly."""

from itertools import islice

import pytest
import torch

from workbench.config import ModelSpec
from workbench.data.sft_store import SftStore
from workbench.models.loading import ModelSession
from workbench.project import Project
from workbench.train.loop import optimizer_and_schedule
from workbench.train.runs import RunControl, RunRecord, TrainingError, mark_interrupted
from workbench.train.sft import SftConfig, adapter_name, train_sft
from workbench.train.sft_data import IGNORE, tokenize_example

REPLY = "I'm sorry your order is late. Check the tracking link."
EXAMPLE = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "My order hasn't arrived."},
           {"role": "assistant", "content": REPLY}]
FAST = dict(learning_rate=5e-3, schedule="constant", warmup_steps=0, batch_size=2, eval_every=5,
            checkpoint_every=5, validation_fraction=0.0)


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "p")
    SftStore(project).add_many([EXAMPLE] * 4)
    yield project
    project.close()


def lora_weights(models: ModelSession, name: str) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in models.peft.named_parameters() if f".{name}." in key}


def test_only_reply_tokens_are_labelled(models):
    example = tokenize_example(models.tokenizer, EXAMPLE + [{"role": "user", "content": "ok"},
                                                             {"role": "assistant", "content": "Thanks"}])
    learned = models.tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])
    assert learned == f"{REPLY}<|im_end|>\nThanks<|im_end|>\n"
    cut = tokenize_example(models.tokenizer, EXAMPLE, max_length=10)
    assert len(cut.input_ids) == 10 and cut.trainable_tokens == 0  # the prompt fills it: nothing to learn


def test_a_few_steps_lower_the_loss_and_change_the_adapter(project, models):
    logs = list(train_sft(project, models, SftConfig(max_steps=20, **FAST)))
    losses = [log.metrics["loss/train"] for log in logs if log.metrics]
    assert losses[-1] < losses[0] - 0.5, losses
    record = RunRecord(project, logs[-1].run_id)
    assert record.status == "finished" and logs[-1].status == "finished"
    assert record.metrics()["loss/train"][0] == list(range(1, 21))
    # B starts at zero in LoRA, so a trained adapter has non-zero B everywhere it was applied.
    trained = lora_weights(models, adapter_name(record.id))
    assert trained and all(value.abs().sum() > 0 for key, value in trained.items() if "lora_B" in key)

    # The artifact is a plain peft adapter folder.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(models.spec.location)
    loaded = PeftModel.from_pretrained(base, str(record.artifact))
    batch = models.tokenizer("My order", return_tensors="pt")
    with torch.no_grad(), models.using(adapter_name(record.id), "test") as ours:
        assert torch.allclose(loaded(**batch).logits, ours(**batch).logits, atol=1e-5)
    with torch.no_grad(), models.using(None, "test") as plain:
        assert not torch.allclose(loaded(**batch).logits, plain(**batch).logits, atol=1e-3)


def test_stop_saves_a_checkpoint_and_resume_continues_from_it(project, models):
    control = RunControl()
    steps = train_sft(project, models, SftConfig(max_steps=12, **FAST), control)
    for log in steps:
        if log.step == 7 and log.metrics:
            control.stop()
    record = RunRecord(project, log.run_id)
    assert record.status == "stopped" and record.last_checkpoint()[0] == 7
    assert adapter_name(record.id) not in models.adapters  # the unfinished adapter left the base

    resumed = list(train_sft(project, models, resume_run_id=record.id))
    steps_trained = [log.step for log in resumed if log.metrics]
    assert steps_trained == [8, 9, 10, 11, 12]
    assert record.status == "finished" and record.metrics()["loss/train"][0] == list(range(1, 13))

    # The same run without interruption gives the same final loss: the order and state came back.
    straight = list(train_sft(project, models, SftConfig(max_steps=12, **FAST)))
    final = [log.metrics["loss/train"] for log in straight if log.metrics][-1]
    assert final == pytest.approx(record.metrics()["loss/train"][1][-1], rel=1e-4)


def test_a_killed_run_is_marked_and_resumes_from_its_last_checkpoint(project, models):
    # islice stands in for a kill: the generator is abandoned mid-run without its cleanup.
    run = train_sft(project, models, SftConfig(max_steps=12, **FAST))
    logs = list(islice(run, 9))
    run_id = logs[-1].run_id
    run.close()  # what the interpreter does on exit; the status stays "running" in the file
    assert RunRecord(project, run_id).status in ("running", "failed")
    project.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run_id,))
    assert mark_interrupted(project) == [run_id]
    record = RunRecord(project, run_id)
    assert record.status == "stopped" and "step 5" in record.message
    resumed = [log.step for log in train_sft(project, models, resume_run_id=run_id) if log.metrics]
    assert resumed[0] == 6 and resumed[-1] == 12


def test_a_non_finite_loss_fails_the_run_with_advice(project, models):
    with pytest.raises(TrainingError, match="learning rate"):
        list(train_sft(project, models, SftConfig(max_steps=5, **{**FAST, "learning_rate": 1e30})))
    record = RunRecord(project, 1)
    assert record.status == "failed" and "learning rate" in record.message
    assert models.peft is None and models.busy_with is None  # the base is clean and free again


def test_no_usable_examples_is_a_clear_error(tmp_path, models):
    project = Project.create(tmp_path / "empty")
    with pytest.raises(TrainingError, match="no usable SFT examples"):
        list(train_sft(project, models, SftConfig(max_steps=2)))


def test_pause_holds_the_run_until_resumed(project, models):
    import threading

    control = RunControl()
    statuses = []
    run = train_sft(project, models, SftConfig(max_steps=4, **FAST), control)
    for log in run:
        statuses.append(log.status)
        if log.step == 2 and log.metrics:
            control.pause()
            threading.Timer(0.3, control.resume).start()
    assert "paused" in statuses and statuses[-1] == "finished"


def test_gradient_checkpointing_trains_and_is_switched_off_afterwards(project, models):
    logs = list(train_sft(project, models, SftConfig(max_steps=6, gradient_checkpointing=True, **FAST)))
    losses = [log.metrics["loss/train"] for log in logs if log.metrics]
    assert losses[-1] < losses[0] and logs[-1].status == "finished"
    assert not models.model.is_gradient_checkpointing and not models.model.training


def test_a_half_written_checkpoint_is_never_used(project, models):
    control = RunControl()
    for log in train_sft(project, models, SftConfig(max_steps=12, **FAST), control):
        if log.step == 5 and log.metrics:
            control.stop()
    record = RunRecord(project, log.run_id)
    root = record.folder / "checkpoints"
    # A kill while writing step 7 leaves a .partial folder, or a folder without its marker.
    (root / "step-000007.partial").mkdir()
    (root / "step-000006").mkdir()
    project.execute("INSERT INTO checkpoints(run_id, step, path, created_at) VALUES (?, 6, ?, 0)",
                    (record.id, (root / "step-000006").relative_to(project.artifacts_dir).as_posix()))
    assert record.last_checkpoint()[0] == 5
    resumed = [log.step for log in train_sft(project, models, resume_run_id=record.id) if log.metrics]
    assert resumed[0] == 6 and not (root / "step-000007.partial").exists()


def test_text_rows_train_on_the_whole_text_and_empty_turns_teach_nothing(tmp_path, models):
    text_only = [{"role": "assistant", "content": REPLY}]
    example = tokenize_example(models.tokenizer, text_only)
    learned = models.tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])
    assert learned == f"{REPLY}<|im_end|>\n"
    empty_turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "},
                  {"role": "user", "content": "ok"}, {"role": "assistant", "content": "Hello there"}]
    example = tokenize_example(models.tokenizer, empty_turn)
    assert models.tokenizer.decode([t for t, label in zip(example.input_ids, example.labels)
                                    if label != IGNORE]) == "Hello there<|im_end|>\n"
    project = Project.create(tmp_path / "text")
    SftStore(project).add_many([text_only] * 4)
    assert list(train_sft(project, models, SftConfig(max_steps=2, **FAST)))[-1].status == "finished"


def test_a_new_run_never_reuses_a_folder_left_by_another_project(tmp_path, models):
    old = Project.create(tmp_path / "demo")
    SftStore(old).add_many([EXAMPLE] * 4)
    list(train_sft(old, models, SftConfig(max_steps=2, **FAST)))
    old.close()
    (tmp_path / "demo.rlhf").unlink()  # the user deletes the file but not its artifacts folder
    new = Project.create(tmp_path / "demo")
    fresh = [{"role": "user", "content": "New question"}, {"role": "assistant", "content": "New answer"}]
    SftStore(new).add_many([fresh] * 4)
    list(train_sft(new, models, SftConfig(max_steps=2, **FAST)))
    snapshot = (RunRecord(new, 1).folder / "examples.jsonl").read_text()
    assert "New answer" in snapshot and REPLY not in snapshot


def test_resume_keeps_texts_with_unicode_line_separators(tmp_path, models):
    project = Project.create(tmp_path / "u")
    odd = [{"role": "user", "content": "line\u2028break"}, {"role": "assistant", "content": "para\u2029graph\u0085"}]
    SftStore(project).add_many([odd] * 4)
    control = RunControl()
    for log in train_sft(project, models, SftConfig(max_steps=6, **FAST), control):
        if log.step == 5 and log.metrics:
            control.stop()
    assert list(train_sft(project, models, resume_run_id=log.run_id))[-1].status == "finished"


def test_a_busy_model_refuses_a_run_before_any_record_changes(project, models):
    from workbench.errors import ModelLoadError

    with models.hold("answering in Try it"):
        with pytest.raises(ModelLoadError, match="busy"):
            list(train_sft(project, models, SftConfig(max_steps=2, **FAST)))
    assert project.runs() == []


def test_resume_refuses_finished_runs_and_another_base(project, models, tmp_path):
    from workbench.models.tiny import make_tiny_llama

    finished = list(train_sft(project, models, SftConfig(max_steps=2, **FAST)))[-1].run_id
    with pytest.raises(TrainingError, match="is finished"):
        list(train_sft(project, models, resume_run_id=finished))
    assert RunRecord(project, finished).status == "finished"
    control = RunControl()
    control.stop()
    stopped = list(train_sft(project, models, SftConfig(max_steps=4, **FAST), control))[-1].run_id
    other = ModelSession()
    for _ in other.load(ModelSpec(kind="folder", location=str(make_tiny_llama(tmp_path / "other", seed=1)))):
        pass
    with pytest.raises(TrainingError, match="load that model"):
        list(train_sft(project, other, resume_run_id=stopped))
    assert RunRecord(project, stopped).status == "stopped"


def test_a_run_another_process_is_training_is_neither_marked_nor_resumed(project, models):
    from workbench.train.runs import RunLock

    control = RunControl()
    control.stop()
    run_id = list(train_sft(project, models, SftConfig(max_steps=4, **FAST), control))[-1].run_id
    record = RunRecord(project, run_id)
    record.set_status("running")  # as another process training it would have it
    other_process = RunLock(record)
    assert other_process.acquire()
    try:
        assert mark_interrupted(project) == [] and record.status == "running"
        record.set_status("stopped")
        with pytest.raises(TrainingError, match="another process"):
            list(train_sft(project, models, resume_run_id=run_id))
    finally:
        other_process.release()
    record.set_status("running")
    assert mark_interrupted(project) == [run_id]  # once the lock is gone, it was cut off


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_every_schedule_warms_up_from_zero(schedule):
    """transformers' plain "constant" schedule ignores warm-up steps; ours must not."""
    config = SftConfig(learning_rate=1e-3, warmup_steps=4, schedule=schedule)
    optimizer, scheduler = optimizer_and_schedule([torch.nn.Parameter(torch.zeros(1))], config, total_updates=20)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert (rates[7] == pytest.approx(1e-3)) == (schedule == "constant")
