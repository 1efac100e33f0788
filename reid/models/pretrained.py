"""Initialising a network from pre-trained weights (ImageNet pre-training, §4.1.3), identity classifiers left out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reid.errors import ReidError
from reid.models.network import (
    is_classifier_parameter,
    part_state_dict_to_grouped,
    part_state_dict_to_separate,
)
from reid.names import CHECKPOINT_CONFIG_KEY
from reid.trusted import check_stored_config

log = logging.getLogger(__name__)

LIGHTNING_PREFIX = "net."


class PretrainedWeightsError(ReidError, ValueError):
    """A pre-trained weights file that cannot be read or does not fit the network."""


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pre-trained weights not found: {path} (set model.pretrained=<checkpoint> or null)")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError or RuntimeError depending on the payload
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise PretrainedWeightsError(
            f"cannot load pre-trained weights {path} with weights_only=True ({type(err).__name__}: {first_line}): "
            "pass a Lightning checkpoint or a plain state dict you trust"
        ) from None
    if isinstance(payload, Mapping):
        # the stored config is not used here, but a file that names code is hostile: refused like everywhere
        check_stored_config(payload.get(CHECKPOINT_CONFIG_KEY), str(path))
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise PretrainedWeightsError(
            f"{path} is neither a Lightning checkpoint nor a state dict (name -> tensor): "
            "pass the .ckpt of a pre-training run"
        )
    state = dict(payload)
    if any(key.startswith(LIGHTNING_PREFIX) for key in state):
        # a ReIDModule checkpoint: keep only the network (metrics and the like live outside `net.`)
        prefix = len(LIGHTNING_PREFIX)
        state = {key[prefix:]: value for key, value in state.items() if key.startswith(LIGHTNING_PREFIX)}
    return state


def _match_part_layout(state: dict[str, Tensor], target: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Converts grouped <-> separate part branches when the file and the network use different layouts."""
    file_grouped = any(key.startswith("part_branch.") for key in state)
    file_separate = any(key.startswith("part_branches.") for key in state)
    net_grouped = any(key.startswith("part_branch.") for key in target)
    net_separate = any(key.startswith("part_branches.") for key in target)
    if file_separate and net_grouped and not file_grouped:
        return part_state_dict_to_grouped(state)
    if file_grouped and net_separate and not file_separate:
        return part_state_dict_to_separate(state)
    return state


def load_pretrained(net: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Copies the tensors of a pre-trained network into ``net``, except identity classifiers.

    Reads a Lightning checkpoint (its ``state_dict``, ``net.`` prefix stripped) or a plain state
    dict with ``torch.load(weights_only=True)``; converts between the grouped and separate
    part-branch layouts if they differ. Classifier tensors (:func:`is_classifier_parameter`)
    and tensors whose shape differs from ``net``'s are skipped; the others are loaded
    (``strict=False``). Logs the counts of loaded, skipped and missing keys (names at debug level).

    Args:
        net: the network to initialise (modified in place).
        path: the weights file.

    Returns:
        ``(loaded, skipped)``: the names of the loaded tensors, and of the file's tensors that
        were not loaded (classifiers, shape mismatches, names ``net`` does not have).

    Raises:
        FileNotFoundError: no file at ``path``.
        PretrainedWeightsError: unreadable with ``weights_only=True``, not a state dict, or not a
            single tensor of it fits ``net`` (the wrong file).
    """
    path = Path(path)
    target = net.state_dict()
    state = _match_part_layout(_read_state_dict(path), target)
    loadable: dict[str, Tensor] = {}
    classifiers: list[str] = []
    mismatched: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if is_classifier_parameter(key):
            classifiers.append(key)
        elif key not in target:
            unknown.append(key)
        elif tuple(value.shape) != tuple(target[key].shape):
            mismatched.append(key)
        else:
            loadable[key] = value
    if not loadable:
        raise PretrainedWeightsError(
            f"no tensor of {path} fits the network ({len(state)} in the file: {len(classifiers)} classifier, "
            f"{len(mismatched)} of another shape, {len(unknown)} unknown names): is it a checkpoint of this "
            "network with the same model.net options (width, attention, fusion)?"
        )
    net.load_state_dict(loadable, strict=False)
    missing = [key for key in target if key not in loadable and not is_classifier_parameter(key)]
    log.info(
        "pre-trained weights %s: loaded %d tensors, skipped %d (%d classifier, %d of another shape, %d unknown), "
        "%d non-classifier tensors of the network left as initialised",
        path,
        len(loadable),
        len(classifiers) + len(mismatched) + len(unknown),
        len(classifiers),
        len(mismatched),
        len(unknown),
        len(missing),
    )
    groups = {"classifier": classifiers, "shape mismatch": mismatched, "unknown": unknown, "missing": missing}
    for label, names in groups.items():
        if names:
            log.debug("pre-trained %s keys: %s", label, ", ".join(names))
    if mismatched or missing:
        log.warning(
            "pre-trained weights %s do not cover the network: %d tensor(s) of another shape, %d left as initialised "
            "(first: %s)",
            path,
            len(mismatched),
            len(missing),
            (mismatched + missing)[0],
        )
    return sorted(loadable), sorted(classifiers + mismatched + unknown)
