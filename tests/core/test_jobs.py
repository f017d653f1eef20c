"""Exported jobs and imports, without running another engine: every OpenRLHF flag an export
writes exists in the pinned version's parser and its data loaders read the exported rows; our
settings reach the engine's names (and those without one are listed); adapters and merged
models from elsewhere are checked against the base; bad input gets a clear error."""

import json
import re

import pytest
import torch

from tests.core.engines import openrlhf_parser, openrlhf_preprocess
from tests.core.test_jobs_trl import project_with_sft
from tests.core.test_reward import FAST, synthetic_project
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.jobs.export_job import export_job
from workbench.jobs.import_run import import_adapter, import_merged_model
from workbench.jobs.openrlhf_job import OPENRLHF_MODULES, flag_args
from workbench.project import Project
from workbench.train.reward import RewardConfig, train_rm
from workbench.train.runs import RunControl, RunRecord, finished_adapters
from workbench.train.sft import SftConfig, train_sft

PARSERS = {"sft": "train_sft", "rm": "train_rm", "dpo": "train_dpo", "ppo": "train_ppo_ray"}
DATASETS = {"sft": "sft_dataset", "rm": "reward_dataset", "dpo": "reward_dataset", "ppo": "prompts_dataset"}


@pytest.fixture
def ranked_project(tmp_path, tiny_model_dir, models):
    """SFT examples, ranked prompts and a finished reward model (for the ppo stage)."""
    project = project_with_sft(tmp_path, tiny_model_dir)
    logs = list(train_rm(project, models, RewardConfig(**FAST, max_steps=2), RunControl()))
    assert logs[-1].status == "finished"
    yield project
    project.close()


def run_sh_flags(folder, module: str) -> list[str]:
    """The flags run.sh gives OpenRLHF's trainer (those after its module; before it come the launcher's)."""
    return re.findall(r"(?<![\w$])--([a-z_][\w.]*)", (folder / "run.sh").read_text().split(module, 1)[1])


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_every_openrlhf_flag_exists_in_the_pinned_parser_and_its_loader_reads_the_rows(
        stage, ranked_project, tmp_path, models):
    project = ranked_project
    project.set_meta("ppo_settings", {"advantage": "rloo", "group_size": 4, "batch_size": 8, "kl_in_loss": True})
    job = export_job(project, tmp_path / "job", "openrlhf", stage, ["lora_rank=8", "target_modules=q_proj,v_proj"])
    spec = json.loads((job.folder / "job.json").read_text())
    parser = openrlhf_parser(PARSERS[stage])
    known = {option.lstrip("-") for option in parser._option_string_actions}
    assert set(run_sh_flags(job.folder, OPENRLHF_MODULES[stage])) - known == set()  # placement and model flags in run.sh too
    args = vars(parser.parse_args(flag_args(spec["settings"]) + ["--model.model_name_or_path" if stage != "ppo"
                                                                  else "--actor.model_name_or_path", "base"]))
    assert args["ds.lora.rank"] == 8 and args["ds.lora.target_modules"] == ["q_proj", "v_proj"]
    assert args["data.apply_chat_template"] is True
    if stage == "ppo":
        assert args["algo.advantage.estimator"] == "rloo" and args["rollout.n_samples_per_prompt"] == 4
        assert args["algo.kl.use_loss"] is True and args["reward.model_name_or_path"].endswith("reward_model")
        assert (job.folder / "reward_model" / "config.json").is_file()
    assert f"-m {OPENRLHF_MODULES[stage]}" in (job.folder / "run.sh").read_text().replace("--module", "-m")

    # OpenRLHF's own preprocessing, with our tokenizer and its template, on every exported row
    preprocess = openrlhf_preprocess(DATASETS[stage])
    template = models.tokenizer.apply_chat_template
    rows = [json.loads(line) for line in (job.folder / "data" / "train.jsonl").read_text().splitlines()]
    assert rows and len(rows) == spec["data"]["train_rows"]
    for row in rows:
        if stage == "sft":
            prompt, response = preprocess(row, input_key=args["data.input_key"], output_key=args["data.output_key"],
                                          apply_chat_template=template)
            assert row["completion"][0]["content"] in response and prompt
        elif stage == "ppo":
            prompt, _ = preprocess(row, input_key=args["data.input_key"], apply_chat_template=template)
            assert row["prompt"][-1]["content"] in prompt
        else:
            prompt, chosen, rejected, _ = preprocess(
                row, prompt_key=args["data.prompt_key"], chosen_key=args["data.chosen_key"],
                rejected_key=args["data.rejected_key"], apply_chat_template=template, is_dpo=stage == "dpo")
            assert row["chosen"][0]["content"] in chosen and row["rejected"][0]["content"] in rejected


def test_settings_reach_trl_names_and_the_unmapped_are_listed(ranked_project, tmp_path):
    project = ranked_project
    project.set_meta("rm_settings", {"learning_rate": 3e-4, "rank_margin": 0.5, "head_lr_scale": 5.0})
    job = export_job(project, tmp_path / "rm", "trl", "rm", ["schedule=linear", "grad_accum=2"])
    config = (job.folder / "config.yaml").read_text()
    for line in ("learning_rate: 0.0003", 'lr_scheduler_type: "linear"', "gradient_accumulation_steps: 2",
                 'lora_task_type: "SEQ_CLS"', 'chat_template_path: "tokenizer/chat_template.jinja"'):
        assert line in config
    unmapped = {u["setting"]: u for u in json.loads((job.folder / "job.json").read_text())["unmapped"]}
    assert set(unmapped) == {"head_lr_scale"} and unmapped["head_lr_scale"]["value"] == 5.0
    row = json.loads((job.folder / "data" / "train.jsonl").read_text().splitlines()[0])
    assert "margin" in row  # rank_margin: both engines subtract a margin column
    readme = (job.folder / "README.md").read_text()
    assert "head_lr_scale" in readme and "--kind adapter --as rm" in readme and "GPUS=8" in readme
    from accelerate.commands.config.config_args import ClusterConfig

    launches = {p.stem: ClusterConfig.from_yaml_file(str(p)) for p in (job.folder / "accelerate").iterdir()}
    assert {name: str(c.distributed_type).split(".")[-1] for name, c in launches.items()} == {
        "ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}  # accelerate reads them
    assert launches["zero3"].deepspeed_config["zero_stage"] == 3 and launches["fsdp"].fsdp_config["fsdp_version"] == 2
    ppo = export_job(project, tmp_path / "ppo", "trl", "ppo")  # PPO has left TRL: RLOO
    assert "trl.scripts.rloo" in (ppo.folder / "run.sh").read_text()
    assert "advantage" in {u["setting"] for u in ppo.unmapped}


def test_bad_exports_are_clear_errors(tmp_path, tiny_model_dir, ranked_project, capsys):
    empty = Project.create(tmp_path / "empty")
    from workbench.config import ModelSpec

    empty.set_base_model(ModelSpec(kind="folder", location=str(tiny_model_dir)))
    with pytest.raises(WorkbenchError, match="no preference pairs"):
        export_job(empty, tmp_path / "a", "trl", "dpo")
    with pytest.raises(WorkbenchError, match="no usable SFT examples"):
        export_job(empty, tmp_path / "a", "openrlhf", "sft")
    with pytest.raises(WorkbenchError, match="no prompts"):
        export_job(empty, tmp_path / "a", "openrlhf", "ppo")
    empty.close()
    unrewarded = synthetic_project(tmp_path / "unrewarded", tiny_model_dir, prompts=4)
    with pytest.raises(WorkbenchError, match="needs a reward model"):
        export_job(unrewarded, tmp_path / "a", "trl", "ppo")
    unrewarded.close()
    with pytest.raises(WorkbenchError, match="unknown stage"):
        export_job(ranked_project, tmp_path / "a", "trl", "kto")
    with pytest.raises(WorkbenchError, match="no simpo loss|no SimPO"):
        export_job(ranked_project, tmp_path / "a", "trl", "dpo", ["loss_type=simpo"])
    with pytest.raises(WorkbenchError, match="no SimPO"):
        export_job(ranked_project, tmp_path / "a", "openrlhf", "dpo", ["loss_type=simpo"])
    with pytest.raises(WorkbenchError, match="learning_rat"):
        export_job(ranked_project, tmp_path / "a", "trl", "sft", ["learning_rat=1"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.partial").exists()
    path = ranked_project.path
    with pytest.raises(SystemExit) as exit:
        main(["export", str(path), str(tmp_path / "b"), "--kind", "job", "--engine", "trl", "--stage", "kto"])
    assert exit.value.code == 2
    assert "invalid choice: 'kto'" in capsys.readouterr().err
    assert main(["export", str(path), str(tmp_path / "b"), "--kind", "job", "--engine", "trl"]) == 1
    assert "needs --engine trl|openrlhf and --stage" in capsys.readouterr().err
    assert main(["export", str(path), str(tmp_path / "b"), "--kind", "sft", "--stage", "sft"]) == 1
    assert "apply to --kind job only" in capsys.readouterr().err


def test_an_adapter_for_another_base_or_a_pickle_is_refused(tmp_path, ranked_project, models):
    project = ranked_project
    (run_id, folder), = [run for run in finished_adapters(project, "rm")]
    with pytest.raises(WorkbenchError, match="reward head"):
        import_adapter(project, folder, "policy")  # our own reward model's files, but no score key in peft form
    # an adapter whose layers do not fit the base: the shapes name the layer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=models.model.config.vocab_size, hidden_size=48, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4)
    wrong = get_peft_model(AutoModelForCausalLM.from_config(config), LoraConfig(r=4, target_modules=["q_proj"]))
    wrong.save_pretrained(tmp_path / "wrong")
    with pytest.raises(WorkbenchError, match="trained on another base"):
        import_adapter(project, tmp_path / "wrong", "sft")
    (tmp_path / "wrong" / "adapter_model.safetensors").rename(tmp_path / "wrong" / "adapter_model.bin")
    with pytest.raises(WorkbenchError, match="only safetensors"):
        import_adapter(project, tmp_path / "wrong", "sft")
    with pytest.raises(WorkbenchError, match="no adapter_config.json"):
        import_adapter(project, tmp_path, "sft")
    runs_before = len(project.runs())
    assert main(["import", str(project.path), str(tmp_path / "wrong"), "--kind", "adapter", "--as", "sft"]) == 1
    assert len(project.runs()) == runs_before  # nothing was recorded


def test_a_merged_model_comes_back_as_the_lora_it_was_merged_from(tmp_path, ranked_project, models, tiny_model_dir):
    project = ranked_project
    logs = list(train_sft(project, models, SftConfig(max_steps=2, learning_rate=5e-3, warmup_steps=0, lora_rank=4),
                          RunControl()))
    assert logs[-1].status == "finished"
    (_, adapter), = finished_adapters(project, "sft")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    merged = merged.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    run_id = import_merged_model(project, tmp_path / "merged", "sft", rank=8)
    record = RunRecord(project, run_id)
    assert record.kind == "sft" and record.status == "finished" and record.config["svd_relative_error"] < 1e-3
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    models.load_adapter(f"sft-run-{run_id}", record.artifact)
    models.peft.set_adapter(f"sft-run-{run_id}")
    with torch.no_grad():
        ours = models.peft(input_ids=ids).logits
        theirs = merged(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-4)  # the imported LoRA reproduces the merged model
    with pytest.raises(WorkbenchError, match="equal the project's base"):
        import_merged_model(project, tiny_model_dir, "sft")
