"""Pictures: ranked lists (Fig. 6), attention maps (Fig. 7), CMC curves and mu histograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reid.viz.attention import (
    attention_map,
    attention_picture,
    display_image,
    fuse_part_maps,
    overlay_heatmap,
    parts_in_whole_crop,
)
from reid.viz.curves import cmc_curve_picture, part_weight_histogram
from reid.viz.ranked import (
    MATCH_COLOUR,
    MISMATCH_COLOUR,
    QUERY_COLOUR,
    choose_queries,
    ranked_gallery,
    ranked_list_picture,
    tile_origin,
)

# ---------------------------------------------------------------------------------------------
# ranked lists

# Gallery: 0 = query 0's identity seen by its own camera (excluded), 3 = junk (excluded);
# query 0 (pid 1, cam 0) ranks 1 (pid 2), 2 (pid 1), 4 (pid 3), 5 (pid 1): miss, hit, miss, hit.
G_PIDS = np.array([1, 2, 1, -1, 3, 1])
G_CAMS = np.array([0, 1, 1, 2, 1, 2])
Q_PIDS = np.array([1, 3])
Q_CAMS = np.array([0, 0])
DISTMAT = np.array(
    [
        [0.0, 0.1, 0.2, 0.05, 0.3, 0.4],
        [0.5, 0.4, 0.3, 0.0, 0.1, 0.2],  # query 1 (pid 3): nearest valid entry is 4, a hit
    ]
)
TILE = (20, 10)
FRAME = 3


def gallery_colour(g: int) -> tuple[int, int, int]:
    return (40 + 20 * g, 40 + 20 * g, 200)


def solid(colour: tuple[int, int, int]) -> np.ndarray:
    return np.full((30, 15, 3), colour, dtype=np.uint8)


def tile_pixels(picture: Image.Image, row: int, column: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(a frame pixel, the image's centre pixel) of one tile."""
    x, y = tile_origin(row, column, tile_size=TILE, frame=FRAME)
    frame = picture.getpixel((x + 1, y + 1))
    centre = picture.getpixel((x + FRAME + TILE[1] // 2, y + FRAME + TILE[0] // 2))
    return frame, centre


def test_ranked_gallery_skips_junk_and_same_camera_matches():
    assert ranked_gallery(DISTMAT[0], 1, 0, G_PIDS, G_CAMS, topk=10).tolist() == [1, 2, 4, 5]
    assert ranked_gallery(DISTMAT[0], 1, 0, G_PIDS, G_CAMS, topk=2, exclude_same_camera=False).tolist() == [0, 1]


def test_ranked_list_frames_matches_green_and_others_red(tmp_path):
    query_path = tmp_path / "query0.png"
    Image.fromarray(solid((250, 250, 0))).save(query_path)
    # the excluded gallery images are missing files: only the images shown may be read
    gallery = [
        tmp_path / "never_read.png",
        solid(gallery_colour(1)),
        solid(gallery_colour(2)),
        tmp_path / "junk_never_read.png",
        solid(gallery_colour(4)),
        solid(gallery_colour(5)),
    ]
    picture = ranked_list_picture(
        DISTMAT,
        Q_PIDS,
        G_PIDS,
        Q_CAMS,
        G_CAMS,
        [query_path, solid((0, 0, 0))],
        gallery,
        query_rows=[0, 1],
        topk=4,
        tile_size=TILE,
        frame=FRAME,
    )
    # query tile (16 wide with its frame), a 12-pixel gap, 4 gallery tiles 2 pixels apart
    assert picture.size == (16 + 12 + 4 * 16 + 3 * 2, 2 * (16 + TILE[0] + 2 * FRAME + 4))

    frame, centre = tile_pixels(picture, 0, 0)
    assert frame == QUERY_COLOUR and centre == (250, 250, 0)
    expected = [(1, MISMATCH_COLOUR), (2, MATCH_COLOUR), (4, MISMATCH_COLOUR), (5, MATCH_COLOUR)]
    for column, (g, colour) in enumerate(expected, start=1):
        frame, centre = tile_pixels(picture, 0, column)
        assert frame == colour, f"rank {column}"
        assert centre == gallery_colour(g), f"rank {column}"
    # query 1: rank 1 is gallery entry 4, its own identity
    assert tile_pixels(picture, 1, 1) == (MATCH_COLOUR, gallery_colour(4))


def test_ranked_list_compares_models_row_by_row_and_pads_short_galleries():
    gallery = [solid(gallery_colour(g)) for g in range(6)]
    queries = [solid((0, 0, 0))] * 2
    swapped = DISTMAT[:, ::-1].copy()
    picture = ranked_list_picture(
        {"baseline": DISTMAT, "intra_inter": torch.from_numpy(swapped)},
        Q_PIDS,
        torch.from_numpy(G_PIDS),
        Q_CAMS,
        G_CAMS,
        queries,
        gallery,
        query_rows=[0],
        topk=5,
        tile_size=TILE,
        frame=FRAME,
    )
    assert picture.size[1] == 2 * (16 + TILE[0] + 2 * FRAME + 4)
    assert tile_pixels(picture, 0, 1)[1] == gallery_colour(1)  # baseline: entry 1 first
    assert tile_pixels(picture, 1, 1)[1] == gallery_colour(5)  # reversed distances: entry 5 first
    # only 4 valid gallery entries: the 5th slot is empty, without a match/mismatch frame
    assert tile_pixels(picture, 0, 5)[0] not in (MATCH_COLOUR, MISMATCH_COLOUR)


def test_choose_queries_is_seeded_and_skips_queries_without_a_true_match():
    q_pids = np.array([1, 7, 3, 1, -1])
    q_cams = np.array([0, 0, 0, 1, 0])
    g_pids = np.array([1, 3, 7])
    g_cams = np.array([1, 1, 0])  # pid 7 only seen by the query's camera: no true match
    picks = choose_queries(q_pids, q_cams, g_pids, g_cams, num_queries=10, seed=3)
    assert picks.tolist() == [0, 2]  # query 3: pid 1 only in its own camera 1; 4 is junk
    assert (
        choose_queries(q_pids, q_cams, g_pids, g_cams, num_queries=1, seed=5).tolist()
        == choose_queries(q_pids, q_cams, g_pids, g_cams, num_queries=1, seed=5).tolist()
    )


def test_ranked_list_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="distmat has shape"):
        ranked_list_picture(DISTMAT[:, :5], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, [None] * 2, [None] * 6)
    with pytest.raises(ValueError, match="gallery_images has 5 entries, expected 6"):
        ranked_list_picture(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, [None] * 2, [None] * 5)


# ---------------------------------------------------------------------------------------------
# attention maps


def test_parts_in_whole_crop_scales_and_shifts_the_part_boxes():
    boxes = np.array(
        [
            [10, 20, 50, 100],  # whole body 40 x 80 -> crop (h, w) = (160, 80): scale 2
            [10, 20, 50, 40],
            [10, 30, 50, 60],
            [5, 60, 55, 90],
            [10, 90, 50, 110],  # leaves the whole-body box: stays outside the crop
        ],
        dtype=float,
    )
    mapped = parts_in_whole_crop(boxes, (160, 80))
    assert mapped.tolist() == [[0, 0, 80, 40], [0, 20, 80, 80], [-10, 80, 90, 140], [0, 140, 80, 180]]


def test_fused_part_maps_take_the_maximum_where_boxes_overlap():
    maps = [np.full((2, 2), value) for value in (0.2, 0.7, 0.1, 0.5)]
    boxes = np.array([[0, 0, 4, 4], [0, 2, 4, 6], [0, 4, 4, 8], [0, 6, 4, 10]], dtype=float)  # last leaves the canvas
    fused = fuse_part_maps(maps, boxes, (8, 4))
    assert fused.shape == (8, 4)
    np.testing.assert_allclose(fused[:, 0], [0.2, 0.2, 0.7, 0.7, 0.7, 0.7, 0.5, 0.5])


def test_fused_part_maps_can_normalise_each_part_first():
    maps = [np.array([[0.2], [0.3]]), np.array([[0.6], [0.8]]), np.full((2, 1), 0.1), np.full((2, 1), 0.5)]
    boxes = np.array([[0, 0, 1, 2], [0, 2, 1, 4], [0, 4, 1, 6], [0, 6, 1, 8]], dtype=float)
    fused = fuse_part_maps(maps, boxes, (8, 1), normalise_parts=True)
    np.testing.assert_allclose(fused[:, 0], [0, 1, 0, 1, 0, 0, 0, 0])


def test_pixels_no_part_covers_take_the_smallest_placed_value():
    maps = [np.full((1, 1), value) for value in (0.9, 0.4, 0.6, 0.8)]
    boxes = np.array([[0, 0, 2, 2], [0, 2, 2, 4], [0, 4, 2, 6], [0, 6, 2, 8]], dtype=float)
    fused = fuse_part_maps(maps, boxes, (8, 4))
    np.testing.assert_allclose(fused[:, 3], 0.4)


def test_attention_map_averages_channels_and_accepts_tensors():
    mask = torch.stack([torch.zeros(3, 2), torch.ones(3, 2)])
    np.testing.assert_allclose(attention_map(mask), np.full((3, 2), 0.5))
    np.testing.assert_allclose(attention_map(np.eye(3)), np.eye(3))
    with pytest.raises(ValueError, match="attention mask"):
        attention_map(np.zeros((1, 2, 3, 4)))


def test_overlay_heatmap_blends_the_colour_map_over_the_image():
    image = np.full((8, 4, 3), 100, dtype=np.uint8)
    heat = np.zeros((2, 1))
    heat[0, 0] = 5.0
    only_heat = overlay_heatmap(image, heat, alpha=1.0)
    assert only_heat.shape == (8, 4, 3)
    assert tuple(only_heat[0, 0]) == (128, 0, 0)  # jet at 1: dark red
    assert tuple(only_heat[-1, -1]) == (0, 0, 128)  # jet at 0: dark blue
    assert (overlay_heatmap(image, heat, alpha=0.0) == image).all()


def test_display_image_stretches_float_images_to_uint8():
    picture = display_image(torch.linspace(-1, 1, 3 * 4 * 2).reshape(3, 4, 2))
    assert picture.shape == (4, 2, 3) and picture.dtype == np.uint8
    assert picture.min() == 0 and picture.max() == 255


def fake_attention(count: int, with_parts: bool = True) -> dict[str, list[torch.Tensor]]:
    shapes = [(8, 8, 4), (16, 4, 2), (16, 4, 2)]
    branches = ["global"] + (["head", "upper_body", "upper_leg", "lower_leg"] if with_parts else [])
    generator = torch.Generator().manual_seed(0)
    return {name: [torch.rand(count, *shape, generator=generator) for shape in shapes] for name in branches}


def test_attention_picture_has_one_row_per_image_and_seven_columns():
    images = [np.full((64, 32, 3), 90 + 40 * i, dtype=np.uint8) for i in range(3)]
    boxes = parts_in_whole_crop(
        np.array([[0, 0, 32, 64], [0, 0, 32, 20], [0, 14, 32, 36], [0, 30, 32, 50], [0, 44, 32, 64]], dtype=float),
        (64, 32),
    )
    picture = attention_picture(images, fake_attention(3), np.stack([boxes] * 3), tile_height=64)
    # 7 tiles of 32 x 64 with 4-pixel gaps, a 16-pixel title line
    assert picture.size == (7 * 32 + 6 * 4, 16 + 3 * (64 + 4))
    # first column: the image itself; the others carry a heat map
    assert picture.getpixel((16, 16 + 68 + 32)) == (130, 130, 130)
    assert picture.getpixel((36 + 16, 16 + 68 + 32)) != (130, 130, 130)
    # without part boxes (or part branches) only the image and the global blocks are drawn
    assert attention_picture(images[:1], fake_attention(1, with_parts=False), tile_height=64).size == (
        4 * 32 + 3 * 4,
        16 + 68,
    )


def test_attention_picture_names_a_wrong_batch_size():
    with pytest.raises(ValueError, match=r"attention\['global'\] B2 must be .* N = 2 images"):
        attention_picture([np.zeros((64, 32, 3), np.uint8)] * 2, fake_attention(3, with_parts=False))


# ---------------------------------------------------------------------------------------------
# curves


def test_cmc_picture_draws_curves_given_as_fractions_or_percent_alike():
    curves = {"baseline": np.linspace(0.6, 1.0, 50), "intra_inter": np.linspace(0.8, 1.0, 50)}
    picture = cmc_curve_picture(curves)
    assert picture.mode == "RGB" and 400 < picture.size[0] < 1200 and 300 < picture.size[1] < 900
    assert len(picture.getcolors(maxcolors=100000)) > 50
    in_percent = cmc_curve_picture({k: 100 * v for k, v in curves.items()})
    assert np.array_equal(np.asarray(picture), np.asarray(in_percent))


def test_part_weight_histogram_draws_four_panels():
    mu = np.random.default_rng(0).uniform(size=(200, 4))
    picture = part_weight_histogram(mu)
    assert picture.size[0] > 2.5 * picture.size[1] and picture.size[1] > 150
    assert len(picture.getcolors(maxcolors=100000)) > 50
    assert part_weight_histogram(np.full((5, 4), 0.5)).size[1] > 150  # all equal: still a picture
    with pytest.raises(ValueError, match=r"mu must have shape \(N, 4\)"):
        part_weight_histogram(mu[:, :3])
