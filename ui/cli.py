"""The installed `workbench` command: the core CLI plus the GUI and offscreen screenshots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.cli import build_parser, run
from workbench.errors import WorkbenchError


def cmd_gui(args: argparse.Namespace) -> int:
    from ui import qt_preflight

    problem = qt_preflight.check()  # before Qt, whose own message names the wrong library
    if problem:
        raise WorkbenchError(problem)
    from ui.app import run_gui

    return run_gui(getattr(args, "project", None))


def cmd_screenshots(args: argparse.Namespace) -> int:
    from ui.screenshots import render_screenshots

    sizes = [tuple(int(n) for n in size.lower().split("x")) for size in args.size] if args.size else None
    for path in render_screenshots(Path(args.project), Path(args.outdir), load_model=not args.no_model,
                                   train_steps=args.train_steps, sizes=sizes, reward_steps=args.reward_steps):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    gui = commands.add_parser("gui", help="open the workbench (the default with no command)",
                              description="Open the workbench on PROJECT, else the last project, else the demo.")
    gui.add_argument("project", nargs="?", help="a project file to open")
    gui.set_defaults(func=cmd_gui)
    shots = commands.add_parser("screenshots", help="render every page offscreen to PNG files",
                                description="Open PROJECT offscreen, load its base model and try a prompt, "
                                "then save one PNG per page into OUTDIR.")
    shots.add_argument("project", help="the project file")
    shots.add_argument("outdir", help="folder for the PNG files (created if missing)")
    shots.add_argument("--no-model", action="store_true", help="do not load the project's base model")
    shots.add_argument("--train-steps", type=int, default=0, metavar="N",
                       help="first run N steps of SFT on a temporary copy of the project, so the SFT "
                       "training and Runs pages show curves (the project itself is not changed)")
    shots.add_argument("--size", action="append", metavar="WxH",
                       help="window size, e.g. 1366x768 (repeat for several; default 1280x820, the app's own)")
    shots.add_argument("--reward-steps", type=int, default=0, metavar="N",
                       help="render again after an N-step reward-model run on the copy's rankings")
    shots.set_defaults(func=cmd_screenshots)
    return run(parser, argv, default=cmd_gui)


if __name__ == "__main__":
    sys.exit(main())
