"""reid.data.image_cache: decoded pixels equal read_image, built once, rebuilt when a file changes or is damaged."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import resource
import signal
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid.data.image_cache import DecodedImages
from reid.data.io import CorruptImageError, read_image
from reid.errors import ConfigError

SIZES = [(40, 24), (33, 17), (64, 32), (21, 50)]  # (height, width): data sets mix sizes (DukeMTMC, CUHK03)


def write_images(folder: Path, sizes: list[tuple[int, int]] = SIZES, seed: int = 0) -> list[Path]:
    """PNG files of random pixels, one per (height, width)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (height, width) in enumerate(sizes):
        path = folder / f"{i:03d}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def data_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.u8"))


class Log(list):
    """Collects the build lines; called as ``log``."""

    def __call__(self, line: str) -> None:
        self.append(line)


def assert_pixels(images: DecodedImages, paths: list[Path]) -> None:
    assert len(images) == len(paths)
    for i, path in enumerate(paths):
        expected = read_image(path)
        assert images[i].dtype == np.uint8 and images[i].shape == expected.shape
        np.testing.assert_array_equal(images[i], expected)
    np.testing.assert_array_equal(images.sizes, [read_image(p).shape[:2] for p in paths])


def test_pixels_equal_read_image_for_images_of_different_sizes(tmp_path):
    paths = write_images(tmp_path / "images")
    log = Log()
    images = DecodedImages.open(paths, tmp_path / "cache", workers=2, log=log)
    assert_pixels(images, paths)
    np.testing.assert_array_equal(images[-1], images[len(paths) - 1])
    with pytest.raises(IndexError):
        images[len(paths)]
    assert images.nbytes == sum(h * w * 3 for h, w in SIZES) == images.path.stat().st_size
    assert len(log) == 1 and f"{len(paths)} images" in log[0]
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_opening_again_does_not_rebuild(tmp_path):
    paths = write_images(tmp_path / "images")
    first = DecodedImages.open(paths, tmp_path / "cache")
    before = first.path.stat()
    log = Log()
    again = DecodedImages.open([str(p) for p in paths], tmp_path / "cache", log=log)
    after = again.path.stat()
    assert log == [] and again.path == first.path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert_pixels(again, paths)


def test_a_changed_image_is_decoded_again_and_an_open_cache_keeps_its_pixels(tmp_path):
    paths = write_images(tmp_path / "images")
    old = DecodedImages.open(paths, tmp_path / "cache")
    old_pixels = [read_image(p) for p in paths]
    before = paths[1].stat()
    cv2.imwrite(str(paths[1]), np.full((*SIZES[1], 3), 7, dtype=np.uint8))  # same size, other pixels
    os.utime(paths[1], ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    log = Log()
    new = DecodedImages.open(paths, tmp_path / "cache", log=log)
    assert len(log) == 1 and new.path != old.path
    assert_pixels(new, paths)
    assert (new[1] == 7).all()
    for i, expected in enumerate(old_pixels):  # the old cache is in use: neither removed nor changed
        np.testing.assert_array_equal(old[i], expected)
    assert old.path.exists()


def test_a_stale_cache_nobody_reads_is_removed_after_a_build(tmp_path):
    paths = write_images(tmp_path / "images")
    old = DecodedImages.open(paths, tmp_path / "cache")
    old_path = old.path
    del old
    gc.collect()
    other_set = DecodedImages.open(paths[:2], tmp_path / "cache")  # another path list: never removed
    before = paths[0].stat()
    os.utime(paths[0], ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    new = DecodedImages.open(paths, tmp_path / "cache")
    assert not old_path.exists() and not old_path.with_suffix(".json").exists()
    assert data_files(tmp_path / "cache") == sorted([new.path, other_set.path])
    assert_pixels(new, paths)


@pytest.mark.parametrize("damage", ["truncated data", "garbage manifest", "manifest of other sizes", "no manifest"])
def test_a_damaged_cache_is_rebuilt_not_trusted(tmp_path, damage):
    paths = write_images(tmp_path / "images")
    images = DecodedImages.open(paths, tmp_path / "cache")
    data, manifest = images.path, images.path.with_suffix(".json")
    del images
    gc.collect()
    if damage == "truncated data":
        os.truncate(data, data.stat().st_size - 5)
    elif damage == "garbage manifest":
        manifest.write_text('{"version": 1, "paths": [')
    elif damage == "manifest of other sizes":  # whole JSON, layout not the byte count
        text = manifest.read_text().replace("[40, 24]", "[40, 25]")
        assert text != manifest.read_text()
        manifest.write_text(text)
    else:
        manifest.unlink()
    log = Log()
    rebuilt = DecodedImages.open(paths, tmp_path / "cache", log=log)
    assert len(log) == 1
    assert_pixels(rebuilt, paths)
    assert data_files(tmp_path / "cache") == [data]


def _open_in_child(paths: list[Path], cache: Path, log_file: Path, barrier) -> None:
    barrier.wait()
    images = DecodedImages.open(paths, cache, log=lambda line: log_file.open("a").write(line + "\n"))
    for i, path in enumerate(paths):
        if not np.array_equal(images[i], read_image(path)):
            os._exit(3)
    os._exit(0)


def test_two_processes_opening_an_uncached_set_at_once_build_it_once(tmp_path):
    paths = write_images(tmp_path / "images", sizes=[(120, 60)] * 24 + SIZES)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(2)
    log_file = tmp_path / "builds.log"
    children = [
        context.Process(target=_open_in_child, args=(paths, tmp_path / "cache", log_file, barrier)) for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert len(log_file.read_text().splitlines()) == 1
    assert len(data_files(tmp_path / "cache")) == 1
    assert not list((tmp_path / "cache").glob("*.partial"))


def test_pickle_round_trip_gives_the_same_pixels_without_shipping_them(tmp_path):
    paths = write_images(tmp_path / "images")
    images = DecodedImages.open(paths, tmp_path / "cache")
    blob = pickle.dumps(images)
    assert len(blob) < images.nbytes / 4
    clone = pickle.loads(blob)
    assert clone.path == images.path and clone.nbytes == images.nbytes
    assert_pixels(clone, paths)


def test_returned_arrays_and_sizes_are_read_only(tmp_path):
    paths = write_images(tmp_path / "images")
    images = DecodedImages.open(paths, tmp_path / "cache")
    image = images[0]
    assert not image.flags.writeable and not images.sizes.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        image[0, 0, 0] = 1
    assert not pickle.loads(pickle.dumps(images))[0].flags.writeable


def test_a_bad_image_raises_the_readers_error_and_leaves_no_cache(tmp_path):
    paths = write_images(tmp_path / "images")
    paths[2].write_bytes(paths[2].read_bytes()[:40])  # a truncated PNG
    with pytest.raises(CorruptImageError, match=str(paths[2])):
        DecodedImages.open(paths, tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*.u8")) == list((tmp_path / "cache").glob("*.partial")) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DecodedImages.open([*paths[:2], tmp_path / "missing.png"], tmp_path / "cache")


skip_root = pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")


@skip_root
@pytest.mark.parametrize("where", ["the folder", "its parent"])
def test_an_unwritable_cache_folder_is_a_config_error_naming_it(tmp_path, where):
    paths = write_images(tmp_path / "images")
    locked = tmp_path / "locked"
    locked.mkdir()
    cache = locked if where == "the folder" else locked / "cache"
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    try:
        with pytest.raises(ConfigError) as caught:
            DecodedImages.open(paths, cache)
    finally:
        locked.chmod(0o700)
    message = str(caught.value)
    assert str(cache) in message and "data.image_cache_dir" in message and "\n" not in message


@skip_root
def test_a_built_cache_is_read_from_a_read_only_folder(tmp_path):
    paths = write_images(tmp_path / "images")
    DecodedImages.open(paths, tmp_path / "cache")
    (tmp_path / "cache").chmod(0o500)
    try:
        log = Log()
        assert_pixels(DecodedImages.open(paths, tmp_path / "cache", log=log), paths)
        assert log == []
    finally:
        (tmp_path / "cache").chmod(0o700)


def _open_with_a_small_file_size_limit(paths: list[Path], cache: Path) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
    try:
        DecodedImages.open(paths, cache)
    except ConfigError as err:
        os._exit(0 if str(cache) in str(err) and "data.image_cache_dir" in str(err) else 4)
    os._exit(5)


def test_a_full_disk_is_a_config_error_and_leaves_no_partial_file(tmp_path):
    paths = write_images(tmp_path / "images")
    child = multiprocessing.get_context("fork").Process(
        target=_open_with_a_small_file_size_limit, args=(paths, tmp_path / "cache")
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    assert list((tmp_path / "cache").glob("*.partial")) == list((tmp_path / "cache").glob("*.u8")) == []
