"""Configs read from files are data, never code: every ``_target_`` is checked against this project's own
before anything is built.

A checkpoint's stored run config (``reid_config``) passes every integrity check and loads with
``torch.load(weights_only=True)``, yet Hydra's ``instantiate`` would call whatever its
``_target_`` keys name (``torch.load`` of a pickle, ``builtins.open(<file>, "w")``...). So the
parts of a stored config that this project builds from, ``model`` and ``data``, are checked
here, recursively, before anything reads them:

* ``model._target_``: one of the project's LightningModules (:data:`MODULE_TARGETS`);
* ``model.net._target_``: one of the project's networks (:data:`NETWORK_TARGETS`);
* ``model.optimizer`` / ``model.scheduler``: a ``torch.optim`` optimiser / a
  ``torch.optim.lr_scheduler`` scheduler class (found by name in those modules, nothing
  imported);
* ``data._target_``: one of the project's data modules (:data:`DATA_TARGETS`);
* nowhere else a ``_target_``, and no ``${...}`` interpolation (stored configs are resolved
  when they are written, and a resolver such as ``oc.env`` would read this machine's secrets).

Anything else is refused with one line naming the key (:class:`UntrustedConfigError`), before
a single object is made. A user whose own runs name their own classes (an optimiser of their
package, say) lists the module prefixes they trust in ``REID_TRUSTED_TARGETS``
(comma-separated, e.g. ``mypkg.optim``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from reid.errors import ReidError

MODULE_TARGETS = frozenset({"reid.lit.module.ReIDModule", "reid.lit.imagenet.ClassificationModule"})
NETWORK_TARGETS = frozenset({"reid.models.AttentionReIDNet", "reid.models.network.AttentionReIDNet"})
DATA_TARGETS = frozenset({"reid.lit.datamodule.ReIDDataModule", "reid.lit.imagenet.ImageNetDataModule"})
# the only keys Hydra's instantiate reads besides the target's own parameters
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
TRUST_ENV = "REID_TRUSTED_TARGETS"


class UntrustedConfigError(ReidError, ValueError):
    """A stored config names code that is not this project's (or an interpolation): refused before anything runs."""


def _user_trusted(target: str) -> bool:
    prefixes = [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",") if p.strip()]
    return any(target == p or target.startswith(p.rstrip(".") + ".") for p in prefixes)


def _torch_class(target: str, module_name: str, base_name: str) -> bool:
    """Whether ``target`` is ``<module_name>.<Class>`` with Class a subclass of ``module_name``'s ``base_name``.

    Looked up as an attribute of the already imported module: nothing is imported from the name.
    """
    import torch.optim
    import torch.optim.lr_scheduler

    modules = {"torch.optim": torch.optim, "torch.optim.lr_scheduler": torch.optim.lr_scheduler}
    prefix = module_name + "."
    if not target.startswith(prefix) or "." in target[len(prefix) :]:
        return False
    module = modules[module_name]
    candidate = getattr(module, target[len(prefix) :], None)
    base = getattr(module, base_name)
    return isinstance(candidate, type) and issubclass(candidate, base) and candidate is not base


def _allowed_target(path: str, target: str) -> bool:
    """Whether the ``_target_`` at ``path`` (e.g. ``model.net._target_``) may be built from a file."""
    if _user_trusted(target):
        return True
    if path == "model._target_":
        return target in MODULE_TARGETS
    if path == "model.net._target_":
        return target in NETWORK_TARGETS
    if path == "model.optimizer._target_":
        return _torch_class(target, "torch.optim", "Optimizer")
    if path == "model.scheduler._target_":
        return _torch_class(target, "torch.optim.lr_scheduler", "LRScheduler")
    if path == "data._target_":
        return target in DATA_TARGETS
    return False


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every ``(key path, value)`` under ``node``, containers included."""
    yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def check_stored_config(stored: Any, source: str, sections: tuple[str, ...] = ("model", "data")) -> None:
    """Refuses a stored run config whose ``sections`` name code that is not this project's.

    Args:
        stored: the config as plain containers (a checkpoint's ``reid_config``).
        source: the file it came from, for the message.
        sections: the top-level keys this project builds from (the rest is never instantiated
            from a file: a run's own callbacks and loggers may name any class).

    Raises:
        UntrustedConfigError: one line naming the key, its value and the fix.
    """
    if stored is None:
        return
    if not isinstance(stored, Mapping):
        raise UntrustedConfigError(f"{source}: its stored run config is a {type(stored).__name__}, not a mapping")
    for section in sections:
        for path, value in _walk(stored.get(section), section):
            key = path.rsplit(".", 1)[-1]
            if isinstance(value, str) and "${" in value:
                raise UntrustedConfigError(
                    f"{source}: refusing the stored config key '{path}' = {value[:80]!r}: an interpolation, which "
                    "checkpoints written by train.py never hold (they are resolved when written); use checkpoints "
                    "you trust"
                )
            if key.startswith("_") and key.endswith("_") and key not in HYDRA_KEYS:
                raise UntrustedConfigError(f"{source}: refusing the stored config key '{path}': not a Hydra key")
            if key == "_target_" and not (isinstance(value, str) and _allowed_target(path, value)):
                raise UntrustedConfigError(
                    f"{source}: refusing the stored config key '{path}' = {str(value)[:80]!r}: a checkpoint may only "
                    "name this project's own classes (and torch optimisers and schedulers), nothing was run; if "
                    f"you wrote it with a class of your own, list its module in {TRUST_ENV}"
                )
