"""Pictures and report.md of an evaluation: ranked lists (Fig. 6), attention maps (Fig. 7), CMC curves, mu histogram."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from reid.evaluation import ROW_LABELS, FeatureSet
from reid.evaluation.features import keypoint_inputs
from reid.files import atomic_save_image, atomic_write_text
from reid.metrics import pairwise_distance

log = logging.getLogger(__name__)


def choose_query_rows(
    num_queries_available: int, count: int, seed: int, rows: Sequence[int] | None = None
) -> list[int]:
    """Query numbers to show: ``rows`` when given, else ``count`` drawn at random with ``seed`` (sorted)."""
    if rows is not None:
        bad = [r for r in rows if not 0 <= int(r) < num_queries_available]
        if bad:
            raise ValueError(f"eval.pictures.query_rows {bad} outside 0..{num_queries_available - 1}")
        return [int(r) for r in rows]
    count = min(count, num_queries_available)
    generator = np.random.default_rng(seed)
    return sorted(int(i) for i in generator.choice(num_queries_available, size=count, replace=False))


def ranked_list_image(
    features: FeatureSet, query_rows: Sequence[int], topk: int, row: str = "all", distance: str = "euclidean"
) -> Image.Image | None:
    """Fig. 6 for the chosen queries (numbers within the query set); None when the images are gone."""
    from reid.viz.ranked import ranked_list_picture

    q, g = features.query, features.gallery
    chosen = q[torch.as_tensor(list(query_rows), dtype=torch.long)]
    missing = [p for p in [features.paths[int(i)] for i in chosen] if not Path(p).is_file()]
    if missing:
        log.warning("ranked lists skipped: %d query images are not on disk (e.g. %s)", len(missing), missing[0])
        return None
    feats = features.features[row]
    # only the shown queries' rows of the distance matrix: cheap whatever the gallery size
    distmat = pairwise_distance(feats[chosen], feats[g], distance).numpy()
    return ranked_list_picture(
        distmat,
        features.pids[chosen].numpy(),
        features.pids[g].numpy(),
        features.camids[chosen].numpy(),
        features.camids[g].numpy(),
        [features.paths[int(i)] for i in chosen],
        [features.paths[int(i)] for i in g],
        query_rows=list(range(len(chosen))),
        topk=topk,
    )


def attention_image(
    module: Any, eval_set: Any, sample_rows: Sequence[int], health: Mapping[str, Any] | None = None
) -> Image.Image | None:
    """Fig. 7 for the given samples of the evaluation set; None when the network has no intra-attention.

    ``health``: the evaluation's attention health figures (:mod:`reid.metrics.attention_health`),
    shown under each column's title.
    """
    from reid.data.crops import crop_regions
    from reid.data.io import read_image
    from reid.viz.attention import attention_picture, parts_in_whole_crop

    net = getattr(module, "net", module)
    if not getattr(net, "intra_attention", False) or not sample_rows:
        return None
    samples = [eval_set.cropped(int(i)) for i in sample_rows]
    whole = torch.stack([s["whole"] for s in samples])
    parts = torch.stack([s["parts"] for s in samples])
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    with torch.no_grad():
        confidence = [s.get("part_confidence") for s in samples]
        known = None if any(c is None for c in confidence) else torch.stack(confidence)
        keypoints = keypoint_inputs(net, known, device)
        output = module(whole.to(device), parts.to(device), return_attention=True, **keypoints)
    module.train(was_training)
    if not output.attention:
        return None
    images, part_boxes = [], []
    for i in sample_rows:
        image = read_image(eval_set.records[int(i)].image_path)
        crop, _ = crop_regions(
            image, eval_set.boxes[int(i)], whole_size=eval_set.whole_size, part_size=eval_set.part_size
        )
        images.append(crop)
        part_boxes.append(parts_in_whole_crop(eval_set.boxes[int(i)], eval_set.whole_size))
    attention = {name: [m.detach().float().cpu() for m in masks] for name, masks in output.attention.items()}
    outlines = [s.get("truth_whole") for s in samples]  # the synthetic set's truth: Fig. 7 draws its outline
    return attention_picture(images, attention, np.stack(part_boxes), health=health, outlines=outlines)


def cmc_image(results: Mapping[str, Mapping[str, Any]], max_rank: int = 50) -> Image.Image | None:
    """CMC curves (ranks 1..max_rank) of every scored row that has one."""
    from reid.viz.curves import cmc_curve_picture

    curves = {
        ROW_LABELS.get(row, row.replace("_", " ")): np.asarray(r["cmc"])
        for row, r in results.items()
        if "cmc" in r and len(r["cmc"])
    }
    return cmc_curve_picture(curves, max_rank=max_rank) if curves else None


def part_weight_image(part_weights: torch.Tensor | np.ndarray | None) -> Image.Image | None:
    """Histogram of the inter-attention weights mu per part; None without inter-attention."""
    from reid.viz.curves import part_weight_histogram

    if part_weights is None or len(part_weights) == 0:
        return None
    return part_weight_histogram(np.asarray(part_weights))


def save_pictures(pictures: Mapping[str, Image.Image | None], out_dir: Path) -> dict[str, Path]:
    """Writes each picture as ``<name>.png`` under ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, picture in pictures.items():
        if picture is not None:
            written[name] = atomic_save_image(picture, out_dir / f"{name}.png")
    return written


def evaluation_pictures(
    features: FeatureSet,
    results: Mapping[str, Mapping[str, Any]],
    options: Mapping[str, Any],
    *,
    module: Any = None,
    eval_set: Any = None,
    distance: str = "euclidean",
    max_rank: int = 50,
    attention_health: Mapping[str, Any] | None = None,
) -> dict[str, Image.Image | None]:
    """Every picture of an evaluation (``options``: the ``eval.pictures`` config)."""
    num_queries = len(features.query)
    shown = choose_query_rows(
        num_queries, int(options.get("num_queries", 8)), int(options.get("seed", 0)), options.get("query_rows")
    )
    pictures: dict[str, Image.Image | None] = {
        "ranked_list": ranked_list_image(features, shown, int(options.get("topk", 10)), distance=distance),
        "cmc": cmc_image(results, max_rank),
        "part_weights": part_weight_image(features.part_weights),
    }
    if module is not None and eval_set is not None:
        # attention rows are query numbers, and queries come first in the evaluation set
        pictures["attention"] = attention_image(
            module, eval_set, shown[: int(options.get("num_attention", 4))], health=attention_health
        )
    return pictures


def write_evaluation_outputs(
    cfg: DictConfig,
    features: FeatureSet,
    results: Mapping[str, Mapping[str, Any]],
    table: str,
    output_dir: str | Path,
    *,
    module: Any = None,
    eval_set: Any = None,
    attention_health: Mapping[str, Any] | None = None,
) -> Path:
    """Writes the pictures (when ``eval.pictures.enabled``) and ``report.md`` into ``output_dir``."""
    output_dir = Path(output_dir)
    options: dict[str, Any] = {}
    if "pictures" in cfg.eval:  # a mapping in the schema, so a dict here
        options = cast(dict[str, Any], OmegaConf.to_container(cfg.eval.pictures, resolve=True))
    written: dict[str, Path] = {}
    if options.get("enabled", True):
        pictures = evaluation_pictures(
            features,
            results,
            options,
            module=module,
            eval_set=eval_set,
            distance=str(cfg.eval.distance),
            max_rank=int(cfg.eval.max_rank),
            attention_health=attention_health,
        )
        written = save_pictures(pictures, output_dir / "pictures")
    return write_report_md(cfg, features, table, written, output_dir, attention_health)


def query_counts(features: FeatureSet) -> dict[str, int]:
    """``total``, ``scored`` and ``skipped`` queries: a query is scored when the gallery holds its identity
    seen by another camera (the rule of :mod:`reid.metrics.rank`, both protocols); the others are skipped."""
    cameras_of: dict[int, set[int]] = {}
    gallery_ids = zip(features.pids[features.gallery].tolist(), features.camids[features.gallery].tolist(), strict=True)
    for pid, camid in gallery_ids:
        cameras_of.setdefault(pid, set()).add(camid)
    query_ids = zip(features.pids[features.query].tolist(), features.camids[features.query].tolist(), strict=True)
    scored = sum(1 for pid, camid in query_ids if cameras_of.get(pid, set()) - {camid})
    total = len(features.query)
    return {"total": total, "scored": scored, "skipped": total - scored}


def _queries_line(features: FeatureSet) -> str:
    counts = query_counts(features)
    line = f"{counts['scored']} queries scored"
    if counts["skipped"]:
        line += (
            f" ({counts['skipped']} of {counts['total']} skipped: the gallery holds no image of their "
            "identity from another camera)"
        )
    return line


def write_report_md(
    cfg: DictConfig,
    features: FeatureSet,
    table: str,
    pictures: Mapping[str, Path],
    output_dir: Path,
    attention_health: Mapping[str, Any] | None = None,
) -> Path:
    """report.md: what was scored, how, the table, and the pictures."""
    e = cfg.eval
    source = cfg.get("features_path") or cfg.get("ckpt_path")
    model = cfg.get("model", {}).get("net", {}) if cfg.get("model") else {}
    rerank = f"on (k1={e.rerank_k1}, k2={e.rerank_k2}, lambda={e.rerank_lambda})" if e.rerank else "off"
    lines = [
        f"# Evaluation on {features.meta.get('data', cfg.data.get('name', '?'))}",
        "",
        f"- scored: `{source}`",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- images: {_queries_line(features)}, {len(features.gallery)} gallery; protocol {features.protocol}",
        f"- distance {e.distance}, flip averaging {'on' if features.meta.get('flip') else 'off'}, re-ranking {rerank}",
    ]
    data: Any = cfg.get("data") or {}  # a DictConfig, or {} when the run has no data section
    if not cfg.get("features_path") and data.get("whole_size") is not None:
        # cfg.data holds the settings used: evaluate.py took them from the checkpoint unless given
        lines.append(
            f"- input: whole body {'x'.join(str(v) for v in data.whole_size)}, parts "
            f"{'x'.join(str(v) for v in data.part_size)}, β {data.get('beta')}, regions {data.get('regions')}"
        )
    if model:
        lines.append(
            f"- network: intra-attention {model.get('intra_attention')}, fusion {model.get('fusion')}, "
            f"width {model.get('width')}"
        )
    lines += ["", "## Results (%, Table 7 rows)", "", table, ""]
    if attention_health:
        from reid.metrics.attention_health import health_table

        lines += ["## Attention health (query images)", "", health_table(attention_health), ""]
    titles = {
        "ranked_list": "Ranked lists (Fig. 6): green = same identity, red = different",
        "attention": "Attention maps (Fig. 7): blocks 2, 3, 4 of the whole body and of the parts",
        "cmc": "CMC curves",
        "part_weights": "Inter-attention weights mu per part",
    }
    for name, path in pictures.items():
        lines += [f"## {titles.get(name, name)}", "", f"![{name}]({path.relative_to(output_dir).as_posix()})", ""]
    report = atomic_write_text(output_dir / "report.md", "\n".join(lines))
    log.info("wrote %s", report)
    return report
