"""Throughput benchmark: training and inference images/s of the ablation networks and of a ResNet-50.

Usage::

    python -m reid.bench                          # defaults: every model of conf/model/, demo + paper sizes
    python -m reid.bench --sizes demo --variants baseline intra_inter --batch-size 32
    python -m reid.bench --parts-layout grouped separate --sizes demo   # grouped vs separate parts
    python -m reid.bench --precision bf16 --no-channels-last

Training = forward + backward + SGD step (momentum 0.9) with cross-entropy on every logit
(the five branch logits, plus the fused logits for fc / inter); inference = eval-mode forward
under ``torch.inference_mode``. Each measurement runs ``--warmup`` untimed iterations, then
``--iters`` timed ones, and reports the fastest (the machine may be shared). ResNet-50 is fed
the same whole-body batch (no parts). Prints a Markdown table naming the hardware.

The figures measured on this project's machines are in the README's benchmark section.
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

from reid.models import ResNet50, count_macs, count_parameters
from reid.variants import build_variant, model_names, model_variants

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
    parser.add_argument("--variants", nargs="+", default=None, choices=model_names(),
                        help="models of conf/model/ (default: each distinct network among them)")
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
    args.variants = args.variants or distinct_networks()
    if args.batch_size < 1 or args.threads < 1 or args.iters < 1 or args.warmup < 0:
        raise SystemExit("--batch-size, --threads and --iters must be >= 1 and --warmup >= 0")
    rows = run(args)
    print()
    print(format_table(rows, args))


if __name__ == "__main__":
    main()
