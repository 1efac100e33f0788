"""Which queries can be scored, and consistent query/gallery subsets of an evaluation set for a validation limit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from reid.data.crop_dataset import CropDataset
from reid.data.records import Record, ReIDDataset
from reid.errors import ConfigError

log = logging.getLogger(__name__)


def matched_queries(query: Sequence[Record], gallery: Sequence[Record]) -> int:
    """How many queries have a true match in the gallery: the same identity seen by another camera."""
    cameras_of: dict[int, set[int]] = {}
    for record in gallery:
        cameras_of.setdefault(record.pid, set()).add(record.camid)
    return sum(1 for q in query if cameras_of.get(q.pid, set()) - {q.camid})


def check_scorable(dataset: ReIDDataset, query: Sequence[Record], gallery: Sequence[Record]) -> None:
    """Stops at set-up, not after training, when no query has a true match (same identity, another camera).

    Raises:
        DatasetFormatError: queries, but none with a match in the gallery.
    """
    if not query:
        return  # an empty query set is reported by the evaluation itself
    matched = matched_queries(query, gallery)
    if matched == 0:
        from reid.data.datasets.common import DatasetFormatError

        shared = len({q.pid for q in query} & {g.pid for g in gallery})
        raise DatasetFormatError(
            f"data set '{dataset.name}' at {dataset.root}: none of the {len(query)} query images has a match in the "
            f"gallery ({len(gallery)} images; {shared} identities shared, none seen by another camera), so nothing "
            "can be scored; check that query and gallery come from the same test set"
        )
    if matched < len(query):
        log.info("%d of %d query images have a match in the gallery (the others are not scored)", matched, len(query))


def limit_eval_set(
    eval_set: CropDataset,
    limit: int | float,
    eval_batch_size: int,
    at_least_one: bool = False,
    setting: str = "trainer.limit_val_batches",
) -> tuple[CropDataset, dict[str, Any]] | None:
    """A consistent query/gallery subset of ``eval_set`` for a validation limit; None when nothing is cut.

    Lightning's limit cuts the loader after some batches, and the loader serves every query
    before the gallery: a cut would keep queries without a gallery. Here whole identities are
    kept instead, in the order of their first query, each with all its query and gallery
    images, and the gallery images of identities without a query (distractors) in the same
    proportion, so that the subset is a small version of the protocol.

    Args:
        eval_set: the evaluation set (queries, then the gallery).
        limit: Lightning's meaning: an int is a number of validation batches
            (``eval_batch_size`` images each), a float a fraction of the images.
        eval_batch_size: images per validation batch.
        at_least_one: keep the first identity that can be scored even if it does not fit
            the limit (``fast_dev_run``, ``overfit_batches``) instead of raising.
        setting: the config key the limit comes from, for the log and the error.

    Returns:
        The subset and what was kept, for the log and ``metrics.json``: ``queries``,
        ``gallery``, ``identities`` and their totals, and the limit.

    Raises:
        ConfigError: the limit keeps no identity with a query and a match in another camera.
    """
    records, is_query = eval_set.records, eval_set.is_query
    total = len(records)
    budget = int(limit) * eval_batch_size if isinstance(limit, int) else int(float(limit) * total)
    if budget >= total:
        return None
    queries_of: dict[int, list[int]] = {}
    for i, record in enumerate(records):
        if is_query[i]:
            queries_of.setdefault(record.pid, []).append(i)
    gallery_of: dict[int, list[int]] = {}
    others: list[int] = []
    for i, record in enumerate(records):
        if not is_query[i]:
            (gallery_of.setdefault(record.pid, []) if record.pid in queries_of else others).append(i)
    identity_images = total - len(others)
    identity_budget = budget * identity_images // max(1, total)

    def scorable(group: list[int]) -> bool:
        return (
            matched_queries([records[i] for i in group if is_query[i]], [records[i] for i in group if not is_query[i]])
            > 0
        )

    kept: list[int] = []
    identities = 0
    for pid, queries in queries_of.items():
        group = queries + gallery_of.get(pid, [])
        if len(kept) + len(group) > identity_budget:
            break
        kept += group
        identities += 1  # noqa: SIM113 - the identities kept: the loop stops at the first that does not fit
    if not scorable(kept) and at_least_one:
        first = next(
            (q + gallery_of.get(p, []) for p, q in queries_of.items() if scorable(q + gallery_of.get(p, []))), []
        )
        kept, identities = first, int(bool(first))
    if not scorable(kept):
        raise ConfigError(
            [
                f"{setting}={limit} keeps {budget} of the {total} query/gallery images, too few for "
                "one identity with a query and a gallery match in another camera; raise it, or use 1.0 (all)"
            ]
        )
    kept += others[: max(0, budget - len(kept))]
    kept.sort()
    old = eval_set
    queries = [i for i in kept if old.is_query[i]]
    gallery = [i for i in kept if not old.is_query[i]]
    rows = queries + gallery
    subset_set = CropDataset(
        [old.records[i] for i in rows],
        old.boxes[rows],
        old.transform,
        old.whole_size,
        old.part_size,
        is_query=[True] * len(queries) + [False] * len(gallery),
        indices=list(range(len(queries))) + list(range(len(gallery))),
        # the measuring fields too, or a limited validation would lose the attention's truth figures
        part_confidence=None if old.part_confidence is None else old.part_confidence[rows],
        truth=None if old.truth is None else [old.truth[i] for i in rows],
        pipeline=old.pipeline,
        images=old.images,
        image_rows=[old.image_rows[i] for i in rows],
    )
    subset = {
        "setting": setting,
        "limit": limit,
        "queries": len(queries),
        "gallery": len(gallery),
        "identities": identities,
        "total_queries": sum(old.is_query),
        "total_gallery": total - sum(old.is_query),
        "total_identities": len(queries_of),
    }
    log.info(
        "validating on a subset (%s=%s): %d of %d queries, %d of %d gallery images, %d of %d query identities",
        setting,
        limit,
        subset["queries"],
        subset["total_queries"],
        subset["gallery"],
        subset["total_gallery"],
        identities,
        subset["total_identities"],
    )
    return subset_set, subset
