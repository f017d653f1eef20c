"""Errors that carry a message meant for the user, shown as-is in a dialog or on one CLI line."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """An exception from a library, shortened to its first line (or its type) for a message."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


class WorkbenchError(Exception):
    """A problem the user can act on; str(error) says what happened and what to do."""


class ProjectError(WorkbenchError):
    """A project file cannot be created, opened or written."""


class ModelLoadError(WorkbenchError):
    """A model source cannot be resolved or loaded."""


class Cancelled(WorkbenchError):
    """Long work stopped because the user asked it to."""
