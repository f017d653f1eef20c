"""TensorBoard event files beside each run: one scalar series per metric, the steps a resumed run
trains again are not doubled, and a writer that fails never stops training."""

from itertools import islice

import pytest

from workbench.train.runs import RunRecord, mark_interrupted
from workbench.train.sft import SftConfig, train_sft
from workbench.train.tensorboard_log import log_folder

from .test_sft_training import FAST, project  # noqa: F401 - the fixture: four SFT examples

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(record: RunRecord) -> dict[str, list[tuple[int, float]]]:
    accumulator = event_accumulator.EventAccumulator(str(log_folder(record)))
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_every_metric_of_a_run_is_in_its_event_file(project, models):
    logs = list(train_sft(project, models, SftConfig(max_steps=6, **{**FAST, "validation_fraction": 0.5})))
    record = RunRecord(project, logs[-1].run_id)
    written, recorded = scalars(record), record.metrics()
    assert set(written) == set(recorded) and "loss/train" in written and "loss/validation" in written
    for key, (steps, values) in recorded.items():
        assert [step for step, _ in written[key]] == steps
        assert [value for _, value in written[key]] == pytest.approx(values)


def test_a_resumed_run_has_each_step_once(project, models):
    run = train_sft(project, models, SftConfig(max_steps=12, **FAST))
    logs = list(islice(run, 9))  # killed after step 8; the last checkpoint is step 5
    run.close()
    run_id = logs[-1].run_id
    project.execute("UPDATE runs SET status = 'running' WHERE id = ?", (run_id,))
    mark_interrupted(project)
    list(train_sft(project, models, resume_run_id=run_id))
    record = RunRecord(project, run_id)
    steps = [step for step, _ in scalars(record)["loss/train"]]
    assert steps == list(range(1, 13))  # steps 6-8 of the killed try were purged, not shown twice
    assert [v for _, v in scalars(record)["loss/train"]] == pytest.approx(record.metrics()["loss/train"][1])


def test_a_failing_writer_leaves_training_alone_and_says_so(project, models, monkeypatch):
    import torch.utils.tensorboard as tensorboard

    class FullDisk:
        def __init__(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensorboard, "SummaryWriter", FullDisk)
    logs = list(train_sft(project, models, SftConfig(max_steps=3, **FAST)))
    record = RunRecord(project, logs[-1].run_id)
    assert record.status == "finished"
    assert any("No TensorBoard event files" in message and "No space left" in message
               for _, level, message in record.logs() if level == "warning")
