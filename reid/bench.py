"""Throughput benchmark: training and inference images/s of the ablation networks and of a ResNet-50.

Usage::

    python -m reid.bench                          # defaults: all variants, demo + paper sizes
    python -m reid.bench --sizes demo --variants baseline intra_inter --batch-size 32
    python -m reid.bench --parts-layout grouped separate --sizes demo   # grouped vs separate parts
    python -m reid.bench --precision bf16 --no-channels-last

Training = forward + backward + SGD step (momentum 0.9) with cross-entropy on every logit
(the five branch logits, plus the fused logits for fc / inter); inference = eval-mode forward
under ``torch.inference_mode``. Each measurement runs ``--warmup`` untimed iterations, then
``--iters`` timed ones, and reports the fastest (the machine may be shared). ResNet-50 is fed
the same whole-body batch (no parts). Prints a Markdown table naming the hardware.

Measured 2026-11-25 on "Intel(R) Xeon(R) Processor" (2 cores with AVX-512, shared with other
jobs), torch 2.13.0+cpu, batch 32, fp32, channels_last, 751 classes, images/s (train / infer):

====================  =====  =======  ==============  ==============  ==============
model                 M par  GMACs    demo, 2 thr     paper, 2 thr    paper, 1 thr*
====================  =====  =======  ==============  ==============  ==============
baseline              7.85   2.05     91.8 / 364.8    10.6 / 42.4     6.9 / 24.1
intra                 10.52  2.56     60.6 / 236.5                    4.7 / 16.7
inter                 8.43   2.06     91.6 / 361.4                    6.9 / 24.1
intra_inter           11.10  2.56     60.9 / 233.7    8.2 / 31.4      4.1 / 16.3
fc                    9.02   2.06     95.6 / 335.7                    6.7 / 23.5
ResNet-50             25.05  6.01     41.0 / 140.0    2.7 / 14.2      2.0 / 8.0
====================  =====  =======  ==============  ==============  ==============

GMACs at the paper size (demo: 0.23 base, 0.29 with intra-attention, ResNet-50 0.67).
demo = 128x64 / 32x64, paper = 384x192 / 96x192; grouped part branches (the default).
``*`` separate part branches, ``--threads 1 --timer process``. Paper-size runs with 2 threads
swing by 3-10x when other jobs load the machine (OpenMP threads wait for each other): use
``--threads 1 --timer process`` for comparisons there. bf16 autocast is slower on this CPU
(no AMX): demo baseline 69.6 / 248.9, intra_inter 46.0 / 157.7. Grouped against separate part
branches (2 threads, training): demo baseline 89-96 vs 88-91, intra_inter 65-67 vs 54-55;
paper baseline 10.6 vs 12.5, intra_inter 8.2 vs 9.0.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reid.models import VARIANTS, ResNet50, build_variant, count_macs, count_parameters

SIZES = {
    "demo": ((128, 64), (32, 64)),
    "paper": ((384, 192), (96, 192)),
}
"""Named input sizes: (whole H x W, part h x w)."""

DEFAULT_VARIANTS = ("baseline", "intra", "inter", "intra_inter", "fc")


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


def _fastest(
    step: Callable[[], None], warmup: int, iters: int, timer: Callable[[], float] = time.perf_counter
) -> float:
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
    return sum(F.cross_entropy(item.float(), labels) for item in logits)


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
    train_seconds = _fastest(_synchronised(train_step, device), warmup, iters, clock)
    net.eval()
    infer_seconds = _fastest(_synchronised(infer_step, device), warmup, iters, clock)
    return batch / train_seconds, batch / infer_seconds


def run(args: argparse.Namespace) -> list[BenchRow]:
    """Benchmarks every requested (model, size) pair; returns the table rows."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for size in args.sizes:
        whole_size, part_size = SIZES[size]
        whole = torch.randn(args.batch_size, 3, *whole_size, device=device).contiguous(memory_format=memory_format)
        parts = torch.randn(args.batch_size, 4, 3, *part_size, device=device)
        models: list[tuple[str, nn.Module, tuple[torch.Tensor, ...], tuple[int, int] | None]] = []
        for variant in args.variants:
            for layout in args.parts_layout or [None]:
                if layout is None:
                    label, net = variant, build_variant(variant, args.num_classes)
                else:
                    label = f"{variant} ({layout})"
                    net = build_variant(variant, args.num_classes, group_parts=layout == "grouped")
                models.append((label, net, (whole, parts), part_size))
        if args.resnet:
            models.append(("ResNet-50", ResNet50(args.num_classes), (whole,), None))
        for label, net, inputs, macs_part_size in models:
            net = net.to(memory_format=memory_format)
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


def format_table(rows: Sequence[BenchRow], args: argparse.Namespace) -> str:
    """The results as a Markdown table preceded by the hardware and settings."""
    device = torch.device(args.device)
    hardware = f"{cpu_model()}, {args.threads} thread(s)"
    if device.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(device)} (host: {hardware})"
    lines = [
        f"Hardware: {hardware}; torch {torch.__version__}{'; compiled' if args.compile else ''}; "
        f"batch {args.batch_size}; {args.precision}; "
        f"{'channels_last' if args.channels_last else 'contiguous (NCHW)'}; {args.timer} time, "
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


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m reid.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=sorted(VARIANTS))
    parser.add_argument("--sizes", nargs="+", default=["demo", "paper"], choices=sorted(SIZES))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1...")
    parser.add_argument("--compile", action="store_true", help="torch.compile each network (slow first steps)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--parts-layout", nargs="+", choices=("grouped", "separate"), default=None,
        help="part branches as one grouped branch and/or four separate ones (default: the network's default)",
    )
    parser.add_argument("--timer", choices=sorted(TIMERS), default="wall", help="wall clock or process CPU time")
    parser.add_argument("--resnet", action=argparse.BooleanOptionalAction, default=True, help="include ResNet-50")
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the benchmark and prints the Markdown table."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or args.threads < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit("--batch-size, --threads and --iters must be >= 1 and --warmup >= 0")
    rows = run(args)
    print()
    print(format_table(rows, args))


if __name__ == "__main__":
    main()
