"""One error base: every error a user can cause derives from ReidError and reaches the entry points as one line."""

from __future__ import annotations

import errno
import importlib
import inspect
import pkgutil

import pytest

import reid
from reid import tasks as runner
from reid.errors import ReidError

# not user errors in that sense: a lookup error kept as KeyError, and a termination (exit status 143)
NOT_USER_ERRORS = {"UnknownDatasetError", "RunInterrupted"}


def _error_classes() -> dict[str, type]:
    found = {}
    for module_info in pkgutil.walk_packages(reid.__path__, "reid."):
        if module_info.name.startswith("reid.conf"):
            continue
        module = importlib.import_module(module_info.name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, Exception) and name.endswith("Error"):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_project_error_derives_from_reid_error_and_its_builtin():
    classes = _error_classes()
    assert len(classes) >= 14
    for name, cls in classes.items():
        if name.rsplit(".", 1)[1] in NOT_USER_ERRORS:
            continue
        assert issubclass(cls, ReidError), name


@pytest.mark.parametrize("name", sorted(n for n in _error_classes() if n.rsplit(".", 1)[1] not in NOT_USER_ERRORS))
def test_run_cli_turns_each_into_one_error_line(name, capsys):
    cls = _error_classes()[name]

    parameters = inspect.signature(cls.__init__).parameters if cls.__init__ is not Exception.__init__ else {}

    def fails(_cfg):
        if "problems" in parameters:
            raise cls([f"{name} happened: fix it like so"])  # ConfigError takes its problems as a list
        if "error_number" in parameters:  # DiskFullError writes its own message from the file and errno
            raise cls(f"/nowhere/{name}", errno.ENOSPC)
        raise cls(f"{name} happened: fix it like so")

    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(fails, None)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    if "error_number" in parameters:
        assert err.startswith("error: ") and f"/nowhere/{name}" in err and err.count("\n") == 1
    else:
        assert err == f"error: {name} happened: fix it like so\n"
