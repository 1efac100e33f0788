"""CUHK03 from the original ``cuhk-03.mat``: PNG extraction, the classic 20 splits and the 767/700 protocol.

Over 400 lines on purpose: the .mat reader, the PNG extraction and both protocols of this one
data set share their index arithmetic, and splitting them would spread one file format over modules.

Files (the first layout found wins):

- ``root/cuhk03/cuhk03_release/cuhk-03.mat`` (torchreid's layout) or ``root/cuhk03_release/cuhk-03.mat``
  or ``root/cuhk-03.mat`` (``root`` is ``cuhk03_release`` itself);
- for ``protocol="new"``: ``cuhk03_new_protocol_config_{labeled,detected}.mat`` beside
  ``cuhk03_release`` (or inside it).

The .mat file is MATLAB v7.3 (HDF5). ``labeled`` and ``detected`` are (1, 5) object references,
one per camera pair; each dereferences to a (10, M) array of references, one per (image
column, person); each image is stored transposed as (3, W, H) uint8 RGB; empty cells (a person
with fewer than five images in a view) are 2-element uint64 arrays with ``MATLAB_empty=1``.
``testsets`` is (1, 20); entry k transposed is 100 rows of [camera pair, person], 1-based.

Extraction writes, once, ``images_labeled/`` or ``images_detected/`` beside ``cuhk03_release``
(or under ``extract_dir``), with names ``{pair}_{person:03d}_{view}_{image:02d}.png`` (view 1 for
columns 0-4, 2 for columns 5-9; the image number keeps its column, 01-10). A marker file is
written last; a folder without it (an interrupted run) is deleted and extracted again.

Camera ids: CUHK03 has 6 cameras grouped into 5 pairs, but which pairs share a camera is not
published, so the reference code's camid is the view within the pair (``view - 1``, 0 or 1),
which is what the same-camera exclusion of the evaluation sees. ``unique_cameras=True`` gives
each pair its own two ids instead (``2 * (pair - 1) + view - 1``, 0-9).

Identities: training pids are relabelled 0..q-1 in sorted (pair, person) order (classic) or
sorted label order (new). Test pids are ``1000 * pair + person`` under the classic protocol
(the reference code numbers them 0..99; only equality matters) and the config file's labels
under the new one.

Keypoints, if any, go under ``<cuhk03 folder>/keypoints/images_{labeled,detected}/``: the two
image folders reuse the same file names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reid.data.datasets.common import DatasetFormatError, compare_with_official, existing_keypoint_dir
from reid.data.datasets.registry import not_found, register
from reid.data.records import Record, ReIDDataset

log = logging.getLogger(__name__)

MAT_NAME = "cuhk-03.mat"
RELEASE_FOLDER = "cuhk03_release"
MARKER_NAME = ".extraction_complete.json"
IMAGE_NAME = re.compile(r"^(\d+)_(\d{3})_([12])_(\d{2})\.png$")
PROTOCOLS = ("classic", "new")

CUHK03_SOURCE = (
    "request cuhk03_release.zip from the authors' page http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html "
    "and unzip it into {root}/cuhk03/"
)
NEW_PROTOCOL_SOURCE = (
    "the 767/700 split files of Zhong et al. (CVPR 2017) are in https://github.com/zhunzhong07/person-re-ranking "
    "(evaluation/data/CUHK03); put them in {folder}"
)
LAYOUT = (
    "{root}/cuhk03/cuhk03_release/cuhk-03.mat, plus cuhk03_new_protocol_config_{{labeled,detected}}.mat "
    "in {root}/cuhk03/ for protocol=new"
)
# (images, ids) per split; the classic protocol's image counts depend on the split.
CLASSIC_OFFICIAL: dict[str, tuple[int | None, int | None]] = {
    "train": (None, 1367),
    "query": (None, 100),
    "gallery": (None, 100),
}
NEW_OFFICIAL: dict[str, dict[str, tuple[int | None, int | None]]] = {
    "labeled": {"train": (7368, 767), "query": (1400, 700), "gallery": (5328, 700)},
    "detected": {"train": (7365, 767), "query": (1400, 700), "gallery": (5332, 700)},
}


def locate_cuhk03(root: Path) -> tuple[Path, Path]:
    """Finds ``cuhk-03.mat``.

    Returns:
        ``(cuhk03 folder, mat path)``; the cuhk03 folder is the one holding ``cuhk03_release``.

    Raises:
        DatasetNotFoundError: naming every path tried.
    """
    root = Path(root)
    candidates = [
        (root / "cuhk03", root / "cuhk03" / RELEASE_FOLDER / MAT_NAME),
        (root, root / RELEASE_FOLDER / MAT_NAME),
        (root.parent if root.name == RELEASE_FOLDER else root, root / MAT_NAME),
    ]
    tried = []
    for folder, mat_path in candidates:
        if mat_path.is_file():
            return folder, mat_path
        tried.append((mat_path, "does not exist"))
    raise not_found("CUHK03", tried, LAYOUT.format(root=root), CUHK03_SOURCE.format(root=root))


def _open_mat(mat_path: Path) -> Any:
    import h5py

    try:
        return h5py.File(mat_path, "r")
    except OSError as err:
        raise DatasetFormatError(
            f"{mat_path} is not a MATLAB v7.3 (HDF5) file ({err}); download cuhk03_release.zip again"
        ) from err


def _dataset(mat: Any, key: str, mat_path: Path) -> Any:
    if key not in mat:
        raise DatasetFormatError(
            f"{mat_path} has no '{key}' variable (found {sorted(k for k in mat if not k.startswith('#'))}); "
            "is it the original cuhk-03.mat? Download cuhk03_release.zip again"
        )
    return mat[key]


def _pair_tables(mat: Any, kind: str, mat_path: Path) -> list[Any]:
    """The per-pair (10, M) reference arrays of ``labeled`` or ``detected``."""
    refs = np.asarray(_dataset(mat, kind, mat_path)).ravel()
    tables = []
    for pair_index, ref in enumerate(refs):
        table = mat[ref]
        if table.ndim != 2 or table.shape[0] != 10:
            raise DatasetFormatError(
                f"{mat_path}: {kind} camera pair {pair_index + 1} has shape {table.shape}, expected (10, persons); "
                "download cuhk03_release.zip again"
            )
        tables.append(table)
    return tables


def _is_empty_cell(cell: Any) -> bool:
    return cell.size == 0 or cell.ndim < 3 or bool(cell.attrs.get("MATLAB_empty", 0))


def _iter_images(mat: Any, kind: str, mat_path: Path) -> Iterator[tuple[str, np.ndarray | None]]:
    """Yields ``(png name, (H, W, 3) RGB image)`` for every cell, or ``(name, None)`` for an empty cell."""
    for pair_index, table in enumerate(_pair_tables(mat, kind, mat_path)):
        refs = np.asarray(table).T  # (persons, 10)
        for person_index, row in enumerate(refs):
            for column, ref in enumerate(row):
                pair, person, view, number = pair_index + 1, person_index + 1, 1 if column < 5 else 2, column + 1
                name = f"{pair}_{person:03d}_{view}_{number:02d}.png"
                cell = mat[ref]
                if _is_empty_cell(cell):
                    yield name, None
                    continue
                image = np.asarray(cell).T  # (3, W, H) -> (H, W, 3)
                if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                    raise DatasetFormatError(
                        f"{mat_path}: {kind} cell for {name} is {image.dtype} {cell.shape}, expected uint8 (3, W, H); "
                        "download cuhk03_release.zip again"
                    )
                yield name, image


def _progress(description: str, enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def extract_cuhk03_images(mat_path: Path, image_dir: Path, kind: str, *, progress: bool = True) -> Path:
    """Writes every non-empty ``kind`` cell of ``cuhk-03.mat`` as a PNG into ``image_dir``, once.

    A folder whose marker file exists (and whose PNG count matches it) is reused as is; any
    other existing folder is an interrupted extraction and is deleted and redone.

    Args:
        mat_path: the original ``cuhk-03.mat``.
        image_dir: the output folder (``.../images_labeled``).
        kind: ``labeled`` or ``detected``.
        progress: show a progress bar.

    Returns:
        ``image_dir``.
    """
    import cv2

    marker = image_dir / MARKER_NAME
    if marker.is_file():
        try:
            expected = int(json.loads(marker.read_text())["images"])
        except (ValueError, KeyError, TypeError):
            expected = -1
        found = sum(1 for _ in image_dir.glob("*.png"))
        if found == expected:
            return image_dir
        log.warning("%s: its marker records %s images but %d are there; extracting again", image_dir, expected, found)
        shutil.rmtree(image_dir)
    elif image_dir.exists():
        log.warning("%s: an interrupted extraction (no marker file); deleting it and extracting again", image_dir)
        shutil.rmtree(image_dir)
    image_dir.mkdir(parents=True)
    written = empty = 0
    with _open_mat(mat_path) as mat:
        total = sum(10 * table.shape[1] for table in _pair_tables(mat, kind, mat_path))
        with _progress(f"extracting CUHK03 {kind}", progress) as bar:
            task = bar.add_task("extract", total=total)
            for name, image in _iter_images(mat, kind, mat_path):
                bar.advance(task)
                if image is None:
                    empty += 1
                    continue
                target = image_dir / name
                if not cv2.imwrite(str(target), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"could not write {target}: check free space and permissions")
                written += 1
    temporary = marker.with_suffix(".tmp")
    temporary.write_text(json.dumps({"images": written, "empty_cells": empty, "source": str(mat_path)}))
    os.replace(temporary, marker)
    log.info("CUHK03 %s: extracted %d images into %s, skipped %d empty cells", kind, written, image_dir, empty)
    return image_dir


def parse_image_name(name: str) -> tuple[int, int, int, int]:
    """``'1_023_2_07.png'`` -> ``(pair, person, view, image)``; anything else raises DatasetFormatError."""
    match = IMAGE_NAME.match(name)
    if match is None:
        raise DatasetFormatError(f"'{name}' is not a CUHK03 image name like 1_001_1_01.png")
    return int(match[1]), int(match[2]), int(match[3]), int(match[4])


def _camid(pair: int, view: int, unique_cameras: bool) -> int:
    return 2 * (pair - 1) + view - 1 if unique_cameras else view - 1


def read_testsets(mat_path: Path) -> list[list[tuple[int, int]]]:
    """The classic test splits of ``cuhk-03.mat``: for each, its ``(pair, person)`` ids, 1-based."""
    with _open_mat(mat_path) as mat:
        splits = []
        for index, ref in enumerate(np.asarray(_dataset(mat, "testsets", mat_path)).ravel()):
            ids = np.asarray(mat[ref]).T
            if ids.ndim != 2 or ids.shape[1] != 2:
                raise DatasetFormatError(
                    f"{mat_path}: testsets entry {index} has shape {np.asarray(mat[ref]).shape}, expected (2, ids)"
                )
            splits.append([(int(pair), int(person)) for pair, person in np.rint(ids).astype(np.int64)])
    return splits


def _classic_split(
    image_dir: Path, mat_path: Path, split_id: int, unique_cameras: bool
) -> tuple[list[Record], list[Record]]:
    testsets = read_testsets(mat_path)
    if not 0 <= split_id < len(testsets):
        raise ValueError(
            f"split_id={split_id} is out of range: {mat_path} has {len(testsets)} classic splits "
            f"(0-{len(testsets) - 1})"
        )
    test_ids = set(testsets[split_id])
    people: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for path in sorted(image_dir.glob("*.png")):
        pair, person, view, _ = parse_image_name(path.name)
        people.setdefault((pair, person), []).append((str(path), _camid(pair, view, unique_cameras)))
    unknown = sorted(test_ids - set(people))
    if unknown:
        raise DatasetFormatError(
            f"{mat_path}: classic split {split_id} names {len(unknown)} (pair, person) ids with no image in "
            f"{image_dir}, first {unknown[0]}; delete {image_dir} to extract it again"
        )
    train: list[Record] = []
    test: list[Record] = []
    train_ids = sorted(key for key in people if key not in test_ids)
    label_of = {key: label for label, key in enumerate(train_ids)}
    for key in sorted(people):
        for image, camid in people[key]:
            if key in test_ids:
                test.append(Record(image, 1000 * key[0] + key[1], camid))
            else:
                train.append(Record(image, label_of[key], camid))
    return train, test


def _cell_string(value: Any) -> str:
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one string, got an array of shape {value.shape}")
        value = value.ravel()[0]
    return str(value)


def _integer_vector(config: dict, key: str, path: Path) -> np.ndarray:
    values = np.asarray(config[key], dtype=np.float64).ravel()
    rounded = np.rint(values)
    if not np.array_equal(values, rounded):
        raise DatasetFormatError(f"{path}: field '{key}' holds non-integer values; download the file again")
    return rounded.astype(np.int64)


def _new_protocol_split(
    config_path: Path, image_dir: Path, unique_cameras: bool
) -> tuple[list[Record], list[Record], list[Record]]:
    from scipy.io import loadmat

    try:
        config = loadmat(config_path)
    except (NotImplementedError, ValueError, OSError, TypeError) as err:
        raise DatasetFormatError(f"{config_path} is not a readable MATLAB v5 file ({err}); download it again") from err
    required = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx")
    missing = [key for key in required if key not in config]
    if missing:
        raise DatasetFormatError(f"{config_path} lacks the fields {missing}; download it again")
    try:
        names = [_cell_string(entry) for entry in np.asarray(config["filelist"], dtype=object).ravel()]
    except ValueError as err:
        raise DatasetFormatError(f"{config_path}: field 'filelist' is not a list of file names ({err})") from err
    labels = _integer_vector(config, "labels", config_path)
    if len(labels) != len(names):
        raise DatasetFormatError(f"{config_path}: {len(names)} file names but {len(labels)} labels")
    cam_ids = _integer_vector(config, "camId", config_path) if "camId" in config else None

    present = {path.name for path in image_dir.glob("*.png")}
    missing_images: list[str] = []
    camera_mismatches = 0

    def records(key: str) -> list[Record]:
        nonlocal camera_mismatches
        indices = _integer_vector(config, key, config_path)
        if indices.size and (indices.min() < 1 or indices.max() > len(names)):
            raise DatasetFormatError(
                f"{config_path}: field '{key}' has indices outside 1-{len(names)} (they are 1-based)"
            )
        result = []
        for index in indices - 1:
            name = names[index]
            try:
                pair, _, view, _ = parse_image_name(name)
            except DatasetFormatError as err:
                raise DatasetFormatError(f"{config_path}: filelist entry {index + 1}: {err}") from None
            if name not in present:
                missing_images.append(name)
            if cam_ids is not None and len(cam_ids) == len(names) and cam_ids[index] != view:
                camera_mismatches += 1
            result.append(Record(str(image_dir / name), int(labels[index]), _camid(pair, view, unique_cameras)))
        return result

    train, query, gallery = records("train_idx"), records("query_idx"), records("gallery_idx")
    if missing_images:
        raise DatasetFormatError(
            f"{config_path} lists {len(missing_images)} images absent from {image_dir}, first {missing_images[0]}; "
            f"delete {image_dir} to extract it again, or check the config is the one for these images"
        )
    if camera_mismatches:
        log.warning(
            "%s: %d entries have a camId different from the view in their file name; using the file name",
            config_path,
            camera_mismatches,
        )
    label_of = {pid: label for label, pid in enumerate(sorted({r.pid for r in train}))}
    train = [Record(r.image_path, label_of[r.pid], r.camid) for r in train]
    return train, query, gallery


@register("cuhk03")
def load_cuhk03(
    root: Path,
    *,
    labeled: bool = True,
    protocol: str = "classic",
    split_id: int = 0,
    unique_cameras: bool = False,
    extract_dir: str | Path | None = None,
    progress: bool = True,
) -> ReIDDataset:
    """CUHK03 (layout and conventions in the module docstring).

    Args:
        root: the data folder.
        labeled: manually labelled boxes (True) or the detector's boxes (False).
        protocol: ``classic`` (the paper's: split ``split_id`` of the 20, 100 test ids as both
            query and gallery, single-shot CMC) or ``new`` (Zhong et al.'s 767/700 split,
            standard CMC + mAP).
        split_id: which classic split, 0-19 (the paper uses the first). Ignored by ``new``.
        unique_cameras: distinct camids per camera pair (0-9) instead of the view (0-1).
        extract_dir: where the PNG folders go; default: the folder holding ``cuhk03_release``.
        progress: show a progress bar while extracting.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"cuhk03 protocol must be one of {PROTOCOLS}, got {protocol!r}")
    kind = "labeled" if labeled else "detected"
    folder, mat_path = locate_cuhk03(Path(root))
    config_path = None
    if protocol == "new":
        config_name = f"cuhk03_new_protocol_config_{kind}.mat"
        places = [folder / config_name, mat_path.parent / config_name]
        config_path = next((path for path in places if path.is_file()), None)
        if config_path is None:
            raise not_found(
                f"CUHK03 new-protocol file {config_name}",
                [(path, "does not exist") for path in places],
                LAYOUT.format(root=Path(root)),
                NEW_PROTOCOL_SOURCE.format(folder=folder),
            )
    image_dir = Path(extract_dir or folder) / f"images_{kind}"
    extract_cuhk03_images(mat_path, image_dir, kind, progress=progress)

    if protocol == "classic":
        train, test = _classic_split(image_dir, mat_path, int(split_id), unique_cameras)
        query, gallery, evaluation, official = test, list(test), "cuhk03", CLASSIC_OFFICIAL
    else:
        assert config_path is not None
        train, query, gallery = _new_protocol_split(config_path, image_dir, unique_cameras)
        evaluation, official = "market", NEW_OFFICIAL[kind]
    dataset = ReIDDataset(
        name="cuhk03",
        root=folder,
        train=train,
        query=query,
        gallery=gallery,
        protocol=evaluation,
        keypoint_dir=existing_keypoint_dir(folder),
        extras={
            "images": kind,
            "split_protocol": protocol,
            "split_id": int(split_id) if protocol == "classic" else None,
            "image_dir": str(image_dir),
            "unique_cameras": unique_cameras,
        },
    )
    compare_with_official(dataset, official, f"CUHK03 {kind} ({protocol} protocol)")
    return dataset
