"""Our DPO (workbench/train/dpo.py) against TRL's DPOTrainer (current TRL, 1.16.0), same model,
pairs and settings: pairs/s and peak memory.

    .venv/bin/python bench/dpo_vs_trl.py [--model demo|tiny] [--pairs 48] [--epochs 2] [--batch-size 4]
        [--loss sigmoid|ipo] [--device cpu|cuda] [--threads N] [--scratch DIR] [--trl-python PYTHON]

In four steps, each trainer in a child process of its own so that no run's memory counts for another:
1. TRL's environment: bench/.trl-dpo-venv is made on first use and gets torch 2.13.0,
   transformers 5.23.0, peft 0.21.2 and trl 1.16.0 (the repo's own versions of the rest, so
   only the trainers differ); skipped when it has them, or --trl-python names one that does.
2. Preparation (repo .venv): a scratch project with the model and `--pairs` prompts from
   bench/data/support_prompts.json, each ranked once: a reply that apologises and gives a next
   step (70-100 tokens) over one that does neither; the same pairs as TRL's conversational
   dataset ({"prompt": [user turn], "chosen": [assistant turn], "rejected": [...]}), which TRL
   renders with the same chat template.
3. Ours (repo .venv): `train_dpo(...)`, every pair in training (validation_fraction 0).
4. TRL (bench/.trl-dpo-venv): bench/trl_dpo_worker.py.

Settings shared by both: pairs per optimizer step (`--batch-size`), `--epochs` passes over the pairs (steps = pairs x
epochs / batch size), LoRA r=16 alpha=32 on all linear layers, dropout off, learning rate 5e-5
constant without warm-up, beta 0.1, the loss, max length 512, no gradient checkpointing (TRL's
DPOConfig turns it on by default; `--trl-checkpointing` gives TRL its default), seed 0,
float32 on the CPU (bfloat16 on CUDA). Both take the reference as the base with the adapter
switched off (TRL does so for a new PEFT adapter): TRL runs it for every pair at every step,
ours once per pair before the first step (`reference_logps.json`), which is where the second
epoch gains. Each passes pairs as it does by default: ours one pair per pass with gradient
accumulation (DpoConfig batch_size 1), TRL a whole step's pairs at once
(per_device_train_batch_size); `--ours-micro-batch N` and `--trl-micro-batch N` change that
(fewer pairs per pass hold fewer activations).

Measured per process: pairs/s, the pairs trained on divided by the loop's wall time; ours from
the first StepLog after setup (the reference pass is counted in) to the last step, TRL's
`trainer.train()` call; peak memory, the process's peak RSS on the CPU (imports and loading
included) or `torch.cuda.max_memory_allocated()` on CUDA. Goals (issue 17): at least 1.5x TRL's
pairs/s and at most 0.6x its peak memory. The loss and reward margin of the last steps are
printed to show both did the same work.
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

from ppo_vs_trl import run_child  # bench/ppo_vs_trl.py, beside this file

REPO = Path(__file__).resolve().parent.parent
TRL_VENV = REPO / "bench" / ".trl-dpo-venv"
TRL_WORKER = REPO / "bench" / "trl_dpo_worker.py"
TRL_VERSION = "1.16.0"
TRL_PINS = ["torch==2.13.0", "transformers==5.23.0", "peft==0.21.2", f"trl=={TRL_VERSION}"]
SPEED_GOAL, MEMORY_GOAL = 1.5, 0.6
MAX_LENGTH = 512

APOLOGIES = ["I'm sorry about this, and I understand how frustrating it is.",
             "I apologise for the trouble this has caused you.",
             "Sorry for the inconvenience, that is not the experience we want you to have."]
STEPS = ["Please reply with your order number and I will check it with the carrier today.",
         "Next, open the Orders page, choose the order and press Report a problem; we answer within a day.",
         "Please send us a photo of the item and we will arrange a replacement or a refund, whichever you prefer."]
DETAILS = ["Most problems like this are solved within two working days.",
           "You will get an email as soon as anything changes, so you do not need to check back.",
           "If anything else goes wrong, this conversation stays open and you can write here again."]
VAGUE = ["These things happen sometimes with orders.", "It depends on many factors, to be honest.",
         "Our systems are usually reliable and most customers have no issues.",
         "There is not much information available about this case at the moment.",
         "It may resolve itself eventually, as these situations often do."]


def replies(i: int) -> tuple[str, str]:
    """(chosen, rejected) for prompt i: a caring reply with a next step over a vague one."""
    chosen = " ".join([APOLOGIES[i % 3], STEPS[(i // 3) % 3], DETAILS[i % 3], DETAILS[(i + 1) % 3]])
    rejected = " ".join(VAGUE[(i + k) % len(VAGUE)] for k in range(4))
    return chosen, rejected


def trl_python() -> Path:
    return Path(os.environ.get("TRL_PYTHON") or TRL_VENV / "bin" / "python")


def ensure_trl_venv() -> None:
    python = trl_python()
    check = f"import importlib.metadata as m, sys; sys.exit(m.version('trl') != '{TRL_VERSION}')"
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
        print(f"TRL environment: {python} has trl {TRL_VERSION}.")
        return
    if os.environ.get("TRL_PYTHON"):
        sys.exit(f"--trl-python {python} has no trl {TRL_VERSION}")
    if not python.exists():
        print(f"TRL environment: creating {TRL_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    print(f"TRL environment: pip install {' '.join(TRL_PINS)} (a few minutes, once) ...", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", *TRL_PINS], check=True)


def load_session(spec):
    from workbench.models.loading import ModelSession

    session = ModelSession()
    for _ in session.load(spec):
        pass
    return session


def prepare(plan_path: Path) -> None:
    from workbench.config import ModelSpec
    from workbench.data.prompts import PromptStore
    from workbench.data.rankings import RankingStore
    from workbench.models.sources import ResolvedSource, resolve
    from workbench.models.tiny import make_tiny_llama
    from workbench.project import Project

    plan = json.loads(plan_path.read_text())
    scratch = Path(plan["scratch"])
    if plan["model"] == "demo":
        spec = ModelSpec(kind="demo", device=plan["device"])
    else:
        spec = ModelSpec(kind="folder", location=str(make_tiny_llama(scratch / "tiny-model")), device=plan["device"])
    project = Project.create(scratch / "bench")
    project.set_base_model(spec)
    texts = json.loads((REPO / "bench" / "data" / "support_prompts.json").read_text())["prompts"]
    store, prompts, rows = RankingStore(project), PromptStore(project), []
    for i in range(plan["pairs"]):
        prompt = texts[i % len(texts)] + (f" (case {i // len(texts) + 1})" if i >= len(texts) else "")
        prompt_id = prompts.add(prompt)
        chosen, rejected = replies(i)
        batch = store.add_batch(prompt_id, [rejected, chosen], [{"source": "base"}] * 2)
        store.save_ranking(batch.uid, "bench", [[batch.responses[1].id], [batch.responses[0].id]])
        rows.append({"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    base = [item for item in resolve(spec) if isinstance(item, ResolvedSource)][-1].folder
    plan.update(project=str(project.path), base_folder=str(base), rows=rows)
    project.close()
    plan_path.write_text(json.dumps(plan, indent=2))
    print(f"Prepared {len(rows)} pairs on {base}.")


def run_ours(plan_path: Path, result_path: Path) -> None:
    import resource

    import torch

    from workbench.project import Project
    from workbench.train.dpo import DpoConfig, train_dpo

    plan = json.loads(plan_path.read_text())
    cuda = plan["device"] == "cuda"
    project = Project.open(plan["project"])
    models = load_session(project.base_model)
    config = DpoConfig(batch_size=plan["ours_micro"], grad_accum=plan["batch_size"] // plan["ours_micro"],
                       max_steps=plan["steps"], learning_rate=plan["learning_rate"],
                       schedule="constant", warmup_steps=0, lora_rank=16, lora_alpha=32, lora_dropout=0.0,
                       beta=plan["beta"], loss_type=plan["loss"], max_length=MAX_LENGTH, validation_fraction=0.0,
                       checkpoint_every=10**6, seed=0)
    started, step_ends, metrics = None, [], []
    for log in train_dpo(project, models, config):
        if started is None and log.message.startswith(("Reference log-probs of", "Training")):
            if cuda:
                torch.cuda.synchronize()
            started = time.monotonic()
        if log.metrics:
            step_ends.append(time.monotonic())
            metrics.append(log.metrics)
            print(f"step {log.step}/{plan['steps']}: loss {log.metrics['loss/train']:.4f}, margin "
                  f"{log.metrics['rewards/margins']:.4f}", flush=True)
    assert started is not None and len(metrics) == plan["steps"], "the DPO run did not complete"
    project.close()
    last = metrics[-max(1, len(metrics) // 4):]
    result_path.write_text(json.dumps({
        "loop_s": step_ends[-1] - started, "pairs": plan["steps"] * plan["batch_size"],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "threads": torch.get_num_threads(),
        "loss_last": sum(m["loss/train"] for m in last) / len(last),
        "margin_last": sum(m["rewards/margins"] for m in last) / len(last),
        "accuracy_last": sum(m["rewards/accuracies"] for m in last) / len(last),
    }, indent=2))


def print_report(plan: dict, ours: dict, trl: dict) -> None:
    cuda = plan["device"] == "cuda"
    key = "peak_cuda_bytes" if cuda else "peak_rss_bytes"
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    rate = lambda r: r["pairs"] / r["loop_s"]  # noqa: E731
    print(f"\n{plan['model']} on {plan['device']}, {plan['pairs']} pairs x {plan['epochs']} epochs = {plan['steps']} steps "
          f"of {plan['batch_size']} pairs (forward passes of {plan['ours_micro']} / {plan['trl_micro']} pairs"
          f"{', TRL with gradient checkpointing' if plan.get('trl_checkpointing') else ''}), {plan['loss']} loss, threads {ours['threads']}/{trl['threads']}\n")
    print(f"{'':28}{'ours':>14}{'TRL ' + TRL_VERSION:>14}{'ours/TRL':>10}")
    print(f"{'pairs/s':28}{rate(ours):>14.2f}{rate(trl):>14.2f}{rate(ours) / rate(trl):>9.2f}x")
    print(f"{'loop wall time (s)':28}{ours['loop_s']:>14.1f}{trl['loop_s']:>14.1f}")
    print(f"{'peak memory (' + ('CUDA' if cuda else 'RSS') + ')':28}{mib(ours[key]):>14}{mib(trl[key]):>14}"
          f"{ours[key] / trl[key]:>9.2f}x")
    for name, field in (("loss, last quarter", "loss_last"), ("reward margin, last quarter", "margin_last"),
                        ("reward accuracy, last quarter", "accuracy_last")):
        print(f"{name:28}{ours[field]:>14.4f}{trl[field]:>14.4f}")
    speed, memory = rate(ours) / rate(trl), ours[key] / trl[key]
    print(f"\nGoal: >= {SPEED_GOAL}x TRL's pairs/s: {'met' if speed >= SPEED_GOAL else 'NOT met'} ({speed:.2f}x); "
          f"<= {MEMORY_GOAL}x its peak memory: {'met' if memory <= MEMORY_GOAL else 'NOT met'} ({memory:.2f}x).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("demo", "tiny"), default="demo")
    parser.add_argument("--pairs", type=int, default=48, help="prompts, one ranked pair each")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    parser.add_argument("--ours-micro-batch", type=int, default=1,
                        help="pairs per forward pass in ours (default: 1, as DpoConfig)")
    parser.add_argument("--trl-micro-batch", type=int,
                        help="TRL's per_device_train_batch_size, the rest by gradient accumulation (default: --batch-size)")
    parser.add_argument("--trl-checkpointing", action="store_true",
                        help="TRL with gradient checkpointing, its DPOConfig default (ours stays without)")
    parser.add_argument("--loss", choices=("sigmoid", "ipo"), default="sigmoid")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for each trainer (default: torch's own)")
    parser.add_argument("--scratch", type=Path)
    parser.add_argument("--trl-python", help=f"an interpreter that already has trl {TRL_VERSION}")
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
    if args.pairs * args.epochs % args.batch_size:
        parser.error("--pairs x --epochs must be a multiple of --batch-size")
    ours_micro = args.ours_micro_batch
    trl_micro = args.trl_micro_batch or args.batch_size
    if args.batch_size % ours_micro or args.batch_size % trl_micro:
        parser.error("--batch-size must be a multiple of each micro-batch")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix=f"dpo-vs-trl-{args.model}-"))
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"Scratch folder: {scratch}")
    ensure_trl_venv()
    plan = {"scratch": str(scratch), "model": args.model, "device": args.device, "pairs": args.pairs,
            "epochs": args.epochs, "batch_size": args.batch_size, "ours_micro": ours_micro, "trl_micro": trl_micro,
            "trl_checkpointing": args.trl_checkpointing, "steps": args.pairs * args.epochs // args.batch_size,
            "loss": args.loss, "beta": 0.1, "learning_rate": 5e-5, "max_length": MAX_LENGTH, "trl_version": TRL_VERSION}
    plan_path = scratch / "plan.json"
    plan_path.write_text(json.dumps(plan, indent=2))
    me = [sys.executable, str(Path(__file__).resolve())]
    run_child("prepare", me + ["--role", "prepare", "--plan", str(plan_path)], scratch / "prepare.log", args.threads)
    run_child("ours", me + ["--role", "ours", "--plan", str(plan_path), "--result", str(scratch / "ours.json")],
              scratch / "ours.log", args.threads)
    run_child("trl", [str(trl_python()), str(TRL_WORKER), str(plan_path), str(scratch / "trl.json")],
              scratch / "trl.log", args.threads)
    plan = json.loads(plan_path.read_text())
    ours, trl = (json.loads((scratch / f"{name}.json").read_text()) for name in ("ours", "trl"))
    print_report(plan, ours, trl)
    print(f"\nLogs and results: {scratch}")


if __name__ == "__main__":
    main()
