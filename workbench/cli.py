"""The headless command line: `python -m workbench.cli` (the installed `workbench` adds the GUI).

Each subcommand has --help, exits 0 on success, and on bad input prints one line starting
with "workbench: error:" and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import ProjectError, WorkbenchError
from workbench.project import SUFFIX, Project


@contextmanager
def opened(path, reading_will_do: bool = False) -> Iterator[Project]:
    """The project at `path`, closed afterwards whatever happens. Runs a killed process left
    marked running are marked interrupted first, so every command reports them as they are.
    A command that only reads (`reading_will_do`) falls back to opening the file read-only
    where this machine cannot write beside it now (a full disk), and says so."""
    from workbench.train.runs import mark_interrupted

    try:
        project = Project.open(path)
    except ProjectError as error:
        if not (reading_will_do and getattr(error, "machine_side", False)):
            raise
        project = Project.open(path, read_only=True)
        reason = str(error).split(". ")[0]
        print(f"workbench: note: opened {Path(path).name} read-only, since {reason}.", file=sys.stderr)
    try:
        if not project.read_only:
            mark_interrupted(project)
        yield project
    finally:
        project.close()


def grant_from_flags(spec, args: argparse.Namespace | None) -> None:
    """What the model asks of this machine (its own code, pickle weights) is granted only by the
    user's own --trust-remote-code / --allow-pickle, never by the project."""
    from workbench.models.sources import grant_requested

    allowed = {name for name in ("trust_remote_code", "allow_pickle") if getattr(args, name, False)}
    for request in grant_requested(spec, allowed):
        print(f"allowed on this machine: {request.describe()}", file=sys.stderr)


def load_base_model(project: Project, args: argparse.Namespace | None = None):
    """The project's base model, loaded with its progress on stderr (`args`: the user's flags)."""
    from workbench.models.loading import ModelSession

    spec = project.base_model
    if spec is None:
        raise WorkbenchError(f"{project.path.name} has no base model; choose one in the workbench first.")
    grant_from_flags(spec, args)
    models = ModelSession()
    for progress in models.load(spec):
        print(progress.message, file=sys.stderr)
    return models


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"workbench: error: {message} (see {self.prog} --help)\n")


def cmd_new(args: argparse.Namespace) -> int:
    project = Project.create(args.path, name=args.name)
    project.close()
    print(project.path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from workbench.demo_project import ensure_demo_project

    print(ensure_demo_project())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with opened(args.project, reading_will_do=True) as project:
        print(json.dumps(project.summary(), indent=2))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    name = Path(args.file).name

    def show(errors) -> None:  # the first ten bad rows, so the user can fix the file
        for error in errors[:10]:
            print(f"  {error}", file=sys.stderr)
        if len(errors) > 10:
            print(f"  ... and {len(errors) - 10} more", file=sys.stderr)

    def counts(summary: dict) -> str:
        return (f"{summary['prompts_added']} prompts, {summary['batches_added']} batches and "
                f"{summary['rankings_added']} rankings added, {summary['rankings_updated']} rankings updated, "
                f"{summary['rankings_unchanged'] + summary['rankings_kept']} unchanged")

    if args.as_kind is not None and args.kind not in ("adapter", "model"):
        raise WorkbenchError("--as applies to --kind adapter and --kind model only.")
    if args.kind in ("adapter", "model"):
        return import_trained(args)
    if args.kind == "pack":
        from workbench.data.packs import import_pack

        if args.valid_only:
            raise WorkbenchError("--valid-only does not apply to packs: a pack is imported whole or not at all.")
        with opened(args.project) as project:
            summary = import_pack(project, args.file, allow_large=args.allow_large)
        print(f"merged {name}: {counts(summary)}")
        return 0
    if args.kind == "prefs":
        from workbench.data.pref_formats import PreferenceImportError, import_preferences

        with opened(args.project) as project:
            try:
                summary = import_preferences(project, args.file, valid_only=args.valid_only,
                                             allow_large=args.allow_large)
            except PreferenceImportError as error:
                show(error.errors)
                raise WorkbenchError(f"{len(error.errors)} rows in {name} cannot be imported; nothing was "
                                     "imported (add --valid-only to import the others).") from None
        skipped = f", skipped {summary['skipped']} invalid rows" if summary["skipped"] else ""
        print(f"imported {summary['rows'] - summary['skipped']} preference rows ({summary['format']}) "
              f"from {name}: {counts(summary)}{skipped}")
        return 0

    from workbench.data.sft_formats import read_sft_file
    from workbench.data.sft_store import SftStore

    result = read_sft_file(args.file, allow_large=args.allow_large)
    if result.errors:
        show(result.errors)
        if not args.valid_only:
            raise WorkbenchError(f"{len(result.errors)} of {result.total_rows} rows in {name} "
                                 "are invalid; nothing was imported (add --valid-only to import the others).")
    with opened(args.project) as project:
        SftStore(project).add_many(result.examples, source=name)
    print(f"imported {len(result.examples)} SFT examples from {name}"
          + (f", skipped {len(result.errors)} invalid rows" if result.errors else ""))
    return 0


def import_trained(args: argparse.Namespace) -> int:
    """An adapter or merged model trained elsewhere, as a finished run of the project."""
    from workbench.jobs.import_run import import_adapter, import_merged_model

    if args.as_kind is None:
        raise WorkbenchError(f"--kind {args.kind} needs --as sft, rm or policy: what the import is to the project.")
    if args.valid_only or args.allow_large:
        raise WorkbenchError(f"--valid-only and --allow-large apply to data files, not to --kind {args.kind}.")
    with opened(args.project) as project:
        if args.kind == "adapter":
            run_id = import_adapter(project, Path(args.file), args.as_kind)
        else:
            run_id = import_merged_model(project, Path(args.file), args.as_kind, rank=args.rank)
        kind = project.query("SELECT kind FROM runs WHERE id = ?", (run_id,))[0][0]
    print(f"imported {args.file} as {kind} run {run_id} ({kind}-run-{run_id})")
    return 0


KIND_NAMES = {"sft": "SFT examples", "prefs": "preferences", "pack": "packs", "rm": "reward models",
              "policy": "policies", "job": "jobs"}


def cmd_export(args: argparse.Namespace) -> int:
    # One --format option serves two kinds: check that the format given fits the kind.
    fits = {"sft": ("messages", "prompt-completion", "text"),
            "prefs": ("standard", "conversational", "kway"), "pack": (), "rm": (), "policy": (), "job": ()}[args.kind]
    if args.format is not None and args.format not in fits:
        raise WorkbenchError(f"--format {args.format} does not fit --kind {args.kind}; "
                             + (f"use one of {', '.join(fits)}." if fits else f"{KIND_NAMES[args.kind]} have one format."))
    fmt = args.format or (fits[0] if fits else None)
    if args.labels and args.kind != "pack":
        raise WorkbenchError("--labels applies to --kind pack only.")
    if args.annotator is not None and args.kind in ("sft", "rm", "policy"):
        raise WorkbenchError("--annotator applies to --kind prefs and --kind pack only.")
    if args.run is not None and args.kind not in ("rm", "policy"):
        raise WorkbenchError("--run applies to --kind rm and --kind policy only.")
    if args.adapter_only and args.kind != "rm":
        raise WorkbenchError("--adapter-only applies to --kind rm only.")
    if args.annotator is not None and args.kind == "pack" and not args.labels:
        raise WorkbenchError("--annotator chooses whose labels go into the pack; add --labels.")
    if (args.engine or args.stage or args.set) and args.kind != "job":
        raise WorkbenchError("--engine, --stage and --set apply to --kind job only.")

    if args.kind == "job":
        from workbench.jobs.export_job import export_job

        if args.engine is None or args.stage is None:
            raise WorkbenchError("--kind job needs --engine trl|openrlhf and --stage sft|rm|dpo|ppo.")
        with opened(args.project, reading_will_do=True) as project:
            job = export_job(project, Path(args.out), args.engine, args.stage, args.set)
        unmapped = len(job.unmapped)
        print(f"exported a {job.engine} {job.stage} job to {job.folder}: {job.train_rows} training and "
              f"{job.test_rows} test rows, {unmapped} setting{'s' * (unmapped != 1)} without an equivalent "
              f"(see job.json); run it with {job.folder / 'run.sh'}")
        return 0

    if args.kind == "prefs":
        from workbench.data.pref_formats import write_preferences

        with opened(args.project, reading_will_do=True) as project:
            count = write_preferences(project, args.out, fmt, annotator=args.annotator)
        print(f"exported {count} preference rows ({fmt}) to {args.out}")
        return 0
    if args.kind == "rm":
        from workbench.train.reward_export import export_reward_adapter, export_reward_model, reward_run_folder

        with opened(args.project, reading_will_do=True) as project:
            run_id, adapter = reward_run_folder(project, args.run)
            spec = project.base_model
        if spec is not None and not args.adapter_only:
            grant_from_flags(spec, args)
        out = Path(args.out)
        if args.adapter_only:
            export_reward_adapter(adapter, out)
            print(f"exported the adapter and reward head of run {run_id} to {out}")
        else:
            export_reward_model(spec, adapter, out)
            print(f"exported reward model run {run_id} to {out} (AutoModelForSequenceClassification, num_labels=1)")
        return 0
    if args.kind == "policy":
        from workbench.train.policy_export import export_policy

        with opened(args.project, reading_will_do=True) as project:
            run_id, kind = export_policy(project, args.run, Path(args.out))
        print(f"exported the policy adapter of {kind} run {run_id} to {args.out} (PeftModel.from_pretrained loads it)")
        return 0
    if args.kind == "pack":
        from workbench.data.packs import export_pack

        with opened(args.project, reading_will_do=True) as project:
            count = export_pack(project, args.out, with_labels=args.labels, annotator=args.annotator)
        print(f"exported {count} prompts to {args.out}" + (" with labels" if args.labels else ""))
        return 0

    from workbench.data.sft_formats import write_sft_file
    from workbench.data.sft_store import SftStore

    with opened(args.project, reading_will_do=True) as project:
        examples = list(SftStore(project).all_messages())
    count = write_sft_file(examples, args.out, fmt)
    print(f"exported {count} SFT examples to {args.out}")
    return 0


def trainers() -> dict:
    """Each kind of run: (its config class, its training generator)."""
    from workbench.train.dpo import DpoConfig, train_dpo
    from workbench.train.ppo import PpoConfig, train_ppo
    from workbench.train.reward import RewardConfig, train_rm
    from workbench.train.sft import SftConfig, train_sft

    return {"sft": (SftConfig, train_sft), "rm": (RewardConfig, train_rm), "ppo": (PpoConfig, train_ppo),
            "dpo": (DpoConfig, train_dpo)}


def cmd_train(args: argparse.Namespace) -> int:
    import signal

    from workbench.config import with_overrides
    from workbench.train.runs import RunControl

    config_class, train = trainers()[args.kind]
    if args.resume is not None and (args.set or args.max_steps is not None):
        raise WorkbenchError("--set and --max-steps cannot change a resumed run: it continues with its own "
                             "settings. Start a new run to train with others.")
    with opened(args.project) as project:
        try:
            config = with_overrides(config_class(), [*args.set, *([f"max_steps={args.max_steps}"]
                                                                  if args.max_steps is not None else [])])
        except ValueError as error:
            raise WorkbenchError(str(error)) from None
        models = load_base_model(project, args)
        control = RunControl()
        # The first Ctrl+C asks the run to save a checkpoint and stop; a second one interrupts.
        previous = signal.signal(signal.SIGINT, lambda *_: (control.stop(), signal.signal(signal.SIGINT, previous)))
        try:
            for log in train(project, models, config, control, resume_run_id=args.resume):
                print(format_step(log), flush=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    return 0 if log.status == "finished" else 3


def cmd_generate(args: argparse.Namespace) -> int:
    from workbench.config import with_overrides
    from workbench.data.prompts import PromptStore
    from workbench.data.response_generation import GenerationConfig, check_sources, generate_responses

    with opened(args.project) as project:
        try:
            overrides = [f"k={args.k}", *args.set] + ([f"sources={args.source}"] if args.source else [])
            config = with_overrides(GenerationConfig(), overrides)
        except ValueError as error:
            raise WorkbenchError(str(error)) from None
        check_sources(project, config)
        # Prompts no annotator has labeled and that have no responses yet, oldest first.
        todo = [row.id for row in PromptStore(project).rows(filter="no responses") if not row.labels]
        todo = todo[:args.limit] if args.limit is not None else todo
        if not todo:
            print("every prompt already has responses; nothing to generate")
            return 0
        models = load_base_model(project, args)
        made = 0
        for event in generate_responses(project, models, todo, config):
            if event.saved:
                made += 1
                print(event.message, flush=True)
    print(f"generated {config.k} responses for each of {made} prompts")
    return 0


def format_step(log) -> str:
    if not log.metrics:
        return f"run {log.run_id}: {log.message}"
    shown = "  ".join(f"{key} {value:.4g}" for key, value in log.metrics.items()
                      if key.startswith(("loss/", "train/lr", "reward/accuracy", "reward/margin", "objective/",
                                           "rewards/accuracies", "rewards/margins", "eval/rewards/accuracies")))
    eta = f"  eta {log.eta_s:.0f}s" if log.eta_s is not None else ""
    return f"run {log.run_id} step {log.step}/{log.total_steps}  {shown}{eta}"


def add_trust_flags(parser: argparse.ArgumentParser) -> None:
    """A project may ask for these, but only this machine's user grants them (workbench.models.trust)."""
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the base model's own Python code to run (remembered on this machine for "
                        "its exact files; a project file can never turn this on)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow the base model's pickle (.bin/.pt) weights, which can run code (remembered "
                        "on this machine for those exact files)")


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = OneLineErrorParser(prog="workbench", description="RLHF Workbench: label, train and "
                                "inspect models on one local GPU. With no command, opens the workbench.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)

    new = commands.add_parser("new", help="create an empty project file",
                              description=f"Create an empty project file (suffix {SUFFIX}) and its artifacts folder.")
    new.add_argument("path", help=f"where to create it; {SUFFIX} is added if missing")
    new.add_argument("--name", help="a display name (default: the file name)")
    new.set_defaults(func=cmd_new)

    demo = commands.add_parser("demo", help="print the demo project's path, creating it on first use",
                               description="Create the demo project (customer support, with the demo model as "
                               "its base) if it does not exist yet, and print its path, e.g. "
                               "`workbench train sft $(workbench demo)`.")
    demo.set_defaults(func=cmd_demo)

    info = commands.add_parser("info", help="print a JSON summary of a project",
                               description="Print a JSON summary: base model, counts of each kind of record, runs.")
    info.add_argument("project", help="the project file")
    info.set_defaults(func=cmd_info)

    imp = commands.add_parser("import", help="import data into a project",
                              description="Import SFT examples from JSONL (TRL's messages, prompt/completion or "
                              "text rows), CSV, Parquet or a datasets folder; preferences (--kind prefs) from "
                              "JSONL, a JSON array or Parquet: TRL's standard or conversational pairs, "
                              "Anthropic HH transcripts or K-way rankings; or merge a labeling pack "
                              "(--kind pack). Invalid rows are listed with their line or row number and "
                              "nothing is imported unless --valid-only is given. A LoRA adapter (--kind adapter) or "
                              "a merged model (--kind model) trained elsewhere becomes a finished run (--as sft, rm "
                              "or policy) once its layers are checked against the project's base.")
    imp.add_argument("project", help="the project file")
    imp.add_argument("file", help="the file or datasets folder to read")
    imp.add_argument("--kind", choices=["sft", "prefs", "pack", "adapter", "model"], default="sft",
                     help="what the file holds: SFT examples, preferences, a labeling pack (default: sft), or "
                     "a LoRA adapter folder or merged model folder trained elsewhere (with --as)")
    imp.add_argument("--as", dest="as_kind", choices=["sft", "rm", "policy"],
                     help="adapter and model: the run it becomes: an SFT adapter, a reward model (with its score "
                     "head) or a policy (compared with PPO and DPO policies)")
    imp.add_argument("--rank", type=int, default=64,
                     help="model: the LoRA rank its difference from the base is stored at (default: 64)")
    imp.add_argument("--valid-only", action="store_true", help="import the valid rows and skip the invalid ones")
    from workbench.data.untrusted import MAX_IMPORT_ROWS, MAX_IMPORT_TEXT_BYTES

    imp.add_argument("--allow-large", action="store_true",
                     help=f"import a file over the size cap of one import ({MAX_IMPORT_ROWS:,} rows or "
                     f"{MAX_IMPORT_TEXT_BYTES // 2**20} MiB of text), which otherwise stops a small compressed "
                     "file that would expand to gigabytes")
    imp.set_defaults(func=cmd_import)

    exp = commands.add_parser("export", help="export data from a project",
                              description="Export SFT examples (container from OUT's suffix: .jsonl, .csv, "
                              ".parquet, or a folder saved with datasets), preferences (--kind prefs: .jsonl, "
                              ".json or .parquet), or a labeling pack for teammates (--kind pack, e.g. "
                              "team.rlhfpack), a reward model (--kind rm: a folder that AutoModelForSequenceClassification loads), "
                              "a PPO or DPO policy (--kind policy: its LoRA adapter folder, which peft loads), or a ready-to-run "
                              "job for TRL or OpenRLHF (--kind job --engine E --stage S: the same data, split and "
                              "settings, a run.sh and a README).")
    exp.add_argument("project", help="the project file")
    exp.add_argument("out", help="the file or folder to write")
    exp.add_argument("--kind", choices=["sft", "prefs", "pack", "rm", "policy", "job"], default="sft",
                     help="what to export (default: sft); rm: a reward model as a transformers folder; "
                     "policy: a PPO or DPO run's adapter; job: a folder that trains on another engine")
    exp.add_argument("--engine", choices=["trl", "openrlhf"], help="job: TRL (with accelerate) or OpenRLHF")
    exp.add_argument("--stage", choices=["sft", "rm", "dpo", "ppo"],
                     help="job: what it trains, from the same data and settings as that page (ppo on TRL is RLOO)")
    exp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="job: a setting of the stage changed for the export, e.g. --set learning_rate=1e-4")
    exp.add_argument("--format", choices=["messages", "prompt-completion", "text", "standard", "conversational",
                                          "kway"],
                     help="row format: for sft messages (default), prompt-completion or text; for prefs "
                     "standard (default), conversational or kway")
    exp.add_argument("--labels", action="store_true", help="packs: include the rankings")
    exp.add_argument("--annotator", metavar="NAME", help="prefs and packs: only this annotator's rankings")
    exp.add_argument("--run", type=int, metavar="RUN",
                     help="rm and policy: which reward-model or PPO run (default: the newest finished one)")
    exp.add_argument("--adapter-only", action="store_true", help="rm: only the LoRA adapter and the reward head")
    add_trust_flags(exp)
    exp.set_defaults(func=cmd_export)

    gen = commands.add_parser("generate", help="generate responses to rank for prompts that have none",
                              description="Generate K responses for each prompt that has no responses yet, "
                              "with the same code as the ranking page, and save them to rank later.")
    gen.add_argument("project", help="the project file")
    gen.add_argument("--k", type=int, default=4, help="responses per prompt, 2 to 6 (default: 4)")
    gen.add_argument("--limit", type=int, help="at most N prompts")
    gen.add_argument("--source", metavar="NAMES", help="comma-separated model per pane: base or an adapter "
                     "such as sft-run-2 (default: base for every pane)")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a sampling setting, e.g. --set temperature=0.7 or --set max_new_tokens=200")
    add_trust_flags(gen)
    gen.set_defaults(func=cmd_generate)

    train = commands.add_parser("train", help="train headlessly (same code and run records as the GUI)",
                                description="Train on the project's data with its base model.")
    kinds = train.add_subparsers(dest="kind", metavar="KIND", parser_class=OneLineErrorParser, required=True)
    descriptions = {
        "sft": ("supervised fine-tuning of a LoRA adapter",
                "Fine-tune a LoRA adapter on the project's SFT examples."),
        "rm": ("a reward model on the rankings",
               "Train a reward model (a LoRA adapter and a scalar head on the base) on the preference pairs of "
               "the project's rankings, split into train and validation by prompt."),
        "ppo": ("PPO (or RLOO, GRPO) of a LoRA policy against the reward model",
                "Optimise a LoRA policy (from an SFT adapter with --set init_adapter=sft-run-N, or fresh) on the "
                "project's prompts against its newest reward model, with a KL penalty to the reference. PPO with "
                "a value head by default; --set advantage=rloo or advantage=grpo for the critic-free estimators "
                "(group_size answers per prompt)."),
        "dpo": ("DPO (or IPO, SimPO) of a LoRA policy on the rankings, without a reward model",
                "Optimise a LoRA policy (from an SFT adapter with --set init_adapter=sft-run-N, or fresh) directly "
                "on the preference pairs of the project's rankings, the same pairs and split as a reward model "
                "gets; --set loss_type=ipo or loss_type=simpo for the other losses, --set beta=... for their "
                "strength."),
    }
    for kind, (summary, description) in descriptions.items():
        sub = kinds.add_parser(kind, help=summary, description=description + " Ctrl+C saves a checkpoint and "
                               "stops; --resume RUN continues a stopped or interrupted run.")
        sub.add_argument("project", help="the project file")
        sub.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="a training setting, e.g. --set learning_rate=1e-4 (repeatable)")
        sub.add_argument("--resume", type=int, metavar="RUN", help="continue run RUN from its last checkpoint")
        add_trust_flags(sub)
        sub.set_defaults(func=cmd_train)
    return parser, commands


def run(parser: argparse.ArgumentParser, argv: list[str] | None,
        default: Callable[[argparse.Namespace], int] | None = None) -> int:
    args = parser.parse_args(argv)
    func = getattr(args, "func", None) or default
    if func is None:
        parser.print_help()
        return 0
    try:
        return func(args)
    except WorkbenchError as error:
        print(f"workbench: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"workbench: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser, _ = build_parser()
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
