"""Is the attention alive? A torchmetrics Metric of mask saturation, working range, spatial spread and mu.

A mechanism that does not work measures nothing, so the intra-attention masks m (Eq. 4-7) and
the inter-attention weights mu (Eq. 8) are watched with figures of what they are for:

- ``saturated``: the fraction of mask entries outside [0.01, 0.99]. A saturated sigmoid passes
  almost no gradient (m(1 - m) < 0.01), so its head stops learning.
- ``working``: the mean of m(1 - m), the sigmoid's own gradient factor: 0.25 at m = 0.5, about
  0.2 for logits ~ N(0, 1), 0 when saturated.
- ``spatial_std``: the standard deviation of m over the h x w positions of one channel of one
  image, averaged over channels and images. Near 0 means the mask is a per-channel constant (a
  gain BatchNorm could absorb): no *spatial* attention is being learnt.
- ``mu``: per part, the mean and the standard deviation over images of inter-attention's weight.
  Pinned at 0 or 1, or constant over images, it is a fixed gain the classifier absorbs.

Everything is a sum over batches (and over processes: ``dist_reduce_fx="sum"`` / ``"cat"``), so
the figures are exact over a whole validation pass whatever the batching or the process count.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from reid.names import BRANCH_NAMES, PART_NAMES

BLOCK_NAMES = ("b2", "b3", "b4")
MASK_FIGURES = ("saturated", "working", "spatial_std")
SATURATION_BOUNDS = (0.01, 0.99)


class AttentionHealth(Metric):
    """Accumulates the attention health figures of :mod:`this module <reid.metrics.attention_health>`.

    ``update(attention, part_weights, select=None)`` takes ``NetworkOutput.attention`` (branch name
    -> the masks of B2, B3, B4, each (B, c, h, w)) and ``NetworkOutput.part_weights`` (B, 4),
    either of which may be None; ``select`` (a (B,) bool tensor) keeps only some images, e.g. the
    queries. ``compute()`` returns a nested dict of floats (see :meth:`compute`); a branch or mu
    that was never seen is left out.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    # metric states (add_state in __init__); a "cat" list state is one tensor after a distributed sync
    saturated: Tensor
    working: Tensor
    entries: Tensor
    spatial_std: Tensor
    maps: Tensor
    mu_sum: Tensor
    mu_square: Tensor
    mu_count: Tensor
    mu_values: list[Tensor]

    def __init__(self, keep_mu_values: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shape = (len(BRANCH_NAMES), len(BLOCK_NAMES))
        self.keep_mu_values = keep_mu_values
        for name in ("saturated", "working", "entries", "spatial_std", "maps"):
            self.add_state(name, default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mu_sum", default=torch.zeros(len(PART_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mu_square", default=torch.zeros(len(PART_NAMES), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mu_count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("mu_values", default=[], dist_reduce_fx="cat")

    def update(
        self,
        attention: Mapping[str, Sequence[Tensor]] | None,
        part_weights: Tensor | None,
        select: Tensor | None = None,
    ) -> None:
        """Adds one batch's masks and mu (``select``: a bool mask of the images to count)."""
        low, high = SATURATION_BOUNDS
        for branch_index, branch in enumerate(BRANCH_NAMES):
            masks = (attention or {}).get(branch)
            for block_index, mask in enumerate(masks or ()):
                if block_index >= len(BLOCK_NAMES):
                    break
                m = mask.detach().float()
                if select is not None:
                    m = m[select.to(m.device)]
                if m.numel() == 0:
                    continue
                if m.dim() == 3:
                    m = m.unsqueeze(1)
                at = (branch_index, block_index)
                self.saturated[at] += ((m < low) | (m > high)).sum().double()
                self.working[at] += (m * (1 - m)).sum().double()
                self.entries[at] += m.numel()
                self.spatial_std[at] += m.flatten(2).std(dim=2, unbiased=False).sum().double()
                self.maps[at] += m.shape[0] * m.shape[1]
        if part_weights is not None:
            mu = part_weights.detach().float().reshape(part_weights.shape[0], -1)
            if select is not None:
                mu = mu[select.to(mu.device)]
            if mu.numel():
                self.mu_sum += mu.sum(0).double()
                self.mu_square += (mu.double() ** 2).sum(0)
                self.mu_count += mu.shape[0]
                if self.keep_mu_values:
                    # on the batch's device: NCCL gathers device tensors only (a CPU copy broke DDP on GPUs)
                    self.mu_values.append(mu)

    def compute(self) -> dict[str, Any]:
        """The figures as plain floats.

        Returns:
            ``{"intra": {branch: {block: {"saturated", "working", "spatial_std"}}}`` for every
            branch seen, ``"intra_mean"`` (the same three figures averaged over every mask entry
            / map of every branch and block), and ``{"inter": {part: {"mean", "std"}}}`` when mu
            was seen.
        """
        out: dict[str, Any] = {}
        intra: dict[str, dict[str, dict[str, float]]] = {}
        for branch_index, branch in enumerate(BRANCH_NAMES):
            blocks = {}
            for block_index, block in enumerate(BLOCK_NAMES):
                entries = float(self.entries[branch_index, block_index])
                if entries == 0:
                    continue
                maps = float(self.maps[branch_index, block_index])
                blocks[block] = {
                    "saturated": float(self.saturated[branch_index, block_index]) / entries,
                    "working": float(self.working[branch_index, block_index]) / entries,
                    "spatial_std": float(self.spatial_std[branch_index, block_index]) / maps,
                }
            if blocks:
                intra[branch] = blocks
        if intra:
            entries = float(self.entries.sum())
            out["intra"] = intra
            out["intra_mean"] = {
                "saturated": float(self.saturated.sum()) / entries,
                "working": float(self.working.sum()) / entries,
                "spatial_std": float(self.spatial_std.sum()) / float(self.maps.sum()),
            }
        count = float(self.mu_count)
        if count > 0:
            mean = self.mu_sum / count
            var = (self.mu_square / count - mean**2).clamp_min(0)
            out["inter"] = {
                part: {"mean": float(mean[i]), "std": float(var[i].sqrt())} for i, part in enumerate(PART_NAMES)
            }
        return out

    def mu(self) -> Tensor | None:
        """Every mu seen, (N, 4), or None (for histograms)."""
        if not self.keep_mu_values or not self.mu_values:
            return None
        values = self.mu_values
        return dim_zero_cat(values) if isinstance(values, list) else values


def flatten_health(health: Mapping[str, Any], prefix: str = "attention") -> dict[str, float]:
    """``compute()``'s nested dict as ``{"attention/global/b2/saturated": ..., "attention/mu/head/mean": ...}``."""
    flat: dict[str, float] = {}
    for branch, blocks in health.get("intra", {}).items():
        for block, figures in blocks.items():
            for figure, value in figures.items():
                flat[f"{prefix}/{branch}/{block}/{figure}"] = value
    for figure, value in health.get("intra_mean", {}).items():
        flat[f"{prefix}/mean/{figure}"] = value
    for part, figures in health.get("inter", {}).items():
        for figure, value in figures.items():
            flat[f"{prefix}/mu/{part}/{figure}"] = value
    return flat


def health_summary(health: Mapping[str, Any]) -> str:
    """One line for logs: the mean mask figures and the mean mu per part."""
    pieces = []
    mean = health.get("intra_mean")
    if mean:
        pieces.append(
            f"masks {100 * mean['saturated']:.1f}% saturated, mean m(1-m) {mean['working']:.3f}, "
            f"spatial std {mean['spatial_std']:.3f}"
        )
    inter = health.get("inter")
    if inter:
        pieces.append("mu " + ", ".join(f"{p} {f['mean']:.2f}±{f['std']:.2f}" for p, f in inter.items()))
    return "; ".join(pieces) or "no attention"


def health_table(health: Mapping[str, Any]) -> str:
    """Markdown tables of the figures: one row per branch and block, then mu per part."""
    lines: list[str] = []
    if health.get("intra"):
        lines += ["| branch | block | saturated % | mean m(1-m) | spatial std |", "|---|---|---:|---:|---:|"]
        for branch, blocks in health["intra"].items():
            for block, f in blocks.items():
                lines.append(
                    f"| {branch} | {block.upper()} | {100 * f['saturated']:.1f} | {f['working']:.3f} | {f['spatial_std']:.3f} |"
                )
        mean = health["intra_mean"]
        lines.append(
            f"| **all** | | {100 * mean['saturated']:.1f} | {mean['working']:.3f} | {mean['spatial_std']:.3f} |"
        )
    if health.get("inter"):
        if lines:
            lines.append("")
        lines += ["| part | mu mean | mu std over images |", "|---|---:|---:|"]
        lines += [f"| {part} | {f['mean']:.3f} | {f['std']:.3f} |" for part, f in health["inter"].items()]
    if health.get("knockout"):
        if lines:
            lines.append("")
        lines += ["| masks flattened over | R1 % | mAP % |", "|---|---:|---:|"]
        lines += [
            f"| {mode} | {100 * f['rank1']:.1f} | {100 * f['mAP']:.1f} |" for mode, f in health["knockout"].items()
        ]
    return "\n".join(lines)


def block_caption(health: Mapping[str, Any], branches: Sequence[str], block: str) -> str | None:
    """``"sat 0.3% m(1-m) .21 sd .15"`` for one block, averaged over ``branches`` (None when not measured)."""
    figures = [health.get("intra", {}).get(branch, {}).get(block) for branch in branches]
    figures = [f for f in figures if f]
    if not figures:
        return None
    mean = {key: sum(f[key] for f in figures) / len(figures) for key in MASK_FIGURES}
    return f"sat {100 * mean['saturated']:.1f}%\nm(1-m) {mean['working']:.3f}\nsp.std {mean['spatial_std']:.3f}"
