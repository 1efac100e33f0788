"""Is the attention alive? A torchmetrics Metric of mask saturation, working range, spatial spread and mu.

Over 400 lines on purpose: the Metric, its per-batch figures and the truth scores that feed it
are one measurement, kept together so that what is logged and what is reported cannot drift.

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

Where the data set knows the truth (the synthetic set's masks and visible shares,
:mod:`reid.data.truth`), the figures say what the attention is *for*:

- ``auroc`` (per branch and block): how well the mask separates the visible person from the
  rest of its crop, as the AUROC of the mask's values (mean over channels) over person against
  other positions, per image, averaged (0.5 = blind, 1 = perfect, 0 = inverted).
- ``complementarity`` (per part and block): Pearson's correlation between the global branch's
  mask and a part branch's mask at the same image points (the part crop's cells mapped into the
  whole-body crop through the Eq. 1-2 boxes), per image, averaged. The paper's Fig. 7 says the
  two "detect different regions": near 0 or below.
- ``rho_visible`` (per part): Spearman's rho between the part's weight mu and the part's true
  visible share over the images (synthetic only); ``rho_confidence``: the same against the mean
  confidence of the keypoints that define the part's region (Eq. 1-2), on any data set with
  keypoints.
- ``concordance_visible`` / ``concordance_confidence`` (per part): Harrell's concordance index of
  mu as a predictor of the same two figures: over the pairs of images whose visible share (or
  confidence) differs, the share that mu orders the same way (1 = perfect, 0.5 = blind, 0 =
  inverted). Most parts are wholly visible and tie in the truth, so no weight that varies can
  reach a rho near 1 there; the concordance leaves the tied pairs out.

Everything is a sum over batches (and over processes: ``dist_reduce_fx="sum"`` / ``"cat"``), so
the figures are exact over a whole validation pass whatever the batching or the process count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from reid.metrics.truth import concordance, mask_auroc, pearson, spearman, truth_on_grid
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
    auroc_sum: Tensor
    auroc_count: Tensor
    complementarity_sum: Tensor
    complementarity_count: Tensor
    part_pairs: list[Tensor]

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
        for name, rows in (("auroc", len(BRANCH_NAMES)), ("complementarity", len(PART_NAMES))):
            for kind in ("sum", "count"):
                zeros = torch.zeros((rows, len(BLOCK_NAMES)), dtype=torch.float64)
                self.add_state(f"{name}_{kind}", default=zeros, dist_reduce_fx="sum")
        # per image: mu (4), the parts' true visible shares (4), their keypoints' mean confidence (4); NaN where unknown
        self.add_state("part_pairs", default=[], dist_reduce_fx="cat")

    def update(
        self,
        attention: Mapping[str, Sequence[Tensor]] | None,
        part_weights: Tensor | None,
        select: Tensor | None = None,
        truth: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Adds one batch's masks and mu (``select``: a bool mask of the images to count).

        ``truth`` is the batch itself (or any mapping) when it carries the optional fields of
        :class:`reid.data.crop_dataset.CropDataset`: ``truth_whole`` (B, H, W) and ``truth_parts``
        (B, 4, h, w) visible-person coverage, ``truth_visible`` (B, 5) visible shares,
        ``part_confidence`` (B, 4) and ``boxes`` (B, 5, 4). Missing fields leave their figures out.
        """
        if truth is not None:
            self._update_truth(attention, part_weights, select, truth)
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

    def _update_truth(
        self,
        attention: Mapping[str, Sequence[Tensor]] | None,
        part_weights: Tensor | None,
        select: Tensor | None,
        truth: Mapping[str, Tensor],
    ) -> None:
        """The figures against the truth (see the module doc)."""

        def field(name: str) -> Tensor | None:
            value = truth.get(name)
            if value is None:
                return None
            return value[select.to(value.device)] if select is not None else value

        masks = {
            branch: [m.detach().float().mean(dim=1) if m.dim() == 4 else m.detach().float() for m in maps]
            for branch, maps in (attention or {}).items()
            if maps
        }
        if select is not None:
            masks = {b: [m[select.to(m.device)] for m in maps] for b, maps in masks.items()}
        coverage: dict[str, Tensor | None] = {"global": field("truth_whole")}
        parts = field("truth_parts")
        for index, part in enumerate(PART_NAMES):
            coverage[part] = parts[:, index] if parts is not None else None
        for branch_index, branch in enumerate(BRANCH_NAMES):
            cover = coverage[branch]
            if cover is None or branch not in masks:
                continue
            for block_index, mask in enumerate(masks[branch][: len(BLOCK_NAMES)]):
                if mask.shape[0] == 0:
                    continue
                grid = (int(mask.shape[-2]), int(mask.shape[-1]))
                positive = truth_on_grid(cover.to(mask.device).float() / _coverage_scale(cover), grid)
                scores = mask_auroc(mask.flatten(1), positive.flatten(1))
                known = ~torch.isnan(scores)
                self.auroc_sum[branch_index, block_index] += scores[known].sum()
                self.auroc_count[branch_index, block_index] += known.sum()
        boxes = field("boxes")
        if boxes is not None and "global" in masks:
            for part_index, part in enumerate(PART_NAMES):
                for block_index, (whole_mask, part_mask) in enumerate(
                    zip(masks["global"], masks.get(part, []), strict=False)
                ):
                    if block_index >= len(BLOCK_NAMES) or whole_mask.shape[0] == 0:
                        continue
                    values = mask_correlation(whole_mask, part_mask, boxes[:, 0], boxes[:, part_index + 1])
                    known = ~torch.isnan(values)
                    self.complementarity_sum[part_index, block_index] += values[known].sum()
                    self.complementarity_count[part_index, block_index] += known.sum()
        visible, confidence = field("truth_visible"), field("part_confidence")
        if part_weights is not None and (visible is not None or confidence is not None):
            mu = part_weights.detach().float().reshape(part_weights.shape[0], -1)
            if select is not None:
                mu = mu[select.to(mu.device)]
            nan = torch.full_like(mu, float("nan"))
            rows = torch.cat(
                [
                    mu,
                    visible[:, 1:].to(mu) if visible is not None else nan,
                    confidence.to(mu) if confidence is not None else nan,
                ],
                dim=1,
            )
            if rows.numel():
                self.part_pairs.append(rows)

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
        for branch_index, branch in enumerate(BRANCH_NAMES):
            for block_index, block in enumerate(BLOCK_NAMES):
                seen = float(self.auroc_count[branch_index, block_index])
                if seen and branch in intra and block in intra[branch]:
                    auroc = float(self.auroc_sum[branch_index, block_index]) / seen
                    out["intra"][branch][block]["auroc"] = auroc
        if float(self.auroc_count.sum()):
            out["intra_mean"]["auroc"] = float(self.auroc_sum.sum() / self.auroc_count.sum())
        complementarity: dict[str, dict[str, float]] = {}
        for part_index, part in enumerate(PART_NAMES):
            correlations = {
                block: float(self.complementarity_sum[part_index, block_index] / seen)
                for block_index, block in enumerate(BLOCK_NAMES)
                if (seen := float(self.complementarity_count[part_index, block_index]))
            }
            if correlations:
                complementarity[part] = correlations
        if complementarity:
            out["complementarity"] = complementarity
            out["complementarity_mean"] = float(
                self.complementarity_sum.sum() / self.complementarity_count.sum().clamp_min(1)
            )
        count = float(self.mu_count)
        if count > 0:
            mean = self.mu_sum / count
            var = (self.mu_square / count - mean**2).clamp_min(0)
            out["inter"] = {
                part: {"mean": float(mean[i]), "std": float(var[i].sqrt())} for i, part in enumerate(PART_NAMES)
            }
            # a list of batches, or one tensor after a distributed sync
            stored: list[Tensor] | Tensor = self.part_pairs
            pairs = (dim_zero_cat(stored) if stored else None) if isinstance(stored, list) else stored
            if pairs is not None and pairs.numel():
                parts = len(PART_NAMES)
                for target, offset in (("visible", parts), ("confidence", 2 * parts)):
                    if bool(torch.isnan(pairs[:, offset : offset + parts]).all()):
                        continue  # no truth of this kind (a constant mu still gets NaN: it follows nothing)
                    for figure, score in (("rho", spearman), ("concordance", concordance)):
                        values = [score(pairs[:, i], pairs[:, offset + i]) for i in range(parts)]
                        for part, value in zip(PART_NAMES, values, strict=True):
                            out["inter"][part][f"{figure}_{target}"] = value
                        known = [v for v in values if not math.isnan(v)]
                        average = sum(known) / len(known) if known else math.nan
                        out.setdefault("inter_mean", {})[f"{figure}_{target}"] = average
        return out

    def mu(self) -> Tensor | None:
        """Every mu seen, (N, 4), or None (for histograms)."""
        if not self.keep_mu_values or not self.mu_values:
            return None
        values = self.mu_values
        return dim_zero_cat(values) if isinstance(values, list) else values


def _coverage_scale(coverage: Tensor) -> float:
    """255 for uint8 coverage (what the loaders ship), 1 for float coverage."""
    return 255.0 if coverage.dtype == torch.uint8 else 1.0


def mask_correlation(whole_mask: Tensor, part_mask: Tensor, whole_boxes: Tensor, part_boxes: Tensor) -> Tensor:
    """Per image, Pearson's correlation of a part branch's mask and the global mask at the same image points.

    Each cell centre of the part mask (in its crop) is mapped to the image through the part's
    box, then into the whole-body crop through the whole box, where the global mask is read
    bilinearly. Cells that fall outside the whole-body crop are left out.

    Args:
        whole_mask: (B, h, w) the global branch's mask; part_mask: (B, h', w') a part branch's.
        whole_boxes, part_boxes: (B, 4) their boxes (x1, y1, x2, y2) in image pixels.

    Returns:
        (B,) float64; NaN where fewer than 3 cells overlap or either mask is constant there.
    """
    import torch.nn.functional as F

    batch, height, width = part_mask.shape
    device = part_mask.device
    whole_boxes, part_boxes = whole_boxes.to(device).double(), part_boxes.to(device).double()
    u = (torch.arange(width, device=device, dtype=torch.float64) + 0.5) / width
    v = (torch.arange(height, device=device, dtype=torch.float64) + 0.5) / height
    x = part_boxes[:, 0, None] + u[None] * (part_boxes[:, 2] - part_boxes[:, 0])[:, None]  # (B, w')
    y = part_boxes[:, 1, None] + v[None] * (part_boxes[:, 3] - part_boxes[:, 1])[:, None]  # (B, h')
    gx = 2 * (x - whole_boxes[:, 0, None]) / (whole_boxes[:, 2] - whole_boxes[:, 0])[:, None] - 1
    gy = 2 * (y - whole_boxes[:, 1, None]) / (whole_boxes[:, 3] - whole_boxes[:, 1])[:, None] - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (B, h', w', 2)
    sampled = F.grid_sample(
        whole_mask.double().unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=False
    ).squeeze(1)
    inside = (grid.abs() <= 1).all(dim=-1)
    out = torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    for i in range(batch):
        keep = inside[i]
        if int(keep.sum()) >= 3:
            out[i] = pearson(sampled[i][keep], part_mask[i].double()[keep])
    return out


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
    for figure, value in health.get("inter_mean", {}).items():
        flat[f"{prefix}/mu/mean/{figure}"] = value
    for part, blocks in health.get("complementarity", {}).items():
        for block, value in blocks.items():
            flat[f"{prefix}/complementarity/{part}/{block}"] = value
    if "complementarity_mean" in health:
        flat[f"{prefix}/complementarity/mean"] = health["complementarity_mean"]
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
    if mean and "auroc" in mean:
        pieces.append(f"mask AUROC {mean['auroc']:.3f}")
    if "complementarity_mean" in health:
        pieces.append(f"global-part mask correlation {health['complementarity_mean']:+.3f}")
    inter = health.get("inter")
    if inter:
        pieces.append("mu " + ", ".join(f"{p} {f['mean']:.2f}±{f['std']:.2f}" for p, f in inter.items()))
    for figure, value in health.get("inter_mean", {}).items():
        name = figure.replace("rho_", "rho vs ").replace("concordance_", "concordance with ")
        pieces.append(f"mu {name} {format(value, _spec(figure))}")
    return "; ".join(pieces) or "no attention"


def health_table(health: Mapping[str, Any]) -> str:
    """Markdown tables of the figures: one row per branch and block, then mu per part."""
    lines: list[str] = []
    if health.get("intra"):
        truth = "auroc" in health["intra_mean"]
        extra = (" mask AUROC (synthetic truth) |", "---:|") if truth else ("", "")
        lines += [
            f"| branch | block | saturated % | mean m(1-m) | spatial std |{extra[0]}",
            f"|---|---|---:|---:|---:|{extra[1]}",
        ]
        for branch, blocks in health["intra"].items():
            for block, f in blocks.items():
                auroc = f" {_figure(f.get('auroc'))} |" if truth else ""
                lines.append(
                    f"| {branch} | {block.upper()} | {100 * f['saturated']:.1f} | {f['working']:.3f} | "
                    f"{f['spatial_std']:.3f} |{auroc}"
                )
        mean = health["intra_mean"]
        auroc = f" {_figure(mean.get('auroc'))} |" if truth else ""
        lines.append(
            f"| **all** | | {100 * mean['saturated']:.1f} | {mean['working']:.3f} | {mean['spatial_std']:.3f} |{auroc}"
        )
    if health.get("complementarity"):
        if lines:
            lines.append("")
        lines += ["| part | global-part mask correlation, B2 | B3 | B4 |", "|---|---:|---:|---:|"]
        for part, blocks in health["complementarity"].items():
            lines.append(f"| {part} | " + " | ".join(_figure(blocks.get(b), "+.3f") for b in BLOCK_NAMES) + " |")
    if health.get("inter"):
        if lines:
            lines.append("")
        headers = {
            "rho_visible": "rho vs true visible share",
            "concordance_visible": "concordance with true visible share",
            "rho_confidence": "rho vs keypoint confidence",
            "concordance_confidence": "concordance with keypoint confidence",
        }
        rhos = [name for name in headers if name in health.get("inter_mean", {})]
        lines += [
            "| part | mu mean | mu std over images |" + "".join(f" {headers[r]} |" for r in rhos),
            "|---|---:|---:|" + "---:|" * len(rhos),
        ]
        lines += [
            f"| {part} | {f['mean']:.3f} | {f['std']:.3f} |"
            + "".join(f" {_figure(f.get(r), _spec(r))} |" for r in rhos)
            for part, f in health["inter"].items()
        ]
        if rhos:
            means = health["inter_mean"]
            lines.append("| **mean** | | |" + "".join(f" {_figure(means.get(r), _spec(r))} |" for r in rhos))
    if health.get("knockout"):
        if lines:
            lines.append("")
        lines += ["| masks flattened over | R1 % | mAP % |", "|---|---:|---:|"]
        lines += [
            f"| {mode} | {100 * f['rank1']:.1f} | {100 * f['mAP']:.1f} |" for mode, f in health["knockout"].items()
        ]
    return "\n".join(lines)


def _spec(figure: str) -> str:
    """Correlations carry their sign; concordances lie in [0, 1]."""
    return "+.3f" if figure.startswith("rho") else ".3f"


def _figure(value: float | None, spec: str = ".3f") -> str:
    """A figure for a table cell: "-" when not measured, "n/a" when undefined (NaN)."""
    if value is None:
        return "-"
    return "n/a" if math.isnan(value) else format(value, spec)


def block_caption(health: Mapping[str, Any], branches: Sequence[str], block: str) -> str | None:
    """``"sat 0.3% m(1-m) .21 sd .15"`` for one block, averaged over ``branches`` (None when not measured)."""
    figures = [health.get("intra", {}).get(branch, {}).get(block) for branch in branches]
    figures = [f for f in figures if f]
    if not figures:
        return None
    mean = {key: sum(f[key] for f in figures) / len(figures) for key in MASK_FIGURES}
    caption = f"sat {100 * mean['saturated']:.1f}%\nm(1-m) {mean['working']:.3f}\nsp.std {mean['spatial_std']:.3f}"
    aurocs = [f["auroc"] for f in figures if "auroc" in f]
    if aurocs:
        caption += f"\nAUROC {sum(aurocs) / len(aurocs):.3f}"
    return caption
