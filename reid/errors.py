"""The project's error base: a :class:`ReidError` is bad input or a setting that cannot work, reported in
one line.

Every error a user can cause and fix (a missing or malformed data set, a corrupt image, a bad
keypoint file, an unknown or out-of-range setting, an untrusted or damaged checkpoint, a run
folder in use...) derives from :class:`ReidError` as well as from the built-in exception it
always was (``ValueError``, ``FileNotFoundError``...), so existing ``except`` clauses keep
working. The entry points (``reid.tasks.run_cli``, :func:`reid.conf.tool.run_tool`) print such an error
as one ``error:`` line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class ReidError(Exception):
    """Bad input or a setting that cannot work; the message names the file or key and the fix."""


class ConfigError(ReidError, ValueError):
    """A composed config with an unknown key or a value of the wrong type; the message names the key and a fix.

    Attributes:
        problems: every problem found, one line each (the message joins them with ``; ``).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a setting that cannot work: reported in one line, no traceback.

    The project's own derive from :class:`reid.errors.ReidError`; Lightning says
    ``MisconfigurationException`` of a trainer setting, and a missing file is a missing file.
    """
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    return (ReidError, MisconfigurationException, FileNotFoundError)


def one_line(message: str) -> str:
    """One line of an error message: a loader worker's re-raised error carries the worker's traceback first."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Original Traceback" in message:
        return re.sub(r"^[\w.]+: ", "", lines[-1])  # drop the "module.ErrorClass: " prefix
    return " ".join(" ".join(lines).split())
