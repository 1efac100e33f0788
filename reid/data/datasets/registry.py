"""The data set registry: names -> loader functions, `load(name, root, **options)`, and the not-found error."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reid.data.records import ReIDDataset
from reid.errors import ReidError

log = logging.getLogger(__name__)

Loader = Callable[..., ReIDDataset]
"""A loader is called as ``loader(root: Path, **options)`` and returns a :class:`ReIDDataset`."""

_LOADERS: dict[str, Loader] = {}
# names of the data sets that have no training split (Occluded-REID, Partial-REID): scored, never trained on
_TEST_ONLY: set[str] = set()

SYNTHETIC_HINT = "or run with data=synthetic, the generated zero-download data set"


class DatasetNotFoundError(ReidError, FileNotFoundError):
    """A data set's files are missing or incomplete; the message says where we looked and how to get them."""


def not_found(
    title: str,
    tried: Sequence[tuple[Path, str]],
    layout: str,
    source: str,
) -> DatasetNotFoundError:
    """Builds the single error raised when a data set cannot be located.

    Args:
        title: human name of the data set (``Market-1501``).
        tried: ``(path, what was wrong there)`` for every location looked at.
        layout: the expected folder layout, one line.
        source: where the official files come from and where to put them.
    """
    places = "; ".join(f"{path} ({problem})" for path, problem in tried)
    return DatasetNotFoundError(
        f"{title} not found or incomplete. Tried: {places}. Expected layout: {layout}. "
        f"Get it: {source}; {SYNTHETIC_HINT}."
    )


class UnknownDatasetError(KeyError):
    """A data set name nobody registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def _normalise(name: str) -> str:
    return name.strip().lower()


def register(name: str, *, overwrite: bool = False, test_only: bool = False) -> Callable[[Loader], Loader]:
    """Decorator adding a loader under ``name`` so that ``load(name, root, **options)`` finds it.

    Example::

        @register("mydata")
        def load_mydata(root: Path, *, fold: int = 0) -> ReIDDataset: ...

    Args:
        name: registry name (case-insensitive).
        overwrite: replace an existing loader of that name instead of raising.
        test_only: the data set has no training split (its ``train`` is empty): training on it is
            refused before anything is read (:func:`is_test_only`); it is scored as a test set.
    """
    key = _normalise(name)
    if not key:
        raise ValueError("a data set name must not be empty")

    def decorator(loader: Loader) -> Loader:
        if key in _LOADERS and _LOADERS[key] is not loader and not overwrite:
            raise ValueError(f"data set '{key}' is already registered (pass overwrite=True to replace it)")
        _LOADERS[key] = loader
        if test_only:
            _TEST_ONLY.add(key)
        else:
            _TEST_ONLY.discard(key)
        return loader

    return decorator


def available() -> list[str]:
    """The registered data set names, sorted."""
    return sorted(_LOADERS)


def is_test_only(name: str) -> bool:
    """True for a registered data set without a training split (``register(..., test_only=True)``); False otherwise."""
    return _normalise(name) in _TEST_ONLY


def get_loader(name: str) -> Loader:
    """The loader registered under ``name``; unknown names raise :class:`UnknownDatasetError` (a KeyError)."""
    key = _normalise(name)
    if key not in _LOADERS:
        raise UnknownDatasetError(f"unknown data set '{name}'; known data sets: {', '.join(available())}")
    return _LOADERS[key]


def load(name: str, root: str | Path, **options: Any) -> ReIDDataset:
    """Loads a registered data set and logs its summary table.

    Args:
        name: ``market1501``, ``dukemtmcreid``, ``cuhk03``, ``synthetic``, ``custom`` or a
            name added with :func:`register`.
        root: the data folder; each loader accepts its data set's folder directly under it,
            torchreid's nested layout, or ``root`` being the data set folder itself.
        **options: the loader's keyword options (e.g. ``labeled``, ``protocol`` for CUHK03).

    Raises:
        UnknownDatasetError: unknown name (a KeyError; the message lists the known ones).
        TypeError: an option the loader does not take (the message lists those it does).
        DatasetNotFoundError: the data set's files are missing or incomplete.
    """
    loader = get_loader(name)
    root = Path(root).expanduser().absolute()
    signature = inspect.signature(loader)
    try:
        signature.bind(root, **options)
    except TypeError as err:
        accepted = [
            param.name
            for param in list(signature.parameters.values())[1:]
            if param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        ]
        raise TypeError(
            f"data set '{name}' cannot take options {sorted(options)} ({err}); "
            f"it accepts: {', '.join(accepted) or 'none'}"
        ) from None
    dataset = loader(root, **options)
    if not isinstance(dataset, ReIDDataset):
        raise TypeError(f"the loader of data set '{name}' returned {type(dataset).__name__}, not a ReIDDataset")
    log.info("\n%s", dataset.summary())
    return dataset
