"""Pictures: the regions grid draws boxes and joints, and the CLI writes a PNG."""

from __future__ import annotations

import numpy as np
from PIL import Image

from reid.tools.regions import main as regions_main
from reid.viz.regions import draw_regions, region_grid


def test_draw_regions_marks_boxes_and_joints_on_an_enlarged_padded_canvas():
    image = np.zeros((40, 20, 3), dtype=np.uint8)
    boxes = np.array([[2, 2, 18, 38], [2, 2, 18, 10], [2, 8, 18, 22], [2, 20, 18, 30], [2, 28, 18, 38]], dtype=float)
    keypoints = np.zeros((18, 3))
    keypoints[1] = (10, 9, 0.9)  # neck, confident: filled dot
    keypoints[8] = (8, 20, 0.05)  # r-hip, filled in from a canonical pose: hollow dot
    tile = draw_regions(image, boxes, keypoints, min_conf=0.1, scale=2, pad=5)
    assert tile.size == ((20 + 10) * 2, (40 + 10) * 2)
    pixels = np.asarray(tile)
    # the whole-body box's top-left corner, in canvas coordinates, is white
    assert tuple(pixels[(2 + 5) * 2, (2 + 5) * 2]) == (255, 255, 255)
    # the confident joint's centre is magenta, the filled-in joint's centre is not
    assert tuple(pixels[(9 + 5) * 2, (10 + 5) * 2]) == (255, 0, 255)
    assert tuple(pixels[(20 + 5) * 2, (8 + 5) * 2]) != (255, 0, 255)


def test_region_grid_lays_out_rows_and_columns():
    tiles = [Image.new("RGB", (10, 20), (i, 0, 0)) for i in range(5)]
    grid = region_grid(tiles, columns=2)
    assert grid.size == (20, 60)
    assert grid.getpixel((15, 25)) == (3, 0, 0)


def test_regions_cli_writes_a_png(tmp_path, data_dir):
    out = tmp_path / "regions.png"
    assert (
        regions_main(
            [
                "overrides=[data.options.num_train_ids=6,data.options.num_test_ids=4,data.options.images_per_train_id=4,"
                "data.options.images_per_test_id=4,data.options.num_distractors=3,data.options.num_junk=2]",
                f"data_dir={data_dir}",
                "n=4",
                "columns=2",
                f"out={out}",
            ]
        )
        == 0
    )
    picture = Image.open(out)
    assert picture.size[0] > 100 and picture.size[1] > 100
