"""ONNX export of a trained network's feature extractor: `python -m reid.tools.export ckpt_path=... format=onnx`.

Over 400 lines on purpose: the export and its numerical check share the network wrapper and the
inputs they are run on, so that what is checked is what was exported.

Usage::

    python -m reid.tools.export ckpt_path=outputs/train/runs/<run>/checkpoints/last.ckpt
    python -m reid.tools.export ckpt_path=last.ckpt out=model.onnx opset=17 check=true batch=2 tolerance=1e-3

Options: ``key=value`` as for every tool (``reid-export --help`` lists them, :class:`ExportOptions`).

Output: the network's test-time path only, inputs ``whole`` (B, 3, H, W) and ``parts``
(B, 4, 3, h, w) (head, upper body, upper leg, lower leg), output ``feature`` (B, D), the vector
evaluation ranks with; the batch axis is dynamic, the crop sizes are the trained ones. A JSON
sidecar ``<out>.json`` records the input sizes, the feature size, the normalisation, the region
settings and the distance. With ``check=true`` onnxruntime must match PyTorch within
``tolerance * max(1, largest |feature|)``, or be at least half as close to a float64 run of the
network as PyTorch's float32 run is. docs/evaluation.md's export section has the deployment
recipe (the regions and crops stay in Python), the exporter's choice and the measured differences.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reid.conf.tool import option, run_tool, tool_options
from reid.errors import ReidError
from reid.files import atomic_write_json
from reid.names import PART_NAMES

FORMATS = ("onnx",)
EXPORTERS = ("torchscript", "dynamo")
# opset 17: runs on onnxruntime >= 1.11 and most other runtimes; torch's dynamo exporter starts at 18
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}
INPUT_NAMES = ("whole", "parts")
OUTPUT_NAME = "feature"
PART_ORDER = PART_NAMES
INSTALL_HINT = 'pip install -e ".[export]"'
REGIONS_NOTE = (
    "The five regions are computed in Python, not in the ONNX graph: keypoints -> "
    "reid.pose.image_regions (Eq. 1-2, reid.pose.compute_regions; or reid.pose.strip_regions for "
    "regions == 'strips') -> reid.data.crops.crop_regions -> normalisation -> this model."
)


class ExportError(ReidError, RuntimeError):
    """Bad export options or a checkpoint that cannot be exported (reported in one line)."""


class FeatureExtractor(nn.Module):
    """The network's test-time path: ``(whole, parts) -> feature``, the one output an export needs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, whole: Tensor, parts: Tensor) -> Tensor:
        """The (B, D) feature of ``whole`` (B, 3, H, W) and ``parts`` (B, 4, 3, h, w) crops."""
        return self.net(whole, parts).feature


@dataclass
class ExportOptions:
    """The options of ``reid-export`` / ``python -m reid.tools.export`` (``key=value``; see the module docstring)."""

    ckpt_path: str | None = option(None, "the checkpoint to export, or its run folder (required)")
    format: str = option("onnx", "the file format (only onnx)")
    out: str | None = option(None, "the ONNX file (default: <checkpoint stem>.onnx next to the checkpoint)")
    opset: int | None = option(None, "ONNX opset (default: 17; 18 with exporter=dynamo)", low=7)
    check: bool = option(True, "run the exported model in onnxruntime and compare with PyTorch")
    batch: int = option(2, "the example batch traced; the check runs batches 1 and batch + 1", low=1)
    tolerance: float = option(
        1e-3, "largest difference accepted, relative to the largest feature", low=0.0, low_open=True
    )
    seed: int = option(0, "seed of the check's random inputs")
    exporter: str = option("torchscript", "torchscript, or dynamo (needs `pip install onnxscript`)")


@dataclass
class BatchCheck:
    """onnxruntime against PyTorch on one random batch.

    Attributes:
        batch: the batch size.
        max_abs_diff: largest |onnxruntime - PyTorch float32| over the batch's features.
        max_abs_feature: largest |feature| of PyTorch's result (the scale of the rounding).
        onnx_error, torch_error: largest distance of onnxruntime's and of PyTorch's float32
            features from PyTorch's float64 result; only computed when ``max_abs_diff`` alone
            exceeds the tolerance.
    """

    batch: int
    max_abs_diff: float
    max_abs_feature: float
    onnx_error: float | None = None
    torch_error: float | None = None

    def allowed(self, tolerance: float) -> float:
        """The largest ``max_abs_diff`` accepted: ``tolerance * max(1, max_abs_feature)``."""
        return tolerance * max(1.0, self.max_abs_feature)

    def passed(self, tolerance: float) -> bool:
        """Within the tolerance, or at least half as exact as PyTorch's own float32 run."""
        if self.max_abs_diff <= self.allowed(tolerance):
            return True
        return self.onnx_error is not None and self.torch_error is not None and self.onnx_error <= 2 * self.torch_error


@dataclass
class ExportResult:
    """What :func:`export` wrote and, with ``check=true``, measured."""

    onnx_path: Path
    meta_path: Path
    feature_dim: int
    checks: list[BatchCheck] = field(default_factory=list)

    def passed(self, tolerance: float) -> bool:
        """Whether every checked batch passed (True when nothing was checked)."""
        return all(check.passed(tolerance) for check in self.checks)


def parse_options(argv: Sequence[str]) -> ExportOptions:
    """Reads ``key=value`` arguments into :class:`ExportOptions`, as every tool does.

    See :func:`reid.conf.tool.tool_options`.
    """
    return tool_options(ExportOptions, argv, "export")


def _validate(options: ExportOptions) -> None:
    if not options.ckpt_path:
        raise ExportError(
            "ckpt_path is required: python -m reid.tools.export ckpt_path=<run dir>/checkpoints/last.ckpt"
        )
    if options.format not in FORMATS:
        raise ExportError(f"format={options.format} is not supported; the only export format is onnx (format=onnx)")
    if options.exporter not in EXPORTERS:
        raise ExportError(f"exporter={options.exporter} is unknown; choose one of {', '.join(EXPORTERS)}")
    if options.opset is None:
        options.opset = DEFAULT_OPSET[options.exporter]
    if options.exporter == "torchscript":
        from torch.onnx import _constants

        highest = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)
        if not 9 <= options.opset <= highest:
            raise ExportError(f"opset={options.opset}: the torchscript exporter writes opsets 9 to {highest}")
    elif options.opset < 18:
        raise ExportError(f"opset={options.opset}: exporter=dynamo writes opset 18 or newer")
    if options.batch < 1:
        raise ExportError(f"batch={options.batch} must be >= 1")
    if options.tolerance <= 0:
        raise ExportError(f"tolerance={options.tolerance} must be > 0")


def _require(module: str, why: str) -> Any:
    """Imports ``module`` or raises ExportError with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        hint = "pip install onnxscript" if module == "onnxscript" else INSTALL_HINT
        raise ExportError(f"{module} is not installed ({why}): {hint}") from None


def load_network(ckpt_path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the checkpoint's network (eval mode, contiguous memory format) with its weights.

    Returns:
        ``(net, config)``: the :class:`reid.models.AttentionReIDNet` and the run config stored
        in the checkpoint (``reid_config``, plain containers).
    """
    from reid.checkpoints import CONFIG_KEY, load_checkpoint
    from reid.lit.module import stored_network

    checkpoint = load_checkpoint(ckpt_path)
    config = checkpoint.get(CONFIG_KEY) if isinstance(checkpoint, dict) else None
    if not config or "model" not in config or "net" not in config["model"]:
        raise ExportError(
            f"{ckpt_path} has no {CONFIG_KEY} with the model config; export checkpoints written by train.py"
        )
    try:
        num_classes = int(checkpoint["hyper_parameters"]["num_classes"])
        state = checkpoint["state_dict"]
    except (KeyError, TypeError, ValueError):
        raise ExportError(
            f"{ckpt_path} lacks state_dict or hyper_parameters.num_classes; is it a train.py checkpoint?"
        ) from None
    # the stored config is data: the class is looked up among the project's networks, never instantiated from the file
    net = stored_network(config["model"]["net"], str(ckpt_path))(num_classes=num_classes)
    prefix = "net."
    net_state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    try:
        net.load_state_dict(net_state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ExportError(f"{ckpt_path}: the weights do not fit the stored model config ({first})") from None
    if getattr(net, "needs_keypoints", False):
        raise ExportError(
            f"{ckpt_path} weighs its parts by the images' keypoint confidence (model.net.inter_source=keypoints), "
            "a third input the exported (whole, parts) graph does not take: use FeatureExtractor or reid-search"
        )
    # channels_last weights (training's layout) would put layout transposes into the graph
    # Module.to takes memory_format at run time; torch's stubs leave it out of the overloads
    net = net.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    return net, config


def _sizes(config: dict[str, Any], ckpt_path: str | Path) -> tuple[tuple[int, int], tuple[int, int]]:
    data = config.get("data") or {}
    try:
        whole = tuple(int(v) for v in data["whole_size"])
        part = tuple(int(v) for v in data["part_size"])
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{ckpt_path}: the stored config has no data.whole_size / data.part_size") from None
    if len(whole) != 2 or len(part) != 2:
        raise ExportError(f"{ckpt_path}: data.whole_size and data.part_size must be [height, width]")
    return (whole[0], whole[1]), (part[0], part[1])


def _unwritable(out: Path, where: Path, err: OSError) -> str:
    """The one line of an ``out`` that cannot be written: ``where`` (a folder or the file) and the fix."""
    return (
        f"out={out}: cannot write {where} ({err.strerror or err}); pass out=<a file in a folder you can write>, "
        f"e.g. out={Path.home() / out.name}, or make {where} writable (chmod u+w)"
    )


def _output_path(options: ExportOptions, ckpt_path: Path) -> Path:
    """``out`` (default: ``<checkpoint stem>.onnx`` beside it), its folder made and checked writable.

    Checked before anything is exported, so a read-only folder costs no export time and says so
    in one line rather than as a traceback from deep in the exporter.
    """
    out = Path(options.out).expanduser() if options.out else ckpt_path.with_suffix(".onnx")
    if out.is_dir():
        raise ExportError(f"out={out} is a folder; name the ONNX file, e.g. out={out / (ckpt_path.stem + '.onnx')}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # a real file, not os.access: it also sees read-only mounts, ACLs and full disks
        handle, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        folder = out.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # the folder that refused a new sub-folder
        raise ExportError(_unwritable(out, folder, err)) from None
    return out


def example_inputs(
    batch: int, whole_size: tuple[int, int], part_size: tuple[int, int], generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random crops in [-1, 1), about the range of normalised ones.

    Returns:
        ``whole`` (batch, 3, H, W) and ``parts`` (batch, 4, 3, h, w).
    """
    whole = torch.rand(batch, 3, *whole_size, generator=generator) * 2 - 1
    parts = torch.rand(batch, len(PART_ORDER), 3, *part_size, generator=generator) * 2 - 1
    return whole, parts


def _export_onnx(model: FeatureExtractor, inputs: tuple[Tensor, Tensor], out: Path, options: ExportOptions) -> None:
    """Writes ``model`` to ``out`` with a dynamic batch axis."""
    with torch.no_grad(), warnings.catch_warnings():
        # the legacy exporter's deprecation notice, and trace warnings about the network's input
        # checks (shape asserts that the trace keeps as constants: they hold for every valid input)
        warnings.simplefilter("ignore")
        if options.exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(
                model,
                inputs,
                dynamo=True,
                dynamic_shapes={"whole": {0: batch}, "parts": {0: batch}},
                verbose=False,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                opset_version=options.opset,
            )
            assert program is not None  # dynamo=True always returns the ONNXProgram
            program.save(str(out), external_data=False)
        else:
            torch.onnx.export(
                model,
                inputs,
                str(out),
                dynamo=False,
                dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, OUTPUT_NAME)},
                do_constant_folding=True,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                opset_version=options.opset,
            )


def compare_with_onnxruntime(
    model: FeatureExtractor,
    onnx_path: Path,
    batches: Sequence[int],
    whole_size: tuple[int, int],
    part_size: tuple[int, int],
    tolerance: float,
    seed: int = 0,
) -> list[BatchCheck]:
    """Runs random inputs through PyTorch and onnxruntime (CPUExecutionProvider), one check per batch size.

    Where the difference exceeds ``tolerance * max(1, largest |feature|)``, both results are also
    measured against a float64 copy of the network: a badly conditioned network (saturated
    attention, far-off BatchNorm statistics) can make float32 rounding alone that large, and an
    export that is as exact as PyTorch itself is not at fault.
    """
    onnxruntime = _require("onnxruntime", "check=true runs the exported model")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    exact: FeatureExtractor | None = None
    checks: list[BatchCheck] = []
    for batch in batches:
        whole, parts = example_inputs(batch, whole_size, part_size, generator)
        with torch.no_grad():
            expected = model(whole, parts)
        (got,) = session.run([OUTPUT_NAME], {"whole": whole.numpy(), "parts": parts.numpy()})
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(
                f"{onnx_path}: onnxruntime gave shape {tuple(got.shape)}, PyTorch {tuple(expected.shape)}"
            )
        got_t = torch.from_numpy(got)
        check = BatchCheck(batch, float((got_t - expected).abs().max()), float(expected.abs().max()))
        if check.max_abs_diff > check.allowed(tolerance):
            exact = exact or copy.deepcopy(model).double().eval()
            with torch.no_grad():
                reference = exact(whole.double(), parts.double())
            check.onnx_error = float((got_t.double() - reference).abs().max())
            check.torch_error = float((expected.double() - reference).abs().max())
        checks.append(check)
    return checks


def _normalization(config: dict[str, Any]) -> dict[str, Any]:
    """How training normalised the crops (``data.augment``), as deployment has to repeat it."""
    from reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    augment = (config.get("data") or {}).get("augment") or {}
    method = str(augment.get("normalize", "mean_subtract"))
    mean = augment.get("mean")
    scale = float(augment.get("scale", 1.0 / 255.0))
    described = {
        "mean_subtract": (
            "(pixel - mean) * scale per RGB channel, mean = the channel means of the whole-body crop "
            "(one offset for all five crops of an image)"
            if mean is None
            else "(pixel - mean) * scale per RGB channel, mean fixed"
        ),
        "imagenet": "(pixel / 255 - mean) / std per RGB channel",
        "none": "pixel * scale",
    }.get(method, "see reid.data.transforms.SampleTransform")
    out: dict[str, Any] = {"method": method, "formula": described, "pixel_range": "0-255 RGB uint8 crops"}
    if method == "imagenet":
        out.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    else:
        out.update(mean=None if method == "none" else (list(mean) if mean is not None else "per_image"), scale=scale)
    out["python"] = f"reid.data.transforms.SampleTransform(train=False, normalize={method!r})"
    return out


def build_metadata(
    config: dict[str, Any],
    onnx_path: Path,
    ckpt_path: str | Path,
    feature_dim: int,
    whole_size: tuple[int, int],
    part_size: tuple[int, int],
    options: ExportOptions,
) -> dict[str, Any]:
    """The JSON sidecar: what a deployment needs to feed the model and compare its features."""
    model = config.get("model") or {}
    data = config.get("data") or {}
    evaluation = config.get("eval") or {}
    return {
        "onnx": onnx_path.name,
        "checkpoint": str(Path(ckpt_path).resolve()),
        "opset": options.opset,
        "inputs": {
            "whole": {
                "shape": ["batch", 3, *whole_size],
                "size": list(whole_size),
                "dtype": "float32",
                "layout": "NCHW RGB",
            },
            "parts": {
                "shape": ["batch", len(PART_ORDER), 3, *part_size],
                "size": list(part_size),
                "dtype": "float32",
                "layout": "N x part x CHW RGB",
                "order": list(PART_ORDER),
            },
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", feature_dim]},
        "feature_dim": feature_dim,
        "normalization": _normalization(config),
        "regions": {
            "kind": str(model.get("regions", data.get("regions", "pose"))),
            "beta": float(data.get("beta", 0.1)),
            "strips": data.get("strips") or {},
            "note": REGIONS_NOTE,
        },
        "distance": str(evaluation.get("distance", "euclidean")),
        "flip_average": bool(evaluation.get("flip", False)),
        "torch": torch.__version__,
    }


def export(options: ExportOptions) -> ExportResult:
    """Exports ``options.ckpt_path``'s feature extractor, checks it (``options.check``), writes the sidecar."""
    _validate(options)
    _require("onnx", "torch.onnx writes ONNX files with it")
    if options.exporter == "dynamo":
        _require("onnxscript", "exporter=dynamo needs it")
    ckpt_path = Path(options.ckpt_path)  # type: ignore[arg-type]
    if options.check:
        _require("onnxruntime", "check=true runs the exported model; check=false skips it")
    net, config = load_network(ckpt_path)
    whole_size, part_size = _sizes(config, ckpt_path)
    model = FeatureExtractor(net).eval()
    out = _output_path(options, ckpt_path)

    generator = torch.Generator().manual_seed(options.seed)
    inputs = example_inputs(options.batch, whole_size, part_size, generator)
    with torch.no_grad():
        feature_dim = int(model(*inputs).shape[1])
    try:
        _export_onnx(model, inputs, out, options)
    except PermissionError as err:  # the folder was writable a moment ago; out itself may be a read-only file
        raise ExportError(_unwritable(out, Path(err.filename or out), err)) from None
    model.eval()  # the exporter restores the wrapper's mode recursively; the check needs eval mode

    import onnx

    onnx.checker.check_model(str(out))
    written = onnx.load(str(out), load_external_data=False)
    options.opset = next((o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), options.opset)
    result = ExportResult(onnx_path=out, meta_path=Path(f"{out}.json"), feature_dim=feature_dim)
    metadata = build_metadata(config, out, ckpt_path, feature_dim, whole_size, part_size, options)
    if options.check:
        batches = sorted({1, options.batch + 1})
        result.checks = compare_with_onnxruntime(
            model, out, batches, whole_size, part_size, options.tolerance, seed=options.seed + 1
        )
        metadata["check"] = {
            "batches": batches,
            "max_abs_diff": max(check.max_abs_diff for check in result.checks),
            "max_abs_feature": max(check.max_abs_feature for check in result.checks),
            "tolerance": options.tolerance,
            "passed": result.passed(options.tolerance),
            "per_batch": [asdict(check) for check in result.checks],
        }
    atomic_write_json(result.meta_path, metadata, indent=2)
    return result


def export_and_check(options: ExportOptions) -> int:
    """Exports the checkpoint and prints where the files went and the check; 1 when the check failed."""
    result = export(options)
    print(f"wrote {result.onnx_path} (feature dim {result.feature_dim})")
    print(f"wrote {result.meta_path}")
    if not options.check:
        return 0
    for check in result.checks:
        line = (
            f"onnxruntime vs PyTorch, batch {check.batch}: max abs difference {check.max_abs_diff:.3g} "
            f"(largest |feature| {check.max_abs_feature:.3g}, allowed {check.allowed(options.tolerance):.3g})"
        )
        if check.onnx_error is not None:
            line += f"; vs float64: onnxruntime {check.onnx_error:.3g}, PyTorch float32 {check.torch_error:.3g}"
        print(f"{line}: {'ok' if check.passed(options.tolerance) else 'FAILED'}")
    if not result.passed(options.tolerance):
        print(
            f"error: the ONNX model differs from PyTorch by more than tolerance={options.tolerance} "
            "(relative to the largest feature) and more than PyTorch's own float32 rounding",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status.

    Status 2: bad options or checkpoint (one ``error: ...`` line; ``REID_DEBUG=1`` shows the
    traceback); 1: the check found a larger difference than ``tolerance``; 0 otherwise.
    """
    return run_tool(export_and_check, ExportOptions, "export", argv)


if __name__ == "__main__":
    raise SystemExit(main())
