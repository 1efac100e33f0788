"""Fixture writers for tests: tiny data sets in the real on-disk formats (Market, Duke, CUHK03 .mat files)."""

from __future__ import annotations

import itertools
import string
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

MARKET_SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

# A (pid, camera) entry, or a literal file name.
Entry = tuple[int, int] | str

# Small Market tree: train pids 2, 5, 9 (labels 0, 1, 2); one junk image in train and gallery;
# one distractor in the gallery and one (to be dropped) in the query folder.
DEFAULT_MARKET_SPLITS: dict[str, list[Entry]] = {
    "train": [(9, 1), (2, 1), (2, 3), (5, 2), (5, 6), (9, 4), (-1, 2)],
    "query": [(2, 2), (5, 1), (0, 3)],
    "gallery": [(2, 1), (2, 4), (5, 2), (5, 5), (0, 1), (0, 6), (-1, 3), (7, 2)],
}
DEFAULT_DUKE_SPLITS: dict[str, list[Entry]] = {
    "train": [(1, 1), (1, 8), (4, 2), (4, 3)],
    "query": [(10, 5), (12, 8)],
    "gallery": [(10, 6), (12, 1), (12, 7), (30, 2)],
}


def write_image(path: Path, *, width: int = 8, height: int = 16, seed: int = 0) -> Path:
    """Writes a small random RGB image (format from the suffix) and returns its path."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"could not write {path}")
    return path


def market_name(pid: int, camera: int, *, sequence: int = 1, frame: int = 0, box: int = 1) -> str:
    """A Market-1501 file name: ``0002_c1s1_000451_03.jpg`` (junk is written ``-1_c...``)."""
    prefix = "-1" if pid == -1 else f"{pid:04d}"
    return f"{prefix}_c{camera}s{sequence}_{frame:06d}_{box:02d}.jpg"


def duke_name(pid: int, camera: int, *, frame: int = 0) -> str:
    """A DukeMTMC-reID file name: ``0001_c2_f0046182.jpg``."""
    return f"{pid:04d}_c{camera}_f{frame:07d}.jpg"


def _write_tree(
    folder: Path,
    splits: Mapping[str, Sequence[Entry]],
    naming,
    extra_files: Mapping[str, Iterable[str]],
    keypoints: bool,
) -> Path:
    frames = itertools.count(100)
    for split, sub in MARKET_SPLIT_FOLDERS.items():
        directory = folder / sub
        directory.mkdir(parents=True, exist_ok=True)
        for entry in splits.get(split, []):
            name = entry if isinstance(entry, str) else naming(entry[0], entry[1], next(frames))
            write_image(directory / name, seed=zlib.crc32(name.encode()))
        for name in extra_files.get(split, []):
            (directory / name).write_bytes(b"not an image")
    if keypoints:
        (folder / "keypoints").mkdir(exist_ok=True)
    return folder


def write_market_tree(
    root: Path,
    splits: Mapping[str, Sequence[Entry]] | None = None,
    *,
    folder: str = "Market-1501-v15.09.15",
    extra_files: Mapping[str, Iterable[str]] | None = None,
    keypoints: bool = False,
) -> Path:
    """Writes a Market-1501 tree ``root/folder/{bounding_box_train,bounding_box_test,query}``.

    Args:
        root: where the data set folder goes.
        splits: ``split -> entries``; an entry is ``(pid, camera)`` (named with a fresh frame
            number) or a literal file name. Default: :data:`DEFAULT_MARKET_SPLITS`.
        folder: the data set folder's name (``""`` writes the splits into ``root`` itself).
        extra_files: ``split -> names`` of non-image files to add (``Thumbs.db``).
        keypoints: also create ``<folder>/keypoints/``.

    Returns:
        The data set folder.
    """
    return _write_tree(
        Path(root) / folder,
        DEFAULT_MARKET_SPLITS if splits is None else splits,
        lambda pid, camera, frame: market_name(pid, camera, frame=frame),
        extra_files or {},
        keypoints,
    )


def write_duke_tree(
    root: Path,
    splits: Mapping[str, Sequence[Entry]] | None = None,
    *,
    folder: str = "DukeMTMC-reID",
    extra_files: Mapping[str, Iterable[str]] | None = None,
    keypoints: bool = False,
) -> Path:
    """Writes a DukeMTMC-reID tree (same arguments as :func:`write_market_tree`; default
    :data:`DEFAULT_DUKE_SPLITS`)."""
    return _write_tree(
        Path(root) / folder,
        DEFAULT_DUKE_SPLITS if splits is None else splits,
        lambda pid, camera, frame: duke_name(pid, camera, frame=frame),
        extra_files or {},
        keypoints,
    )


# ----------------------------------------------------------------------------------------- MSMT17

DEFAULT_MSMT17_SPLITS: dict[str, list[tuple[int, int]]] = {
    "train": [(0, 1), (0, 3), (4, 2), (4, 5)],
    "val": [(7, 1), (7, 15)],
    "query": [(0, 2), (11, 4)],
    "gallery": [(0, 9), (11, 4), (11, 6), (20, 1)],
}


def msmt17_name(pid: int, index: int, camera: int) -> str:
    """An MSMT17 file name: ``<pid>_<index>_<camera>_<date><time>_<frame>_<n>.jpg``."""
    return f"{pid:04d}_{index:03d}_{camera:02d}_0303morning_{15 + index:04d}_0.jpg"


def write_msmt17_tree(
    root: Path,
    splits: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    *,
    version: str = "V1",
) -> Path:
    """Writes an MSMT17 release ``root/MSMT17_<version>`` with its images and four list files.

    ``splits``: ``train``, ``val``, ``query``, ``gallery`` -> ``(pid, camera)`` entries (test pids
    may repeat training ones: MSMT17's test ids are numbered apart, the lists say which is which).
    """
    folder = Path(root) / f"MSMT17_{version}"
    train_dir, test_dir = ("mask_train_v2", "mask_test_v2") if version == "V2" else ("train", "test")
    index = itertools.count()
    for split, entries in (DEFAULT_MSMT17_SPLITS if splits is None else splits).items():
        image_dir = folder / (train_dir if split in ("train", "val") else test_dir)
        lines = []
        for pid, camera in entries:
            relative = f"{pid:04d}/{msmt17_name(pid, next(index), camera)}"
            write_image(image_dir / relative, seed=zlib.crc32(relative.encode()))
            lines.append(f"{relative} {pid}")
        (folder / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


# ----------------------------------------------------------------------------------------- CUHK03


def cuhk03_pixels(kind: str, pair: int, person: int, column: int, *, width: int = 6, height: int = 10) -> np.ndarray:
    """The (H, W, 3) uint8 RGB image the fixture stores in one cell (pair, person 1-based; column 0-9).

    Rows, columns and channels all vary, so a transposition mistake changes the pixels.
    """
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    offset = (0 if kind == "labeled" else 100) + 37 * pair + 11 * person + 5 * column
    return ((offset + 13 * y + 3 * x + 80 * c) % 256).astype(np.uint8)


# Default empty cells, as (pair, person, column): a person with three view-1 images, a person seen
# in one view only, and a detected-only gap.
DEFAULT_EMPTY_CELLS = {
    "labeled": {(1, 1, 3), (1, 1, 4), (2, 2, 5), (2, 2, 6), (2, 2, 7), (2, 2, 8), (2, 2, 9)},
    "detected": {(1, 2, 9)},
}
DEFAULT_TESTSETS = [[(1, 2), (3, 1)], [(1, 1), (2, 2)], [(2, 1), (5, 1)]]


@dataclass
class Cuhk03Fixture:
    """What :func:`write_cuhk03_mat` wrote, for computing expected values."""

    path: Path
    persons_per_pair: tuple[int, ...]
    empty_cells: dict[str, set[tuple[int, int, int]]]
    testsets: list[list[tuple[int, int]]]
    width: int
    height: int
    names: dict[str, list[str]] = field(default_factory=dict)

    def cells(self, kind: str) -> list[tuple[int, int, int]]:
        """The non-empty ``(pair, person, column)`` cells of ``kind``, in (pair, person, column) order."""
        return [
            (pair, person, column)
            for pair, count in enumerate(self.persons_per_pair, start=1)
            for person in range(1, count + 1)
            for column in range(10)
            if (pair, person, column) not in self.empty_cells.get(kind, set())
        ]


def _matlab_ref_names() -> Iterable[str]:
    """``a, b, ..., z, aa, ab, ...``: the names MATLAB gives datasets in ``#refs#``."""
    for length in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            yield "".join(letters)


MATLAB_73_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  6 10:00:00 2014 HDF5 schema 1.00 ."


def write_cuhk03_mat(
    path: Path,
    *,
    persons_per_pair: Sequence[int] = (3, 2, 2, 1, 1),
    empty_cells: Mapping[str, set[tuple[int, int, int]]] | None = None,
    testsets: Sequence[Sequence[tuple[int, int]]] | None = None,
    width: int = 6,
    height: int = 10,
) -> Cuhk03Fixture:
    """Writes a small ``cuhk-03.mat`` in the real MATLAB v7.3 layout.

    A 512-byte user block starting with the MATLAB header; ``labeled`` and ``detected`` as (1, P)
    object references to (10, M) reference arrays in ``#refs#``; images (3, W, H) uint8 (the
    transposed H x W x 3 array of :func:`cuhk03_pixels`); empty cells as uint64 ``[0, 0]`` with
    ``MATLAB_empty=1``; ``testsets`` as (1, S) references to (2, n) double arrays.

    Args:
        path: the file to write (parents are created).
        persons_per_pair: M for each camera pair (the real file: 843, 440, 77, 58, 49).
        empty_cells: ``kind -> {(pair, person, column)}``, 1-based pair/person, column 0-9.
        testsets: the classic splits, lists of ``(pair, person)``.
        width, height: image size.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    empty_cells = {k: set(v) for k, v in (DEFAULT_EMPTY_CELLS if empty_cells is None else empty_cells).items()}
    testsets = [list(s) for s in (DEFAULT_TESTSETS if testsets is None else testsets)]
    names = _matlab_ref_names()

    with h5py.File(path, "w", userblock_size=512) as mat:
        refs_group = mat.create_group("#refs#")

        def stored(data: np.ndarray, matlab_class: str, *, empty: bool = False) -> h5py.Reference:
            dataset = refs_group.create_dataset(next(names), data=data)
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            if empty:
                dataset.attrs["MATLAB_empty"] = np.uint8(1)
            return dataset.ref

        for kind in ("labeled", "detected"):
            pair_refs = np.empty((1, len(persons_per_pair)), dtype=h5py.ref_dtype)
            for pair, count in enumerate(persons_per_pair, start=1):
                cells = np.empty((10, count), dtype=h5py.ref_dtype)
                for person in range(1, count + 1):
                    for column in range(10):
                        if (pair, person, column) in empty_cells.get(kind, set()):
                            cells[column, person - 1] = stored(np.zeros(2, dtype=np.uint64), "double", empty=True)
                        else:
                            image = cuhk03_pixels(kind, pair, person, column, width=width, height=height)
                            cells[column, person - 1] = stored(np.ascontiguousarray(image.T), "uint8")
                pair_refs[0, pair - 1] = stored(cells, "cell")
            top = mat.create_dataset(kind, data=pair_refs)
            top.attrs["MATLAB_class"] = np.bytes_("cell")

        split_refs = np.empty((1, len(testsets)), dtype=h5py.ref_dtype)
        for index, ids in enumerate(testsets):
            split_refs[0, index] = stored(np.asarray(ids, dtype=np.float64).T, "double")
        top = mat.create_dataset("testsets", data=split_refs)
        top.attrs["MATLAB_class"] = np.bytes_("cell")

    header = MATLAB_73_HEADER.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as handle:
        handle.write(header)

    fixture = Cuhk03Fixture(path, tuple(persons_per_pair), empty_cells, testsets, width, height)
    for kind in ("labeled", "detected"):
        fixture.names[kind] = [
            f"{pair}_{person:03d}_{1 if column < 5 else 2}_{column + 1:02d}.png"
            for pair, person, column in fixture.cells(kind)
        ]
    return fixture


def write_cuhk03_new_protocol(
    folder: Path,
    *,
    kind: str = "labeled",
    filelist: Sequence[str],
    labels: Sequence[int],
    train_idx: Sequence[int],
    query_idx: Sequence[int],
    gallery_idx: Sequence[int],
    cam_ids: Sequence[int] | None = None,
) -> Path:
    """Writes ``cuhk03_new_protocol_config_{kind}.mat`` (MATLAB v5) as Zhong et al. distribute it.

    ``filelist`` becomes an N x 1 cell of strings; ``labels``, ``camId`` and the 1-based
    ``*_idx`` vectors become double column vectors (as MATLAB saves them).

    Returns:
        The written file.
    """
    from scipy.io import savemat

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = np.empty((len(filelist), 1), dtype=object)
    for index, name in enumerate(filelist):
        names[index, 0] = name

    def column(values: Sequence[int]) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(-1, 1)

    if cam_ids is None:
        # the view in the file name; 0 for names that are not CUHK03's (tests of bad entries)
        cam_ids = [int(name.split("_")[2]) if name.count("_") == 3 else 0 for name in filelist]
    path = folder / f"cuhk03_new_protocol_config_{kind}.mat"
    savemat(
        path,
        {
            "filelist": names,
            "labels": column(labels),
            "camId": column(cam_ids),
            "train_idx": column(train_idx),
            "query_idx": column(query_idx),
            "gallery_idx": column(gallery_idx),
        },
    )
    return path
