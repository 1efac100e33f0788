"""Test-time features: per-branch features (Table 7), flip averaging, a data set's features and their file."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reid.errors import ReidError
from reid.files import atomic_write
from reid.models.network import NetworkOutput
from reid.names import PART_NAMES  # noqa: F401 - re-exported (dashboard, reports)

log = logging.getLogger(__name__)


#: Table 7's rows, in the paper's order, and how they are printed.
ROW_LABELS: dict[str, str] = {
    "global": "Global",
    "head": "Head",
    "upper_body": "Upper body",
    "upper_leg": "Upper leg",
    "lower_leg": "Lower leg",
    "parts": "Part fusion",
    "all": "Global + part",
}


FEATURES_FORMAT = "reid-features-v1"
WHAT_FEATURES_ARE = (
    "a features file is the features.pt that `python evaluate.py ckpt_path=<checkpoint> eval.save_features=true` "
    f"writes into its run folder (format {FEATURES_FORMAT!r}: per-row features, pids, camids, is_query, paths)"
)


class FeaturesFileError(ReidError, ValueError):
    """``features_path`` names a file that is not a features file of :meth:`FeatureSet.save` (one line)."""


def branch_features(net: nn.Module, output: NetworkOutput) -> dict[str, Tensor]:
    """The features of Table 7's rows from one forward pass.

    ``global`` and each part are the branch's own FC_reduce output (E_g, E_1..E_4). ``parts``
    and ``all`` are what the network compares at test time: for concatenation and inter-attention
    they are columns of ``output.feature`` (so inter's parts carry their weights ``(mu_i + 1)``);
    for FC fusion, whose output mixes the branches, ``parts`` is the plain concatenation of E_1..E_4.
    """
    features = {"global": output.global_feature}
    for index, name in enumerate(PART_NAMES):
        features[name] = output.part_features[:, index]
    slices = getattr(net, "feature_slices", {})
    if "parts" in slices:
        features["parts"] = output.feature[:, slices["parts"]]
    else:
        features["parts"] = output.part_features.flatten(1)
    features["all"] = output.feature
    return features


@dataclass
class FeatureSet:
    """Features of every query and gallery image, per Table 7 row, with what scoring needs.

    Saved with :meth:`save` as plain tensors and strings (``torch.load(weights_only=True)`` reads
    it back), so ``evaluate.py features_path=...`` can score again without the model.
    """

    features: dict[str, Tensor]
    pids: Tensor
    camids: Tensor
    is_query: Tensor
    paths: list[str]
    protocol: str = "market"
    part_weights: Tensor | None = None
    boxes: Tensor | None = None
    #: (N, 4) mean keypoint confidence of each part's joints (None without keypoints)
    part_confidence: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        for name, tensor in [("pids", self.pids), ("camids", self.camids), ("is_query", self.is_query)] + [
            (f"features[{k}]", v) for k, v in self.features.items()
        ]:
            if tensor.shape[0] != n:
                raise ValueError(f"FeatureSet: {name} has {tensor.shape[0]} rows for {n} images")
        self.is_query = self.is_query.bool()

    @property
    def query(self) -> Tensor:
        """Row numbers of the queries, in order."""
        return torch.nonzero(self.is_query).flatten()

    @property
    def gallery(self) -> Tensor:
        """Row numbers of the gallery images, in order."""
        return torch.nonzero(~self.is_query).flatten()

    def save(self, path: str | Path) -> Path:
        """Writes the set to ``path`` (a ``.pt`` file of plain tensors), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FEATURES_FORMAT,
            "features": {k: v.contiguous() for k, v in self.features.items()},
            "pids": self.pids,
            "camids": self.camids,
            "is_query": self.is_query,
            "paths": list(self.paths),
            "protocol": self.protocol,
            "part_weights": self.part_weights,
            "boxes": self.boxes,
            "part_confidence": self.part_confidence,
            "meta": dict(self.meta),
        }
        atomic_write(path, lambda stream: torch.save(payload, stream))
        log.info("wrote %s (%d images, rows %s)", path, len(self.paths), ", ".join(self.features))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Reads a set written by :meth:`save` (safely: ``weights_only=True``).

        Raises:
            FileNotFoundError: there is no such file or folder.
            FeaturesFileError: a folder, or a file that is not a features file (text, another torch file, damaged).
        """
        path = Path(path)
        if path.is_dir():
            raise FeaturesFileError(
                f"features_path={path} is a directory; pass the features file in it (e.g. {path / 'features.pt'}): "
                f"{WHAT_FEATURES_ARE}"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"features file not found: {path} (write one with "
                "`python evaluate.py ckpt_path=... eval.save_features=true`)"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - text, a zip of another kind, pickled code: all "not a features file"
            raise FeaturesFileError(
                f"features_path={path} is not a features file: {_unreadable(path, err)}; {WHAT_FEATURES_ARE}"
            ) from err
        if not isinstance(payload, dict) or payload.get("format") != FEATURES_FORMAT:
            found = (
                f"a dict with keys {sorted(map(str, payload))[:6]}"
                if isinstance(payload, dict)
                else f"a {type(payload).__name__}"
            )
            raise FeaturesFileError(
                f"features_path={path} is not a features file: it holds {found}, not format {FEATURES_FORMAT!r}; "
                f"{WHAT_FEATURES_ARE}"
            )
        try:
            return cls(
                features=dict(payload["features"]),
                pids=payload["pids"],
                camids=payload["camids"],
                is_query=payload["is_query"],
                paths=list(payload["paths"]),
                protocol=str(payload["protocol"]),
                part_weights=payload.get("part_weights"),
                boxes=payload.get("boxes"),
                part_confidence=payload.get("part_confidence"),
                meta=dict(payload.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            problem = f"no {err}" if isinstance(err, KeyError) else " ".join(str(err).split())
            raise FeaturesFileError(
                f"features_path={path} is a damaged features file ({problem}); write it again: {WHAT_FEATURES_ARE}"
            ) from err


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in words (its own message can be a bare ``101``)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not (head == b"PK" or head[:1] == b"\x80"):  # a zip archive or a pickle, what torch.save writes
        return "it is not a torch file at all"
    if "weights_only" in str(err).lower() or "Weights only load failed" in str(err):
        return "it holds objects other than tensors and plain containers (not unpickled, for safety)"
    return f"torch cannot read it ({' '.join(str(err).split())[:120] or type(err).__name__})"


def _mean_of(first: dict[str, Tensor], second: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: (first[k] + second[k]) / 2 for k in first}


class MissingKeypointsError(ReidError, ValueError):
    """A network that weighs its parts by keypoint confidence was given images without keypoints."""


def keypoint_inputs(net: nn.Module, part_confidence: Any, device: torch.device | str) -> dict[str, Tensor]:
    """The forward's ``part_visibility`` keyword for a network with ``inter_source=keypoints``, else nothing.

    Raises:
        MissingKeypointsError: the network needs the parts' keypoint confidence and there is none.
    """
    if not getattr(net, "needs_keypoints", False):
        return {}
    if part_confidence is None:
        raise MissingKeypointsError(
            "this model weighs its parts by the images' keypoint confidence (model.net.inter_source=keypoints), "
            "but the images have no keypoints: give the data set its keypoint files (data.regions=pose), "
            "or use a model trained with another inter_source"
        )
    return {"part_visibility": torch.as_tensor(part_confidence).float().to(device)}


@torch.no_grad()
def extract_features(
    module: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    paths: list[str],
    boxes: np.ndarray | None = None,
    protocol: str = "market",
    flip: bool = False,
    device: torch.device | str = "cpu",
    rows: Iterable[str] | None = None,
    attention_health: Any = None,
) -> FeatureSet:
    """Runs ``module`` (a :class:`reid.lit.module.ReIDModule`) over an evaluation loader.

    Args:
        module: maps ``(whole, parts)`` to a ``NetworkOutput``; its ``net`` gives the feature slices.
        loader: batches with ``whole``, ``parts``, ``pid``, ``camid``, ``is_query`` (not shuffled).
        paths: image path of every sample, in loader order.
        boxes: the five region boxes of every sample (stored for pictures), or None.
        protocol: the data set's evaluation protocol.
        flip: average each feature with that of the horizontally flipped crops (whole body and
            each part flipped in place, which is the crop of the flipped image).
        device: where the network runs.
        rows: the Table 7 rows to keep (default: all seven). Features are kept in host memory as
            float32: the seven rows take about 2.8k floats per image with the paper's sizes
            (5.6 GB for 500,000 images), ``["all"]`` alone 768 (1.5 GB).
        attention_health: a :class:`reid.metrics.attention_health.AttentionHealth` to update with
            the masks and mu of the query images (unflipped), or None.
    """
    module.eval()
    module.to(device)
    net = getattr(module, "net", module)
    keep = set(rows) if rows is not None else None
    chunks: dict[str, list[Tensor]] = {}
    pids, camids, is_query, weights, confidences = [], [], [], [], []
    # data.pipeline=device: the batches hold originals, cut into crops here, where the network runs
    device_crops = getattr(getattr(loader, "dataset", None), "device_crops", None)
    for batch in loader:
        if "image" in batch and device_crops is not None:
            batch = device_crops({k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()})
        whole = batch["whole"].to(device, non_blocking=True)
        parts = batch["parts"].to(device, non_blocking=True)
        keypoints = keypoint_inputs(net, batch.get("part_confidence"), whole.device)
        output = module(whole, parts, return_attention=attention_health is not None, **keypoints)
        if attention_health is not None:
            select = torch.as_tensor(batch["is_query"]).bool().to(whole.device)
            attention_health.update(output.attention, output.part_weights, select=select, truth=batch)
        features = branch_features(net, output)
        mu = output.part_weights
        if flip:
            flipped = module(whole.flip(-1), parts.flip(-1), **keypoints)
            features = _mean_of(features, branch_features(net, flipped))
            if mu is not None and flipped.part_weights is not None:
                mu = (mu + flipped.part_weights) / 2
        for name, value in features.items():
            if keep is None or name in keep:
                chunks.setdefault(name, []).append(value.float().cpu())
        if mu is not None:
            weights.append(mu.float().cpu())
        if batch.get("part_confidence") is not None:
            confidences.append(torch.as_tensor(batch["part_confidence"]).float())
        pids.append(torch.as_tensor(batch["pid"]).long())
        camids.append(torch.as_tensor(batch["camid"]).long())
        is_query.append(torch.as_tensor(batch["is_query"]).bool())
    if not pids:
        raise ValueError("the evaluation loader is empty: the data set has no query/gallery images")
    features = {name: torch.cat(values) for name, values in chunks.items()}
    return FeatureSet(
        features=features,
        pids=torch.cat(pids),
        camids=torch.cat(camids),
        is_query=torch.cat(is_query),
        paths=list(paths),
        protocol=protocol,
        part_weights=torch.cat(weights) if weights else None,
        boxes=torch.as_tensor(np.asarray(boxes), dtype=torch.float32) if boxes is not None else None,
        part_confidence=torch.cat(confidences) if len(confidences) == len(pids) else None,
        meta={"flip": bool(flip)},
    )
