"""Network throughput: training and inference images/s of the ablation networks and of a ResNet-50.

Usage (``reid-bench`` or ``reid-bench network``; ``python -m reid.tools.bench`` is the same)::

    reid-bench                                    # defaults: every distinct network of conf/model/, demo + paper sizes
    reid-bench sizes=[demo] variants=[baseline,intra_inter] batch_size=32
    reid-bench parts_layout=[grouped,separate] sizes=[demo]   # grouped vs separate parts
    reid-bench precision=bf16 channels_last=false

Training = forward + backward + SGD step (momentum 0.9) with cross-entropy on every logit
(the five branch logits, plus the fused logits for fc / inter); inference = eval-mode forward
under ``torch.inference_mode``. Each measurement runs ``warmup`` untimed iterations, then
``iters`` timed ones, and reports the fastest (the machine may be shared). ResNet-50 is fed
the same whole-body batch (no parts). Prints a Markdown table naming the hardware; the figures
measured on this project's machines are in docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from reid.conf.tool import option, run_tool
from reid.errors import ConfigError
from reid.memory import retain_freed_memory
from reid.models import ResNet50, count_macs, count_parameters
from reid.variants import build_variant, model_variant, model_variants

SIZES = {
    "demo": ((128, 64), (32, 64)),
    "paper": ((384, 192), (96, 192)),
}
"""Named input sizes: (whole H x W, part h x w)."""


def distinct_networks() -> list[str]:
    """The models of ``conf/model/`` whose networks differ (``aligned`` is ``baseline``'s network on other crops)."""
    names: list[str] = []
    seen: list[dict] = []
    for variant in model_variants():
        if dict(variant.net) not in seen:
            seen.append(dict(variant.net))
            names.append(variant.name)
    return names


@dataclass
class BenchRow:
    """One line of the result table."""

    model: str
    size: str
    params_m: float
    gmacs: float
    train_ips: float
    infer_ips: float


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _autocast(precision: str, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def _synchronised(step: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``step`` followed by a wait for the GPU, so that the timer measures the work and not its launch."""
    if device.type != "cuda":
        return step

    def run_and_wait() -> None:
        step()
        torch.cuda.synchronize(device)

    return run_and_wait


TIMERS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}
"""``wall``: elapsed time. ``process``: CPU seconds of this process, which other processes on a
shared machine do not inflate (meaningful with ``--threads 1``; with more threads it sums them)."""


def fastest(step: Callable[[], None], warmup: int, iters: int, timer: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of the fastest of ``iters`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(iters):
        start = timer()
        step()
        best = min(best, timer() - start)
    return best


def _loss(output: object, labels: torch.Tensor) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output, labels)
    logits = list(output.branch_logits)  # type: ignore[attr-defined]
    if output.fused_logits is not None:  # type: ignore[attr-defined]
        logits.append(output.fused_logits)  # type: ignore[attr-defined]
    # at least one branch, so the sum is a tensor
    return cast(torch.Tensor, sum(F.cross_entropy(item.float(), labels) for item in logits))


def measure(
    net: nn.Module,
    inputs: Sequence[torch.Tensor],
    num_classes: int,
    *,
    precision: str,
    warmup: int,
    iters: int,
    timer: str = "wall",
) -> tuple[float, float]:
    """(training images/s, inference images/s) of ``net`` on ``inputs`` (batch first)."""
    batch = inputs[0].shape[0]
    device = inputs[0].device
    labels = torch.randint(0, num_classes, (batch,), device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(precision, device.type):
            output = net(*inputs)
        _loss(output, labels).backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode(), _autocast(precision, device.type):
            net(*inputs)

    clock = TIMERS[timer]
    net.train()
    train_seconds = fastest(_synchronised(train_step, device), warmup, iters, clock)
    net.eval()
    infer_seconds = fastest(_synchronised(infer_step, device), warmup, iters, clock)
    return batch / train_seconds, batch / infer_seconds


def run(args: BenchOptions) -> list[BenchRow]:
    """Benchmarks every requested (model, size) pair; returns the table rows.

    ``variants``, ``threads`` and ``device`` are those :func:`bench` fills in.
    """
    assert args.variants is not None, "bench() fills in the variants"
    assert args.threads is not None and args.device is not None, "bench() fills in threads and device"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    width = {} if args.width is None else {"width": args.width}
    rows = []
    for size in args.sizes:
        whole_size, part_size = SIZES[size]
        whole = torch.randn(args.batch_size, 3, *whole_size, device=device).contiguous(memory_format=memory_format)
        parts = torch.randn(args.batch_size, 4, 3, *part_size, device=device)
        models: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], tuple[int, int] | None]] = []
        net: nn.Module
        layouts: Sequence[str | None] = args.parts_layout or [None]
        for variant in args.variants:
            for layout in layouts:
                if layout is None:
                    label, net = variant, build_variant(variant, args.num_classes, **width)
                else:
                    label = f"{variant} ({layout})"
                    net = build_variant(variant, args.num_classes, group_parts=layout == "grouped", **width)
                models.append((label, net, (whole, parts), part_size))
        if args.resnet:
            models.append(("ResNet-50", ResNet50(args.num_classes), (whole,), None))
        for label, net, inputs, macs_part_size in models:
            # Module.to takes memory_format at run time; torch's stubs leave it out of the overloads
            net = net.to(memory_format=memory_format)  # type: ignore[call-overload]
            params = count_parameters(net) / 1e6
            gmacs = count_macs(net, whole_size, macs_part_size) / 1e9
            net = net.to(device)
            if args.compile:
                net.compile()
            train_ips, infer_ips = measure(
                net,
                inputs,
                args.num_classes,
                precision=args.precision,
                warmup=args.warmup,
                iters=args.iters,
                timer=args.timer,
            )
            rows.append(BenchRow(label, size, params, gmacs, train_ips, infer_ips))
            print(f"  {label:28s} {size:6s} train {train_ips:8.1f} img/s  infer {infer_ips:8.1f} img/s")
    return rows


def format_table(rows: Sequence[BenchRow], args: BenchOptions) -> str:
    """The results as a Markdown table preceded by the hardware and settings (``bench`` fills the device)."""
    assert args.device is not None, "bench() fills in the device"
    device = torch.device(args.device)
    hardware = f"{cpu_model()}, {args.threads} thread(s)"
    if device.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(device)} (host: {hardware})"
    lines = [
        f"Hardware: {hardware}; torch {torch.__version__}{'; compiled' if args.compile else ''}; "
        f"batch {args.batch_size}; {args.precision}; "
        f"{'' if args.width is None else f'width {args.width} (ResNet-50 at its own); '}"
        f"{'channels_last' if args.channels_last else 'contiguous (NCHW)'}; "
        f"freed memory {'retained' if args.retain_freed_memory else 'returned to the kernel'}; {args.timer} time, "
        f"fastest of {args.iters} after {args.warmup} warm-up iteration(s); {args.num_classes} classes.",
        "",
        "| model | input (whole / part) | params (M) | GMACs / image | train img/s | inference img/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        (wh, ww), (ph, pw) = SIZES[row.size]
        size = f"{wh}x{ww} / {ph}x{pw}" if not row.model.startswith("ResNet") else f"{wh}x{ww}"
        numbers = f"{row.params_m:.2f} | {row.gmacs:.2f} | {row.train_ips:.1f} | {row.infer_ips:.1f}"
        lines.append(f"| {row.model} | {size} | {numbers} |")
    return "\n".join(lines)


@dataclass
class BenchOptions:
    """The options of ``reid-bench`` (``key=value``)."""

    variants: list[str] | None = option(None, "models of conf/model/ (default: each distinct network among them)")
    width: float | None = option(
        None,
        "channel width of the networks (model.net.width; default: Table 1's, 1.0; the synthetic recipe's 0.5)",
        low=0,
        low_open=True,
        high=8,
    )
    sizes: list[str] = option(["demo", "paper"], "named input sizes: demo (128x64 / 32x64), paper (384x192 / 96x192)")
    batch_size: int = option(32, "images per batch", low=1)
    threads: int | None = option(None, "torch intra-op threads (default: torch's)", low=1)
    precision: Literal["fp32", "bf16", "fp16"] = option("fp32", "fp32, or autocast to bf16 / fp16")
    device: str | None = option(None, "cpu, cuda, cuda:1... (default: cuda when there is one)")
    compile: bool = option(False, "torch.compile each network (slow first steps)")
    channels_last: bool = option(
        True, "channels_last memory format (false: contiguous NCHW; docs/benchmarks.md compares them)"
    )
    parts_layout: list[str] | None = option(None, "grouped and/or separate part branches (default: the network's)")
    timer: Literal["wall", "process"] = option("wall", "wall clock or process CPU time")
    resnet: bool = option(True, "include ResNet-50")
    num_classes: int = option(751, "identities (classifier size)", low=1)
    warmup: int = option(1, "untimed iterations first", low=0)
    iters: int = option(2, "timed iterations (the fastest is reported)", low=1)
    retain_freed_memory: bool = option(
        True, "keep freed memory in the process, as train.py does (false: glibc's default, which page-faults)"
    )


def bench(options: BenchOptions) -> int:
    """Benchmarks training and inference images/s of each network and prints the Markdown table."""
    options.variants = options.variants or distinct_networks()
    for name in options.variants:
        model_variant(name)  # an unknown model is one error line naming the models
    unknown = [size for size in options.sizes if size not in SIZES] + [
        layout for layout in options.parts_layout or [] if layout not in ("grouped", "separate")
    ]
    if unknown:
        raise ConfigError(
            [
                f"unknown size or parts layout {unknown[0]!r} (fix: sizes from {', '.join(SIZES)}, "
                "parts_layout from grouped, separate)"
            ]
        )
    if options.retain_freed_memory:
        options.retain_freed_memory = retain_freed_memory()  # False where the C library is not glibc
    options.threads = options.threads or max(1, torch.get_num_threads())
    options.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = run(options)
    print()
    print(format_table(rows, options))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench [network]`` / ``python -m reid.tools.bench [network]``."""
    return run_tool(bench, BenchOptions, "bench", argv)


if __name__ == "__main__":
    raise SystemExit(main())
