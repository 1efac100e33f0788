"""The real data sets' loaders behind one call, ``load(name, root, **options) -> ReIDDataset``.

Every module of this package is imported here, so a module whose loader carries the
:func:`register` decorator is a data set (:func:`available` lists their names): adding one is
its module, its ``conf/data/<name>.yaml`` and its test. A missing or incomplete data set raises
:class:`DatasetNotFoundError` naming the paths tried, the expected layout and where the files
come from.
"""

import importlib
import pkgutil

from reid.data.datasets.common import DatasetFormatError
from reid.data.datasets.registry import (
    DatasetNotFoundError,
    UnknownDatasetError,
    available,
    get_loader,
    is_test_only,
    load,
    register,
)

# the loaders register themselves when their module is imported
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("common", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DatasetFormatError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "available",
    "get_loader",
    "is_test_only",
    "load",
    "register",
]
