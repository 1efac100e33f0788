"""Synthetic samples: `python -m reid.tools.synthetic_preview root=data [out=docs/synthetic_samples.png]`.

Generates (or reuses) the default synthetic data set under ``root`` and draws ``per_camera`` of
its images per camera, one row each, with their keypoints
(:func:`reid.data.synthetic.preview.preview_grid`): the picture of docs/datasets.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import MISSING

from reid.conf.tool import option, run_tool


@dataclass
class SyntheticPreviewOptions:
    """The options of ``python -m reid.tools.synthetic_preview`` (``key=value``, as every tool)."""

    root: str = option(MISSING, "cache folder of the generated data set, e.g. data (required)")
    out: str = option("docs/synthetic_samples.png", "the PNG file to write")
    seed: int = option(0, "the generator's seed")
    per_camera: int = option(8, "samples per camera row", low=1)
    zoom: int = option(2, "enlargement of each sample", low=1)


def draw_synthetic_preview(options: SyntheticPreviewOptions) -> int:
    """Generates the synthetic data set (cached) and writes a grid of its samples with their keypoints."""
    import cv2

    from reid.data.synthetic import generate
    from reid.data.synthetic.preview import preview_grid
    from reid.files import atomic_write

    dataset = generate(options.root, seed=options.seed)
    grid = preview_grid(dataset, per_camera=options.per_camera, zoom=options.zoom)
    # the images carry sensor noise, so maximum zlib effort halves the file size
    encoded, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not encoded:
        raise RuntimeError("OpenCV could not encode the grid as PNG")
    out = atomic_write(options.out, lambda stream: stream.write(png.tobytes()))
    print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reid.tools.synthetic_preview``: 0, or 2 with one ``error:`` line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_tool(draw_synthetic_preview, SyntheticPreviewOptions, "synthetic_preview", argv)


if __name__ == "__main__":
    raise SystemExit(main())
