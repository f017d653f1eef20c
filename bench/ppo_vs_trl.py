"""Our PPO (workbench/train/ppo.py) against TRL's last PPO (trl 1.12.0), same model and settings;
with --peer rloo, our RLOO (advantage=rloo) against the current TRL's RLOOTrainer (trl 1.16.0).

    .venv/bin/python bench/ppo_vs_trl.py [--peer ppo|rloo] [--model demo|tiny|llama-3.2-1b|llama-2-7b] [--steps 4]
        [--batch-size 8] [--group-size 4] [--response-length 48] [--ppo-epochs 1] [--device cpu|cuda]
        [--quantization none|4bit] [--threads N] [--scratch DIR] [--trl-python PYTHON]

--peer rloo: both sample --group-size answers to each of batch-size / group-size prompts per step
and use the leave-one-out baseline, no value model; one optimizer step per batch in two passes
(ours: one minibatch of two micro-batches; TRL: gradient accumulation 2); the KL penalty in the
reward; TRL runs in bench/.trl-dpo-venv (bench/dpo_vs_trl.py makes it). Goals there: at least
1.5x RLOOTrainer's samples/s, at most 0.5x its peak memory.

--model llama-3.2-1b / llama-2-7b: random weights at those published shapes (bench/ppo_memory.py
writes them once to bench/.cache), with the tiny model's prompts and tokenizer; for speed and
memory on CUDA, where the issue asks for 1B- and 7B-class shapes. Random weights rarely sample
EOS, so every response is full length for both trainers.

One invocation does everything, in four child processes, so that no run's memory counts for another:
1. TRL's environment: bench/.trl-venv is made on first use (python -m venv) and gets torch
   2.13.0, transformers 5.23.0, peft 0.21.2 and trl 1.12.0 (bitsandbytes too for --quantization
   4bit); skipped when it already has trl 1.12.0, or when --trl-python names an interpreter that
   has it (a machine without internet: bench/gpu/run.sh installs carried wheels).
2. Preparation (repo .venv): a scratch project with the model and its prompts (the demo project's
   24 prompts, or 16 short ones for the tiny model); a reward model trained for 2 steps on
   synthetic rankings and exported as an `AutoModelForSequenceClassification` folder, so both
   trainers score with the same weights; the prompts tokenized with the chat template (the
   tokens our trainer feeds the policy) for TRL; everything written to plan.json.
3. Ours (repo .venv): `train_ppo(...)` with the project's reward-model run.
4. TRL (bench/.trl-venv): bench/trl_ppo_worker.py.

Settings shared by both: batch size, response length, PPO epochs (1 unless --ppo-epochs), 2 minibatches (a forward pass
over a whole minibatch, one optimizer step each), LoRA r=16 alpha=32 on all linear layers with
dropout 0, sampling at temperature 1.0 without top-p / top-k, learning rate 2e-5 constant, a
fixed KL coefficient 0.05 (k1), a missing-EOS penalty of 1.0, no gradient checkpointing, seed 0.
TRL's value model is its own full copy of the base, trained in full; ours is a head on the
policy's hidden state. That difference is how each works, and is part of what is measured.

Measured, per process:
- samples/s: steps x batch size divided by the training loop's wall time, without loading or
  setup. Ours: from the "PPO for N steps" StepLog (yielded after the policy, reference, reward
  model and value head are set up) to the StepLog of the last step (before the final adapter
  save; TRL saves nothing). TRL: the `trainer.train()` call. Also shown without the first
  step, which carries one-time costs in both.
- peak memory: CPU, the process's peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, so
  imports and loading included); CUDA, `torch.cuda.max_memory_allocated()`.
--threads N sets OMP_NUM_THREADS for every child, so both trainers use the same number of CPU
threads (torch's default is one per core). On a machine where other work is running, fewer threads
than cores avoids OpenMP threads spinning against each other, which slows small models many times.
Then the ratios ours/TRL and whether the goals are met: at least 2x TRL's samples/s, at most
0.5x TRL's peak memory. Scores, KL and response lengths are printed to show that both runs did
real work; the scores are the same reward weights on the same kind of text, but not comparable
sample by sample (different random samples; TRL scores the response's raw tokens up to EOS,
ours the decoded reply put through the chat template).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRL_VENV = REPO / "bench" / ".trl-venv"
TRL_WORKER = REPO / "bench" / "trl_ppo_worker.py"
# Exactly these: an unpinned torch would pull a CUDA build of several GB on a CPU machine; the
# others are the repo's own versions, so only the trainers differ. trl 1.12.0 is the last with PPO.
TRL_PINS = ["torch==2.13.0", "transformers==5.23.0", "peft==0.21.2", "trl==1.12.0"]
BITSANDBYTES_PIN = "bitsandbytes==0.50.2"
SPEED_GOAL, MEMORY_GOAL = 2.0, 0.5
RLOO_SPEED_GOAL = 1.5
TRL_RLOO_WORKER = REPO / "bench" / "trl_rloo_worker.py"
MAX_PROMPT_TOKENS = 256  # PpoConfig.max_length: prompts are cut to their last 256 tokens for both

KIND = ["I'm sorry your order is late.", "Check the tracking link, please.", "I will send a replacement.",
        "You have 30 days to return them for free."]
RUDE = ["the quick brown fox", "jumps over the lazy dog", "0123456789 system user", "brown dog quick lazy"]
TINY_PROMPTS = [
    "My order hasn't arrived. What should I do?", "How do I return shoes that don't fit?",
    "The package was damaged.", "Where is my tracking link?", "Can I change my delivery address?",
    "My order number is 1234.", "I was charged twice.", "Do you ship abroad?",
    "How long does a refund take?", "The box was empty.", "Can I cancel my order?",
    "I got the wrong size.", "Is there a discount code?", "How do I reach support?",
    "My parcel is late again.", "Can you send a replacement?",
]


# ---- 1. TRL's environment ---------------------------------------------------------------------

def trl_python() -> Path:
    return Path(os.environ.get("TRL_PYTHON") or TRL_VENV / "bin" / "python")


def ensure_trl_venv(quantization: str) -> None:
    """Make bench/.trl-venv with TRL's pinned stack unless it is already there (or TRL_PYTHON,
    set from --trl-python, names an interpreter that has it)."""
    python = trl_python()
    if os.environ.get("TRL_PYTHON"):
        found = subprocess.run([str(python), "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
        if found.returncode or found.stdout.strip() != "1.12.0":
            sys.exit(f"--trl-python {python} has no trl 1.12.0 ({(found.stdout or found.stderr).strip()[-200:]})")
        print(f"TRL environment: {python} (trl 1.12.0).")
        return
    wanted = list(TRL_PINS) + ([BITSANDBYTES_PIN] if quantization == "4bit" else [])
    check = ("import importlib.metadata as m, sys; v = m.version('trl'); "
             + ("import bitsandbytes; " if quantization == "4bit" else "")
             + "sys.exit(v != '1.12.0')")
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
        print(f"TRL environment: {TRL_VENV} already has trl 1.12.0.")
        return
    if not python.exists():
        print(f"TRL environment: creating {TRL_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    print(f"TRL environment: pip install {' '.join(wanted)} (a few minutes, once) ...", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", *wanted], check=True)


# ---- 2. preparation (repo .venv, child process) ---------------------------------------------------

def model_spec(plan: dict, location: str = ""):
    from workbench.config import ModelSpec

    quantization = "nf4" if plan["quantization"] == "4bit" else "none"
    kind = "demo" if plan["model"] == "demo" else "folder"
    return ModelSpec(kind=kind, location=location, device=plan["device"], quantization=quantization)


def load_session(spec):
    from workbench.models.loading import ModelSession

    session = ModelSession()
    for _ in session.load(spec):
        pass
    return session


def prepare(plan_path: Path) -> None:
    """Scratch project, reward model (trained + exported), tokenized prompts -> plan.json."""
    import shutil

    from workbench.data.prompts import PromptStore
    from workbench.data.rankings import RankingStore
    from workbench.demo_project import ensure_demo_project
    from workbench.models.generation import chat_input_ids
    from workbench.models.sources import ResolvedSource, resolve
    from workbench.models.tiny import make_tiny_llama
    from workbench.paths import DEMO_PROJECT_SEED
    from workbench.project import Project
    from workbench.train.ppo import split_prompts
    from workbench.train.reward import RewardConfig, reward_runs, train_rm
    from workbench.train.reward_export import export_reward_model

    plan = json.loads(plan_path.read_text())
    scratch = Path(plan["scratch"])
    if plan["model"] == "demo":
        # The demo project made fresh from its committed seed, inside the scratch folder: the
        # same prompts as the app's demo project, without opening (or changing) the user's copy.
        seed = scratch / DEMO_PROJECT_SEED.name
        shutil.copyfile(DEMO_PROJECT_SEED, seed)
        project = Project.open(ensure_demo_project(seed))
        project.set_base_model(model_spec(plan))
    else:
        if plan["model"] == "tiny":
            folder = make_tiny_llama(scratch / "tiny-model", init_std=0.5)
        else:
            from ppo_memory import random_model  # bench/ppo_memory.py, beside this file

            folder = random_model(plan["model"])
        project = Project.create(scratch / "bench")
        project.set_base_model(model_spec(plan, str(folder)))
        PromptStore(project).add_many({"messages": text} for text in TINY_PROMPTS)

    # Synthetic rankings (the polite reply always first) so a reward model can be trained.
    store = RankingStore(project)
    for i, row in enumerate(PromptStore(project).rows()):
        texts = [KIND[i % len(KIND)], RUDE[i % len(RUDE)], RUDE[(i + 1) % len(RUDE)]]
        batch = store.add_batch(row.id, texts, [{"source": "base"}] * len(texts))
        polite = next(r.id for r in batch.responses if r.text == texts[0])
        store.save_ranking(batch.uid, "bench", [[polite], [r.id for r in batch.responses if r.id != polite]])

    print("Training a reward model for 2 steps (the same weights score both trainers)...", flush=True)
    models = load_session(project.base_model)
    *_, last = train_rm(project, models, RewardConfig(max_steps=2, batch_size=4, learning_rate=1e-4,
                                                      warmup_steps=0, schedule="constant"))
    assert last.status == "finished", last
    run_id, adapter_folder = reward_runs(project)[0]
    print("Exporting it as an AutoModelForSequenceClassification for TRL...", flush=True)
    # In the dtype TRL loads it in: bf16 on CUDA (a 7B export in fp32 would be 27 GB on disk).
    reward_folder = export_reward_model(project.base_model, adapter_folder, scratch / "reward-model",
                                        dtype="bfloat16" if plan["device"] == "cuda" else "float32")
    base_folder = [item for item in resolve(project.base_model) if isinstance(item, ResolvedSource)][-1].folder

    # The exact prompt tokens our trainer generates from: chat template + generation prompt.
    prompt_store = PromptStore(project)
    train_ids, _ = split_prompts(project, 0.0)
    prompt_ids = [chat_input_ids(models.tokenizer, prompt_store.messages(pid))[0][-MAX_PROMPT_TOKENS:].tolist()
                  for pid in train_ids]
    plan.update(project=str(project.path), base_folder=str(base_folder), reward_folder=str(reward_folder),
                reward_adapter=f"rm-run-{run_id}", prompt_ids=prompt_ids,
                prompt_messages=[prompt_store.messages(pid) for pid in train_ids])
    project.close()
    plan_path.write_text(json.dumps(plan, indent=2))
    print(f"Prepared: {len(prompt_ids)} prompts, base {base_folder}, reward model {reward_folder}.")


# ---- 3. our PPO (repo .venv, child process) -----------------------------------------------------

def run_ours(plan_path: Path, result_path: Path) -> None:
    import resource

    import torch

    from workbench.project import Project
    from workbench.train.ppo import PpoConfig, train_ppo

    plan = json.loads(plan_path.read_text())
    cuda = plan["device"] == "cuda"
    project = Project.open(plan["project"])
    models = load_session(project.base_model)
    rloo = plan["peer"] == "rloo"
    # PPO: 2 minibatches of one pass each, as TRL's PPO; RLOO: one minibatch in two passes, as RLOOTrainer
    config = PpoConfig(
        advantage="rloo" if rloo else "gae", group_size=plan["group_size"] if rloo else 4,
        batch_size=plan["batch_size"], num_minibatches=1 if rloo else plan["num_minibatches"],
        micro_batch_size=plan["batch_size"] // 2,
        ppo_epochs=plan["ppo_epochs"], max_steps=plan["steps"], max_new_tokens=plan["response_length"],
        temperature=plan["temperature"],
        lora_rank=plan["lora_rank"], lora_alpha=plan["lora_alpha"], lora_dropout=plan["lora_dropout"],
        target_modules="all-linear", learning_rate=plan["learning_rate"], schedule="constant", warmup_steps=0,
        kl_coef=plan["kl_coef"], kl_target=0.0,  # 0: a fixed beta, as TRL's
        missing_eos_penalty=plan["missing_eos_penalty"],
        heldout_fraction=0.0,  # train on every prompt, as TRL does
        checkpoint_every=10**6, reward_model=plan["reward_adapter"], seed=plan["seed"],
        max_length=MAX_PROMPT_TOKENS,
    )
    started = None
    step_ends, metrics = [], []
    for log in train_ppo(project, models, config):
        if started is None and log.message.startswith("PPO for"):
            if cuda:
                torch.cuda.synchronize()
            started = time.monotonic()
        elif log.metrics:
            step_ends.append(time.monotonic())
            metrics.append(log.metrics)
            print(f"step {log.step}/{plan['steps']}: {step_ends[-1] - ([started] + step_ends)[-2]:.1f} s, "
                  f"score {log.metrics['objective/score']:.3f}, kl {log.metrics['objective/kl']:.3f}, "
                  f"length {log.metrics['response/length']:.1f}", flush=True)
    assert started is not None and len(metrics) == plan["steps"], "the PPO run did not complete"
    trainable = sum(p.numel() for p in models.peft.parameters() if p.requires_grad)
    project.close()

    def mean_of(key):
        return sum(m[key] for m in metrics) / len(metrics)

    # objective/score is the reward model's raw score; TRL logs its score after the missing-EOS
    # penalty, so that is shown for both (the penalty hits the responses without EOS).
    penalised = sum(m["objective/score"] - plan["missing_eos_penalty"] * (1 - m["response/eos_rate"])
                    for m in metrics) / len(metrics)

    result = {
        "loop_s": step_ends[-1] - started,
        "samples": plan["steps"] * plan["batch_size"],
        "step_s": [b - a for a, b in zip([started] + step_ends, step_ends)],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "trainable_params": trainable + (0 if rloo else models.model.config.hidden_size + 1),  # + the value head
        "threads": torch.get_num_threads(),
        "metrics": {"score": penalised, "raw_score": mean_of("objective/score"), "kl": mean_of("objective/kl"),
                    "response_length": mean_of("response/length"), "eos_rate": mean_of("response/eos_rate"),
                    "loss/policy": mean_of("loss/policy"),
                    "loss/value": None if rloo else mean_of("loss/value")},
        "phases_s": {key: mean_of(f"time/{key}_s") for key in ("generate", "logprobs", "score", "train")},
    }
    result_path.write_text(json.dumps(result, indent=2))


# ---- the parent: run the children, print the table ----------------------------------------------

def run_child(label: str, command: list[str], log_path: Path, threads: int | None) -> None:
    """Run one child with its output shown (prefixed) and kept in `log_path`; stop on failure."""
    print(f"\n== {label} ==", flush=True)
    # The repo first; an inherited PYTHONPATH (carried wheels on a GPU machine) after it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_path, "w", encoding="utf-8") as log:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
        for line in child.stdout:
            log.write(line)
            print(f"  [{label}] {line}", end="", flush=True)
        child.wait()
    if child.returncode != 0:
        sys.exit(f"{label} failed (exit code {child.returncode}); its output is in {log_path}")


def per_second(result: dict, skip_first: bool = False) -> float:
    steps = result["step_s"][1:] if skip_first else result["step_s"]
    batch = result["samples"] / len(result["step_s"])
    return batch * len(steps) / sum(steps) if steps else float("nan")


def print_report(plan: dict, ours: dict, trl: dict) -> None:
    cuda = plan["device"] == "cuda"
    memory_key = "peak_cuda_bytes" if cuda else "peak_rss_bytes"
    memory_name = "peak CUDA allocated" if cuda else "peak RSS"
    mib = lambda b: f"{b / 2**20:,.0f} MiB" if b is not None else "-"  # noqa: E731
    num = lambda v, fmt="{:.3f}": fmt.format(v) if v is not None else "-"  # noqa: E731
    rows = [
        ("loop wall time", f"{ours['loop_s']:.1f} s", f"{trl['loop_s']:.1f} s"),
        ("samples/s (all steps)", f"{per_second(ours):.3f}", f"{per_second(trl):.3f}"),
        ("samples/s (without step 1)", f"{per_second(ours, True):.3f}", f"{per_second(trl, True):.3f}"),
        ("seconds per step", " ".join(f"{s:.1f}" for s in ours["step_s"]),
         " ".join(f"{s:.1f}" for s in trl["step_s"])),
        (memory_name, mib(ours[memory_key]), mib(trl[memory_key])),
    ] + ([("peak RSS (host)", mib(ours["peak_rss_bytes"]), mib(trl["peak_rss_bytes"]))] if cuda else []) + [
        ("trainable parameters", f"{ours['trainable_params']:,}", f"{trl['trainable_params']:,}"),
        ("mean score - missing-EOS penalty", num(ours["metrics"]["score"]), num(trl["metrics"]["score"])),
        ("mean KL per response", num(ours["metrics"]["kl"]), num(trl["metrics"]["kl"])),
    ]
    method = (f"RLOO (groups of {plan['group_size']}), ours vs TRL's RLOOTrainer" if plan["peer"] == "rloo"
              else "PPO, ours vs TRL's PPOTrainer")
    print(f"\n{method} {plan['trl_version']}: model {plan['model']}, {plan['device']}, "
          f"quantization {plan['quantization']}, {ours['threads']}/{trl['threads']} CPU threads (ours/TRL); "
          f"{plan['steps']} steps x {plan['batch_size']} responses of up to {plan['response_length']} tokens; "
          f"{plan['ppo_epochs']} epoch(s), {'1 minibatch in 2 passes' if plan['peer'] == 'rloo' else '2 minibatches'}; "
          "LoRA r=16 alpha=32 all-linear.")
    width = max(len(r[0]) for r in rows)
    cols = [max(len("ours"), *(len(r[1]) for r in rows)), max(len("TRL"), *(len(r[2]) for r in rows))]
    print(f"{'':{width}}  {'ours':>{cols[0]}}  {'TRL':>{cols[1]}}")
    for name, a, b in rows:
        print(f"{name:{width}}  {a:>{cols[0]}}  {b:>{cols[1]}}")
    phases = ours["phases_s"]
    # On CUDA the model computes in bf16, so the policy's log-probs take a forward pass too (ppo.Rollout).
    logprobs = "reference log-probs (the policy's come from generation)" if plan["device"] == "cpu" \
        else "policy and reference log-probs"
    print(f"ours per step: generate {phases['generate']:.2f} s, {logprobs} "
          f"{phases['logprobs']:.2f} s, reward model {phases['score']:.2f} s, "
          f"train {phases['train']:.2f} s; response length {ours['metrics']['response_length']:.1f} tokens, "
          f"EOS rate {ours['metrics']['eos_rate']:.2f}")

    speed = per_second(ours) / per_second(trl)
    memory = ours[memory_key] / trl[memory_key]
    goal = RLOO_SPEED_GOAL if plan["peer"] == "rloo" else SPEED_GOAL
    print(f"\nspeed  ours/TRL = {speed:.2f}x samples/s  (goal >= {goal:g}x): "
          f"{'met' if speed >= goal else 'NOT met'}")
    print(f"memory ours/TRL = {memory:.2f}x {memory_name}  (goal <= {MEMORY_GOAL:g}x): "
          f"{'met' if memory <= MEMORY_GOAL else 'NOT met'}")
    steady = per_second(ours, True) / per_second(trl, True)
    if len(ours["step_s"]) > 1:
        print(f"(speed without step 1: {steady:.2f}x)")


def print_failed_peer(plan: dict, ours: dict, trl: dict) -> None:
    """TRL could not run these settings at all (out of memory): our figures alone, and TRL's peak."""
    cuda = plan["device"] == "cuda"
    memory_key = "peak_cuda_bytes" if cuda else "peak_rss_bytes"
    gib = lambda b: f"{b / 2**30:.2f} GiB" if b is not None else "-"  # noqa: E731
    print(f"\nPPO, ours vs TRL {plan['trl_version']}: model {plan['model']}, {plan['device']}, quantization "
          f"{plan['quantization']}; {plan['steps']} steps x {plan['batch_size']} responses of up to "
          f"{plan['response_length']} tokens; {plan['ppo_epochs']} PPO epoch(s), 2 minibatches.")
    print(f"TRL failed: {trl['error']} (its peak {gib(trl.get(memory_key))}).")
    print(f"ours: {per_second(ours):.3f} samples/s ({per_second(ours, True):.3f} without step 1), peak "
          f"{gib(ours[memory_key])}, steps {' '.join(f'{s:.1f}' for s in ours['step_s'])} s")
    print("speed and memory goals: TRL cannot run these settings on this device; ours can.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", choices=("ppo", "rloo"), default="ppo",
                        help="ppo: TRL 1.12's PPOTrainer; rloo: our advantage=rloo against TRL 1.16's RLOOTrainer")
    parser.add_argument("--group-size", type=int, default=4, help="rloo: answers per prompt")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8, help="responses per PPO step (a multiple of 2)")
    parser.add_argument("--response-length", type=int, default=48, help="max new tokens per response")
    parser.add_argument("--ppo-epochs", type=int, default=1, help="passes over each batch (TRL's default is 4)")
    parser.add_argument("--model", choices=("demo", "tiny", "llama-3.2-1b", "llama-2-7b"), default="demo",
                        help="demo: SmolLM2-135M-Instruct; tiny: a 2-layer random Llama (a quick check); "
                             "llama-3.2-1b, llama-2-7b: random weights at those shapes (for CUDA)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quantization", choices=("none", "4bit"), default="none", help="4bit needs CUDA")
    parser.add_argument("--threads", type=int, help="CPU threads for each trainer (default: torch's own)")
    parser.add_argument("--scratch", type=Path, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--trl-python", help="an interpreter that already has the peer's trl (1.12.0 for ppo, "
                        "1.16.0 for rloo), instead of the bench's own venv")
    # Internal: what the child processes run.
    parser.add_argument("--role", choices=("prepare", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "prepare":
        return prepare(args.plan)
    if args.role == "ours":
        return run_ours(args.plan, args.result)
    if args.trl_python:
        os.environ["TRL_PYTHON"] = args.trl_python

    if args.quantization == "4bit" and args.device != "cuda":
        parser.error("--quantization 4bit needs --device cuda")
    if args.batch_size % 2 or args.steps < 1:
        parser.error("--batch-size must be even (2 minibatches) and --steps at least 1")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix=f"ppo-vs-trl-{args.model}-"))
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"Scratch folder: {scratch}")

    if args.peer == "rloo":
        if args.batch_size % args.group_size:
            parser.error("--batch-size must be a multiple of --group-size")
        from dpo_vs_trl import TRL_VERSION as CURRENT_TRL, ensure_trl_venv as ensure_current_trl, \
            trl_python as current_trl_python  # bench/dpo_vs_trl.py: the current TRL's venv
        ensure_current_trl()
        peer_python, peer_worker, peer_version = current_trl_python(), TRL_RLOO_WORKER, CURRENT_TRL
    else:
        ensure_trl_venv(args.quantization)
        peer_python, peer_worker, peer_version = trl_python(), TRL_WORKER, "1.12.0"
    plan = {
        "scratch": str(scratch), "model": args.model, "device": args.device, "quantization": args.quantization,
        "steps": args.steps, "batch_size": args.batch_size, "response_length": args.response_length,
        "ppo_epochs": args.ppo_epochs, "num_minibatches": 2, "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "temperature": 1.0, "learning_rate": 2e-5, "kl_coef": 0.05, "missing_eos_penalty": 1.0, "seed": 0,
        "trl_version": peer_version, "peer": args.peer, "group_size": args.group_size,
    }
    plan_path = scratch / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    me = [sys.executable, str(Path(__file__).resolve())]
    run_child("prepare", me + ["--role", "prepare", "--plan", str(plan_path)], scratch / "prepare.log", args.threads)
    run_child("ours", me + ["--role", "ours", "--plan", str(plan_path), "--result", str(scratch / "ours.json")],
              scratch / "ours.log", args.threads)
    run_child("trl", [str(peer_python), str(peer_worker), str(plan_path), str(scratch / "trl.json")],
              scratch / "trl.log", args.threads)
    plan = json.loads(plan_path.read_text())
    ours, trl = (json.loads((scratch / f"{name}.json").read_text()) for name in ("ours", "trl"))
    if trl.get("error"):
        print_failed_peer(plan, ours, trl)
    else:
        print_report(plan, ours, trl)
    print(f"\nLogs and results: {scratch}")


if __name__ == "__main__":
    main()
