"""Pictures of the five regions: `python -m reid.tools.regions data=<name> n=16 [out=regions.png]` (Fig. 4c style).

Composes the training config for the data set, sets its data module up and draws ``n`` of its
images with their joints and five boxes (:func:`reid.viz.regions.render`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reid.conf.tool import option, run_tool
from reid.viz.regions import render


@dataclass
class RegionsOptions:
    """The options of ``python -m reid.tools.regions`` (``key=value``, as every tool)."""

    data: str = option("synthetic", "the data set: an option of conf/data (market, duke, ...)")
    data_dir: str | None = option(None, "paths.data_dir (default: $REID_DATA or ./data)")
    overrides: list[str] = option([], "other changes to the training config, e.g. [data.beta=0.0625]")
    n: int = option(16, "images drawn", low=1)
    split: Literal["train", "eval"] = option("train", "train, or eval (query + gallery)")
    seed: int = option(0, "which images")
    columns: int = option(8, "images per row", low=1)
    out: str = option("regions.png", "the picture")


def draw_dataset_regions(options: RegionsOptions) -> int:
    """Draws a data set's images with their joints and five regions into one picture."""
    from hydra.utils import instantiate

    from reid.conf import compose_config

    data_dir = [f"paths.data_dir={options.data_dir}"] if options.data_dir else []
    cfg = compose_config([f"data={options.data}", *data_dir, *options.overrides])
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    picture = render(datamodule, n=options.n, split=options.split, seed=options.seed, columns=options.columns)
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    print(f"wrote {out} ({picture.size[0]}x{picture.size[1]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reid.tools.regions``: 0, or 2 with one ``error:`` line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_tool(draw_dataset_regions, RegionsOptions, "regions", argv)


if __name__ == "__main__":
    raise SystemExit(main())
