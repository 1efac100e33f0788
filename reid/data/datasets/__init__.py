"""The real data sets' loaders behind one call, ``load(name, root, **options) -> ReIDDataset``.

Registered names: ``market1501``, ``dukemtmcreid``, ``cuhk03``, ``msmt17``, ``synthetic``, ``custom``;
add your own with the :func:`register` decorator. A missing or incomplete data set raises
:class:`DatasetNotFoundError` naming the paths tried, the expected layout and where the files
come from.
"""

from reid.data.datasets import cuhk03, custom, dukemtmcreid, market1501, msmt17, synthetic  # noqa: F401  (registers them)
from reid.data.datasets.common import DatasetFormatError
from reid.data.datasets.registry import (
    DatasetNotFoundError,
    UnknownDatasetError,
    available,
    get_loader,
    load,
    register,
)

__all__ = [
    "DatasetFormatError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "available",
    "get_loader",
    "load",
    "register",
]
