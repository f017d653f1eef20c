"""The headless command line: `python -m workbench.cli` (the installed `workbench` adds the GUI).

Each subcommand has --help, exits 0 on success, and on bad input prints one line starting
with "workbench: error:" and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from workbench.errors import WorkbenchError
from workbench.project import SUFFIX, Project


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"workbench: error: {message} (see {self.prog} --help)\n")


def cmd_new(args: argparse.Namespace) -> int:
    project = Project.create(args.path, name=args.name)
    project.close()
    print(project.path)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    project = Project.open(args.project)
    try:
        print(json.dumps(project.summary(), indent=2))
    finally:
        project.close()
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = OneLineErrorParser(prog="workbench", description="RLHF Workbench: label, train and "
                                "inspect models on one local GPU. With no command, opens the workbench.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)

    new = commands.add_parser("new", help="create an empty project file",
                              description=f"Create an empty project file (suffix {SUFFIX}) and its artifacts folder.")
    new.add_argument("path", help=f"where to create it; {SUFFIX} is added if missing")
    new.add_argument("--name", help="a display name (default: the file name)")
    new.set_defaults(func=cmd_new)

    info = commands.add_parser("info", help="print a JSON summary of a project",
                               description="Print a JSON summary: base model, counts of each kind of record, runs.")
    info.add_argument("project", help="the project file")
    info.set_defaults(func=cmd_info)
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
