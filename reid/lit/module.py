"""The LightningModule: identity losses (Eq. 11), SGD with the paper's step schedule, CMC/mAP validation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from torch import Tensor, nn

from reid.data.records import CropBatch
from reid.errors import ReidError
from reid.metrics import ReIDMetric
from reid.metrics.attention_health import AttentionHealth, flatten_health, health_summary
from reid.models.network import NetworkOutput
from reid.models.pretrained import load_pretrained
from reid.names import BRANCH_NAMES, RANK_METRICS, RegionMode

log = logging.getLogger(__name__)


class InferenceOnlyError(ReidError, RuntimeError):
    """A module rebuilt from a checkpoint (no optimiser) asked to train."""


# the stored model options a module rebuilt from a checkpoint takes as values (never optimiser,
# scheduler, pre-trained weights or compile settings: those are training's, or code)
#: where the visibility loss takes its label (see ReIDModule.visibility_label)
VisibilityTarget = Literal["keypoints", "erasing", "both", "erasing_map"]
VISIBILITY_TARGETS: tuple[str, ...] = get_args(VisibilityTarget)
_STORED_OPTIONS = ("regions", "lambda_intra", "label_smoothing", "fused_label_smoothing", "channels_last")


def stored_network(net_cfg: Any, source: str) -> Callable[..., nn.Module]:
    """``net(num_classes=...)`` for a stored ``model.net`` config: a class of this project's, its options as values.

    Raises:
        UntrustedConfigError: the config names another class (see :mod:`reid.trusted`).
    """
    import functools

    from reid.models import AttentionReIDNet
    from reid.trusted import NETWORK_TARGETS, UntrustedConfigError

    options = dict(net_cfg or {})
    target = options.pop("_target_", None)
    options.pop("_partial_", None)
    if target not in NETWORK_TARGETS:
        raise UntrustedConfigError(
            f"{source}: refusing the stored config key 'model.net._target_' = {target!r}: not one of this "
            f"project's networks ({', '.join(sorted(NETWORK_TARGETS))})"
        )
    return functools.partial(AttentionReIDNet, **options)


def unerased_map(rectangles: Tensor, size: tuple[int, ...]) -> Tensor:
    """(B, 4, h, w) float: 1 where a part crop's pixel was not erased, from its (B, 4, 4) erased rectangles."""
    from reid.data.device_batch import rectangle_mask

    height, width = size
    inside = rectangle_mask(rectangles.reshape(-1, 4), height, width)
    return (~inside).float().view(*rectangles.shape[:2], height, width)


class ReIDModule(pl.LightningModule):
    """Trains the five-branch network with one cross-entropy loss per branch (and the fused one).

    Loss (Eq. 11): models with a trained fusion (``fusion`` = ``inter`` or ``fc``) minimise
    ``lambda_intra * sum_j CE(branch_j) + CE(fused)``; the others minimise ``sum_j CE(branch_j)``
    and concatenate the five features at test time.

    Args:
        net: a callable ``net(num_classes=...) -> nn.Module`` (Hydra ``_partial_``), or a module.
        num_classes: number of training identities.
        optimizer: ``optimizer(params) -> Optimizer`` (Hydra ``_partial_``).
        scheduler: ``scheduler(optimizer) -> LRScheduler`` or None; stepped once per epoch.
        regions: the crops the model is fed (``pose`` or ``strips``); stored with the weights.
        lambda_intra: the weight of the five branch losses in Eq. 11.
        label_smoothing: cross-entropy label smoothing (0 = the paper's plain softmax loss).
        fused_label_smoothing: label smoothing of the fused (inter / fc) loss; None = ``label_smoothing``.
        visibility_loss: weight of a binary cross-entropy that pulls inter-attention's mu_i towards
            the mean confidence of part i's keypoints (a visibility pseudo-label, as PGFA and PVPM
            derive one; the batch's ``part_confidence``); 0 (default) adds nothing.
        visibility_target: the label of that loss (:data:`VISIBILITY_TARGETS`): ``keypoints`` (the
            mean joint confidence above), ``erasing`` (the share of each part crop that random
            erasing left, the batch's ``part_unerased``: self-supervised, as VPM learns visibility
            from the regions it cut away), ``both`` (their product) or ``erasing_map`` (where the
            erasing fell, location by location: each location of the part branches' visibility
            map, ``model.net.inter_source=map``, against the unerased share of the crop pixels it
            covers; the batch's ``part_erased``, VPM's dense self-supervision).
        channels_last: run the network in channels_last memory format (faster on CPU; docs/benchmarks.md).
        eval_options: keyword options of :class:`reid.metrics.ReIDMetric` (distance, protocol...).
        compile: run the training forward through ``torch.compile`` (evaluation stays eager, so a run
            compiles one graph); checkpoints are unchanged.
        compile_options: keyword options of ``torch.compile`` (``backend``, ``mode``, ``fullgraph``,
            ``dynamic``; e.g. ``{"mode": "max-autotune"}``).
        pretrained: a checkpoint or state dict (e.g. of ImageNet pre-training) to initialise the
            network from, identity classifiers excepted (:func:`reid.models.pretrained.load_pretrained`).
    """

    #: the last validation's figures, set by on_validation_epoch_end (tensors; ClassificationModule's are floats)
    last_val_results: dict[str, Tensor | float]
    #: ``torch.compile`` of ``net`` with ``compile=true``, which the training forward runs; else None
    compiled_net: Callable[..., NetworkOutput] | None

    def __init__(
        self,
        net: Callable[..., nn.Module] | nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., Any] | None = None,
        regions: RegionMode = "pose",
        lambda_intra: Annotated[float, Ge(0)] = 0.5,
        label_smoothing: Annotated[float, Interval(ge=0, lt=1)] = 0.0,
        fused_label_smoothing: Annotated[float | None, Interval(ge=0, lt=1)] = None,
        visibility_loss: Annotated[float, Ge(0)] = 0.0,
        visibility_target: VisibilityTarget = "keypoints",
        channels_last: bool = True,
        eval_options: dict | None = None,
        pretrained: str | None = None,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Only plain values go into the checkpoint's hyper-parameters, so that checkpoints load
        # with torch.load(weights_only=True); the network's config is stored by train.py.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net if isinstance(net, nn.Module) else net(num_classes=num_classes)
        if pretrained:
            load_pretrained(self.net, pretrained)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lambda_intra = float(lambda_intra)
        self.label_smoothing = float(label_smoothing)
        self.fused_label_smoothing = (
            self.label_smoothing if fused_label_smoothing is None else float(fused_label_smoothing)
        )
        self.visibility_loss = float(visibility_loss)
        if visibility_target not in VISIBILITY_TARGETS:
            raise ValueError(f"visibility_target must be one of {VISIBILITY_TARGETS}, got {visibility_target!r}")
        self.visibility_target = visibility_target
        self.channels_last = bool(channels_last)
        self.val_metric = ReIDMetric(**(eval_options or {}))
        # mask saturation, working range, spatial spread and mu on the query images (reid.metrics.attention_health)
        self.attention_health = AttentionHealth()
        self.last_attention_health: dict[str, Any] = {}
        if self.channels_last:
            # Module.to takes memory_format at run time; torch's stubs leave it out of the overloads
            self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # Only the training forward is compiled; evaluation runs the plain network. Compiling both made a
        # run compile three graphs (training; validation, whose no_grad fails the training graph's guard;
        # validation's smaller last batch, a dynamic-shape graph), each a full Inductor compile on a GPU.
        # Kept out of the module tree (``__dict__``): parameter names, and so checkpoints, are the plain network's.
        self.__dict__["compiled_net"] = torch.compile(self.net, **(compile_options or {})) if compile else None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> ReIDModule:
        """Rebuilds the module from a checkpoint of ``train.py`` alone, as Lightning users expect.

        Lightning's own version calls ``cls(**hyper_parameters)``, but the network and the
        optimiser are Hydra partials that are kept out of the hyper-parameters (so that
        checkpoints load with ``torch.load(weights_only=True)``). The model config ``train.py``
        stores in every checkpoint says how to build them; the checkpoint is read with
        ``weights_only=True``. ``kwargs`` override constructor arguments (``eval_options``,
        ``compile``...); ``hparams_file`` is not supported (the stored config is the source).
        """
        from reid.checkpoints import load_checkpoint

        if hparams_file is not None:
            raise ValueError(
                "hparams_file is not supported: the model config stored in the checkpoint builds the module"
            )
        module = cls.from_checkpoint(load_checkpoint(checkpoint_path), checkpoint_path, strict=strict, **kwargs)
        if map_location is not None:
            module = module.to(map_location)
        return module

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: dict[str, Any],
        source: str | Path = "the checkpoint",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> ReIDModule:
        """The module of an already loaded checkpoint of ``train.py`` (see :meth:`load_from_checkpoint`).

        Built from the stored config as *data*: the network class is looked up among this
        project's own (:func:`stored_network`), its options are passed as values, and no
        ``_target_`` read from the file is ever called. The module has no optimiser or scheduler
        (it is for inference; train with ``train.py ckpt_path=``), no pre-trained weights and no
        ``torch.compile`` unless ``kwargs`` say so.
        """
        from reid.checkpoints import CONFIG_KEY, CheckpointLoadError
        from reid.trusted import check_stored_config

        stored = checkpoint.get(CONFIG_KEY) or {}
        if "model" not in stored or "num_classes" not in checkpoint.get("hyper_parameters", {}):
            raise CheckpointLoadError(
                f"{source} holds no stored model config ('{CONFIG_KEY}'): it was not written by train.py; "
                "build the module yourself and load its state_dict"
            )
        check_stored_config(stored, str(source))  # also done by load_checkpoint; callers may pass any dict
        model_cfg = dict(stored["model"])
        target = model_cfg.pop("_target_", None)
        if target != f"{cls.__module__}.{cls.__qualname__}":
            raise CheckpointLoadError(f"{source} holds a {target} checkpoint, not a {cls.__qualname__} one")
        options = {key: value for key, value in model_cfg.items() if key in _STORED_OPTIONS}
        hparams = checkpoint["hyper_parameters"]
        options.update(num_classes=int(hparams["num_classes"]), eval_options=hparams.get("eval_options"))
        options.update(kwargs)
        module = cls(net=stored_network(model_cfg.get("net"), str(source)), optimizer=None, **options)
        module.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        return module

    # ------------------------------------------------------------------ forward
    def forward(
        self, whole: Tensor, parts: Tensor, return_attention: bool = False, part_visibility: Tensor | None = None
    ) -> NetworkOutput:
        """Runs the network (which puts its inputs in its own memory format); returns its ``NetworkOutput``.

        ``part_visibility``: the batch's ``part_confidence`` (B, 4), which a network with
        ``inter_source=keypoints`` weighs its parts by (others ignore it).
        """
        net = self.compiled_net if self.training and self.compiled_net is not None else self.net
        if part_visibility is None or not getattr(self.net, "needs_keypoints", False):
            # the call a network without keypoint weights has always had (a user's own network among them)
            return net(whole, parts, return_attention=return_attention)
        return net(whole, parts, return_attention=return_attention, part_visibility=part_visibility)

    @torch.no_grad()
    def extract_features(self, whole: Tensor, parts: Tensor, part_visibility: Tensor | None = None) -> Tensor:
        """The test-time feature of a batch (eval mode is the caller's business)."""
        return self(whole, parts, part_visibility=part_visibility).feature

    # ------------------------------------------------------------------ losses
    def compute_losses(
        self, output: NetworkOutput, pids: Tensor, visibility: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Per-branch cross-entropy losses and their Eq. 11 total (key ``loss``).

        With ``visibility_loss`` > 0, a network with part weights and ``visibility`` (B, 4) in
        [0, 1] (NaN where unknown): ``loss_visibility``, the binary cross-entropy of mu against
        it, is added with that weight.
        """
        losses: dict[str, Tensor] = {}
        for name, logits in zip(BRANCH_NAMES, output.branch_logits, strict=True):  # the network's five branches
            losses[f"loss_{name}"] = F.cross_entropy(logits, pids, label_smoothing=self.label_smoothing)
        intra = torch.stack([losses[f"loss_{n}"] for n in BRANCH_NAMES]).sum()
        if output.fused_logits is not None:
            losses["loss_fused"] = F.cross_entropy(
                output.fused_logits, pids, label_smoothing=self.fused_label_smoothing
            )
            losses["loss"] = self.lambda_intra * intra + losses["loss_fused"]
        else:
            losses["loss"] = intra
        if self.visibility_loss > 0 and visibility is not None and visibility.ndim == 4:
            if output.visibility_maps is None:
                raise ValueError("model.visibility_target=erasing_map needs model.net.inter_source=map")
            maps = output.visibility_maps.float()
            target = F.adaptive_avg_pool2d(visibility.to(maps), (maps.shape[-2], maps.shape[-1]))
            losses["loss_visibility"] = F.binary_cross_entropy_with_logits(maps, target)
            losses["loss"] = losses["loss"] + self.visibility_loss * losses["loss_visibility"]
        elif self.visibility_loss > 0 and output.part_weights is not None and visibility is not None:
            target = visibility.to(output.part_weights)
            known = ~torch.isnan(target)
            if bool(known.any()):
                mu = output.part_weights.float().clamp(1e-6, 1 - 1e-6)
                losses["loss_visibility"] = F.binary_cross_entropy(mu[known], target[known].float())
                losses["loss"] = losses["loss"] + self.visibility_loss * losses["loss_visibility"]
        return losses

    def visibility_label(self, batch: CropBatch) -> Tensor | None:
        """The (B, 4) visibility pseudo-label that ``visibility_target`` names (None: the batch has none)."""
        fields = cast("Mapping[str, Tensor]", batch)  # every field of a batch is a tensor
        keypoints, unerased = fields.get("part_confidence"), fields.get("part_unerased")
        if self.visibility_target == "keypoints":
            return keypoints
        if self.visibility_target == "erasing_map" and fields.get("part_erased") is not None:
            return unerased_map(fields["part_erased"], tuple(fields["parts"].shape[-2:]))
        if self.visibility_loss > 0 and (unerased is None or self.visibility_target == "erasing_map"):
            raise ValueError(
                f"model.visibility_target={self.visibility_target} learns from what random erasing hid, but "
                "the batch has no erasing: set data.augment.random_erasing > 0"
            )
        # unerased is None here only with visibility_loss == 0, where no loss reads the label
        if self.visibility_target == "erasing" or keypoints is None or unerased is None:
            return unerased
        return unerased * torch.nan_to_num(keypoints.to(unerased), nan=1.0)

    def training_step(self, batch: CropBatch, batch_idx: int) -> Tensor:
        output = self(batch["whole"], batch["parts"], part_visibility=batch.get("part_confidence"))
        losses = self.compute_losses(output, batch["pid"], self.visibility_label(batch))
        logits = output.fused_logits if output.fused_logits is not None else sum(output.branch_logits)
        accuracy = (logits.argmax(dim=1) == batch["pid"]).float().mean()
        batch_size = batch["pid"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/acc", accuracy, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size)
        for key, value in losses.items():
            if key != "loss":
                self.log(f"train/{key}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        return losses["loss"]

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self.val_metric.reset()
        self.attention_health.reset()

    def validation_step(self, batch: CropBatch, batch_idx: int) -> None:
        with torch.no_grad():
            output = self(
                batch["whole"], batch["parts"], return_attention=True, part_visibility=batch.get("part_confidence")
            )
        self.val_metric.update(output.feature, batch["pid"], batch["camid"], batch["is_query"], batch["index"])
        # the batch's optional truth fields (synthetic masks, keypoint confidences) score the attention too
        self.attention_health.update(
            output.attention,
            output.part_weights,
            select=batch["is_query"].bool(),
            truth=cast("Mapping[str, Tensor]", batch),  # every field of a batch is a tensor
        )

    def on_validation_epoch_end(self) -> None:
        results = self.val_metric.compute()
        self.last_val_results = {k: v for k, v in results.items() if k != "cmc"}
        # for callbacks that draw pictures or per-branch tables after validation (reid.lit.dashboard)
        self.last_val_gathered = {k: v.detach().cpu() for k, v in self.val_metric.gathered.items()}
        self.last_val_gathered["cmc"] = results["cmc"].detach().cpu()
        self.last_attention_health = self.attention_health.compute() if self.attention_health.update_count else {}
        mu = self.attention_health.mu() if self.attention_health.update_count else None
        if mu is not None:  # every process's query images: for the mu histogram
            self.last_val_gathered["part_weights"] = mu.detach().float().cpu()
        for key in RANK_METRICS:
            if key in results:
                value = torch.as_tensor(results[key], dtype=torch.float32)
                self.log(f"val/{key}", value, prog_bar=key in ("rank1", "mAP"), sync_dist=False)
        for key, figure in flatten_health(self.last_attention_health, prefix="val/attention").items():
            self.log(key, torch.tensor(figure, dtype=torch.float32), sync_dist=False)
        if self.last_attention_health:
            log.info("attention health (epoch %d): %s", self.current_epoch, health_summary(self.last_attention_health))
        self.val_metric.reset()
        self.attention_health.reset()

    def test_step(self, batch: CropBatch, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise InferenceOnlyError(
                "this module was rebuilt from a checkpoint for inference and has no optimiser: to train on, "
                "run train.py with ckpt_path=<the checkpoint> (resume) or model.pretrained=<it> (fine-tune)"
            )
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
