"""Ranked lists (Fig. 6): per query, the query image and its top-k gallery images framed green (match) or red."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reid.data.io import read_image

ImageSource = Union[str, "os.PathLike[str]", np.ndarray]

MATCH_COLOUR = (0, 200, 0)
MISMATCH_COLOUR = (230, 0, 0)
QUERY_COLOUR = (255, 255, 255)
BACKGROUND = (30, 30, 30)
EMPTY_TILE = (60, 60, 60)
JUNK_PID = -1
HEADER_HEIGHT = 16  # text line above each row
ROW_SPACING = 4
TILE_SPACING = 2  # between gallery tiles, so neighbouring frames of one colour stay apart


def _numpy(values: object) -> np.ndarray:
    """numpy view of an array, a sequence, or a (possibly CUDA) torch tensor."""
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def valid_gallery_mask(
    query_pid: int,
    query_camid: int,
    gallery_pids: np.ndarray,
    gallery_camids: np.ndarray,
    exclude_same_camera: bool = True,
) -> np.ndarray:
    """Gallery entries a query may be ranked against: not junk (pid -1) and, under the Market
    protocol, not the query's own identity seen by the query's own camera."""
    valid = gallery_pids != JUNK_PID
    if exclude_same_camera:
        valid &= ~((gallery_pids == query_pid) & (gallery_camids == query_camid))
    return valid


def ranked_gallery(
    distances: np.ndarray,
    query_pid: int,
    query_camid: int,
    gallery_pids: np.ndarray,
    gallery_camids: np.ndarray,
    topk: int = 10,
    exclude_same_camera: bool = True,
) -> np.ndarray:
    """Indices of the ``topk`` nearest valid gallery entries of one query (fewer if the gallery
    has fewer); ties are broken by gallery index, as in ``reid.metrics.evaluate_rank``."""
    distances = _numpy(distances).astype(np.float64)
    keep = np.flatnonzero(
        valid_gallery_mask(query_pid, query_camid, _numpy(gallery_pids), _numpy(gallery_camids), exclude_same_camera)
    )
    order = np.argsort(distances[keep], kind="stable")
    return keep[order[:topk]]


def choose_queries(
    query_pids: Sequence[int] | np.ndarray,
    query_camids: Sequence[int] | np.ndarray,
    gallery_pids: Sequence[int] | np.ndarray,
    gallery_camids: Sequence[int] | np.ndarray,
    num_queries: int = 8,
    seed: int = 0,
    exclude_same_camera: bool = True,
) -> np.ndarray:
    """Up to ``num_queries`` query rows drawn at random (``np.random.default_rng(seed)``), in
    increasing order, among the queries that have a true match in their valid gallery (the
    queries the evaluation counts)."""
    q_pids, q_camids = _numpy(query_pids), _numpy(query_camids)
    g_pids, g_camids = _numpy(gallery_pids), _numpy(gallery_camids)
    candidates = [
        q
        for q in range(len(q_pids))
        if q_pids[q] != JUNK_PID
        and np.any(
            valid_gallery_mask(q_pids[q], q_camids[q], g_pids, g_camids, exclude_same_camera) & (g_pids == q_pids[q])
        )
    ]
    if not candidates:
        raise ValueError("no query has a true match in the gallery: nothing to show")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(candidates), size=min(num_queries, len(candidates)), replace=False)
    return np.sort(np.asarray(candidates)[picks])


def _load(source: ImageSource) -> np.ndarray:
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ValueError(f"images given as arrays must be (H, W, 3) uint8, got {source.dtype} {source.shape}")
        return source
    return read_image(source)


def _framed_tile(
    source: ImageSource | None, tile_size: tuple[int, int], frame: int, colour: tuple[int, int, int]
) -> Image.Image:
    """The image resized to ``tile_size`` (h, w) inside a frame of ``frame`` pixels."""
    height, width = tile_size
    tile = Image.new("RGB", (width + 2 * frame, height + 2 * frame), colour)
    if source is None:
        tile.paste(EMPTY_TILE, (frame, frame, frame + width, frame + height))
    else:
        tile.paste(Image.fromarray(_load(source)).resize((width, height), Image.Resampling.BILINEAR), (frame, frame))
    return tile


def ranked_list_picture(
    distmat: np.ndarray | Mapping[str, np.ndarray],
    query_pids: Sequence[int] | np.ndarray,
    gallery_pids: Sequence[int] | np.ndarray,
    query_camids: Sequence[int] | np.ndarray,
    gallery_camids: Sequence[int] | np.ndarray,
    query_images: Sequence[ImageSource],
    gallery_images: Sequence[ImageSource],
    query_rows: Sequence[int] | None = None,
    num_queries: int = 8,
    topk: int = 10,
    seed: int = 0,
    exclude_same_camera: bool = True,
    tile_size: tuple[int, int] = (128, 64),
    *,
    frame: int = 4,
    gap: int = 12,
) -> Image.Image:
    """Fig. 6: one row per query, the query image then its ``topk`` gallery images, nearest first.

    Each gallery image is framed green when it shows the query's identity and red otherwise;
    the query's frame is white. Junk gallery images (pid -1) are never shown, nor (with
    ``exclude_same_camera``, the Market protocol) images of the query's identity taken by the
    query's camera. A header above each row names the query, its pid and camera and whether
    rank 1 is a hit. Only the images shown are read from disk.

    Args:
        distmat: (Q, G) query-gallery distances (numpy or torch); or label -> distance matrix to compare models
            (e.g. ``{"baseline": d1, "intra_inter": d2}``): each query then gets one row per
            model, in the mapping's order, headed by the label.
        query_pids, gallery_pids, query_camids, gallery_camids: id vectors of length Q, G, Q, G.
        query_images, gallery_images: per query / gallery entry, an image path or an
            (H, W, 3) uint8 RGB array.
        query_rows: the queries to show; None draws ``num_queries`` at random (``seed``) among
            the queries with a true match (see ``choose_queries``).
        num_queries: how many random queries when ``query_rows`` is None.
        topk: gallery images per row.
        seed: seed of the random choice.
        exclude_same_camera: apply the Market protocol's same-identity-same-camera removal
            (the CUHK03 classic protocol applies it too).
        tile_size: (height, width) of each image inside its frame.
        frame: frame width in pixels.
        gap: space between the query and its gallery images, in pixels.

    Returns:
        An RGB image of (topk + 1) framed tiles per row.
    """
    matrices = {label: _numpy(m) for label, m in (distmat.items() if isinstance(distmat, Mapping) else [("", distmat)])}
    if not matrices:
        raise ValueError("distmat mapping is empty: pass at least one (Q, G) distance matrix")
    q_pids, q_camids = _numpy(query_pids), _numpy(query_camids)
    g_pids, g_camids = _numpy(gallery_pids), _numpy(gallery_camids)
    num_query, num_gallery = len(q_pids), len(g_pids)
    for label, matrix in matrices.items():
        shape = np.shape(matrix)
        if shape != (num_query, num_gallery):
            name = f"distmat[{label!r}]" if label else "distmat"
            raise ValueError(f"{name} has shape {shape}, expected (queries, gallery) = ({num_query}, {num_gallery})")
    for name, values, expected in (
        ("query_camids", q_camids, num_query),
        ("gallery_camids", g_camids, num_gallery),
        ("query_images", query_images, num_query),
        ("gallery_images", gallery_images, num_gallery),
    ):
        if len(values) != expected:
            raise ValueError(f"{name} has {len(values)} entries, expected {expected}")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if query_rows is None:
        rows = choose_queries(q_pids, q_camids, g_pids, g_camids, num_queries, seed, exclude_same_camera)
    else:
        rows = np.asarray(list(query_rows), dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= num_query):
            raise ValueError(f"query_rows must lie in [0, {num_query}), got {rows.tolist()}")
    if len(rows) == 0:
        raise ValueError("no query to show")

    tile_w, tile_h = tile_size[1] + 2 * frame, tile_size[0] + 2 * frame
    font = ImageFont.load_default()
    row_h = HEADER_HEIGHT + tile_h + ROW_SPACING
    width = tile_origin(0, topk, tile_size, frame, gap)[0] + tile_w
    canvas = Image.new("RGB", (width, row_h * len(rows) * len(matrices)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = 0
    for q in rows:
        query_tile = _framed_tile(query_images[q], tile_size, frame, QUERY_COLOUR)
        for label, matrix in matrices.items():
            ranked = ranked_gallery(
                matrix[q], int(q_pids[q]), int(q_camids[q]), g_pids, g_camids, topk, exclude_same_camera
            )
            if ranked.size == 0:
                verdict = "no gallery image"
            else:
                verdict = "rank-1 hit" if g_pids[ranked[0]] == q_pids[q] else "rank-1 miss"
            prefix = f"{label}: " if label else ""
            draw.text(
                (2, y + 2),
                f"{prefix}query {q} (pid {q_pids[q]}, cam {q_camids[q]}): {verdict}",
                fill=(230, 230, 230),
                font=font,
            )
            canvas.paste(query_tile, (0, y + HEADER_HEIGHT))
            for rank in range(topk):
                if rank < ranked.size:
                    g = ranked[rank]
                    colour = MATCH_COLOUR if g_pids[g] == q_pids[q] else MISMATCH_COLOUR
                    tile = _framed_tile(gallery_images[g], tile_size, frame, colour)
                else:
                    tile = _framed_tile(None, tile_size, frame, BACKGROUND)
                canvas.paste(tile, (tile_origin(0, rank + 1, tile_size, frame, gap)[0], y + HEADER_HEIGHT))
            y += row_h
    return canvas


def tile_origin(
    row: int, column: int, tile_size: tuple[int, int] = (128, 64), frame: int = 4, gap: int = 12
) -> tuple[int, int]:
    """Top-left (x, y) of a framed tile in a ``ranked_list_picture`` made with the same settings:
    ``column`` 0 is the query, 1..topk the ranked gallery images; ``row`` counts picture rows."""
    tile_w, tile_h = tile_size[1] + 2 * frame, tile_size[0] + 2 * frame
    x = 0 if column == 0 else tile_w + gap + (column - 1) * (tile_w + TILE_SPACING)
    return x, row * (HEADER_HEIGHT + tile_h + ROW_SPACING) + HEADER_HEIGHT


SEARCH_FRAME = (150, 150, 150)


def search_picture(
    queries: Sequence[ImageSource],
    results: Sequence[Sequence[ImageSource]],
    distances: Sequence[Sequence[float]] | None = None,
    tile_size: tuple[int, int] = (128, 64),
    *,
    frame: int = 4,
    gap: int = 12,
) -> Image.Image:
    """Search results without ground truth: per query its image (white frame) then its results, nearest first.

    The same layout as :func:`ranked_list_picture`; the frames are neutral (nothing is known of
    identities) and each row's header gives the distances of the first results.
    """
    if len(results) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(results)} result rows")
    topk = max((len(row) for row in results), default=0)
    tile_w = tile_size[1] + 2 * frame
    row_h = tile_origin(1, 0, tile_size, frame, gap)[1] - tile_origin(0, 0, tile_size, frame, gap)[1]
    width = tile_origin(0, max(topk, 1), tile_size, frame, gap)[0] + tile_w
    canvas = Image.new("RGB", (width, row_h * max(len(queries), 1)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for q, (query, row) in enumerate(zip(queries, results, strict=True)):
        shown = ", ".join(f"{d:.2f}" for d in (distances[q][:5] if distances is not None else []))
        name = os.path.basename(str(query)) if isinstance(query, (str, os.PathLike)) else f"query {q}"
        draw.text((2, q * row_h + 2), f"{name}: nearest distances {shown}", fill=QUERY_COLOUR, font=font)
        canvas.paste(_framed_tile(query, tile_size, frame, QUERY_COLOUR), tile_origin(q, 0, tile_size, frame, gap))
        for rank, result in enumerate(row, start=1):
            canvas.paste(
                _framed_tile(result, tile_size, frame, SEARCH_FRAME), tile_origin(q, rank, tile_size, frame, gap)
            )
    return canvas
