"""The `synthetic` data set: generated once by :func:`reid.data.synthetic.generate`, read as Market-1501."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reid.data.datasets.market1501 import parse_market_style
from reid.data.datasets.registry import register
from reid.data.records import ReIDDataset


@register("synthetic")
def load_synthetic(root: Path, preset: str | None = "default", **generator_options: Any) -> ReIDDataset:
    """Generates (or reuses) the synthetic pedestrians under ``root`` and parses them.

    Args:
        root: the data folder handed to the generator.
        preset: a named difficulty (:data:`reid.data.synthetic.generator.PRESETS`: ``default``,
            ``hard``); explicit (non-None) options win over it.
        **generator_options: passed to :func:`reid.data.synthetic.generate` (ids, cameras,
            image size, seed...).

    Returns:
        The data set named ``synthetic``, Market-1501 rules, any number of cameras, and
        ``keypoint_dir`` = ``<generated folder>/keypoints`` when the generator wrote it.
    """
    # Imported here so that loading a real data set never needs the generator's dependencies.
    from reid.data.synthetic import generate
    from reid.data.synthetic.generator import resolve_preset

    folder = Path(generate(root, **resolve_preset(preset, generator_options)))
    return parse_market_style(
        folder,
        name="synthetic",
        num_cameras=None,
        source_hint="Delete the folder so that the generator writes it again.",
    )
