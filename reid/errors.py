"""The project's error base: a :class:`ReidError` is bad input or a setting that cannot work, reported in one line.

Every error a user can cause and fix (a missing or malformed data set, a corrupt image, a bad
keypoint file, an unknown or out-of-range setting, an untrusted or damaged checkpoint, a run
folder in use...) derives from :class:`ReidError` as well as from the built-in exception it
always was (``ValueError``, ``FileNotFoundError``...), so existing ``except`` clauses keep
working. The entry points (``reid.runner.run_cli``) print such an error as one ``error:`` line
and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ReidError(Exception):
    """Bad input or a setting that cannot work; the message names the file or key and the fix."""
