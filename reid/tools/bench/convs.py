"""Where a training step's time goes: each convolution timed alone, against the core's matrix-multiply rate.

Usage::

    reid-bench convs                               # python -m reid.tools.bench convs; intra_inter and ResNet-50
    reid-bench convs variants=[baseline,intra_inter] size=demo threads=2

For each network (the ``variants`` of ``conf/model/`` and a ResNet-50 fed the same whole-body
batch) it measures, on ``threads`` threads with the same timer:

* **the training step** (``reid-bench``'s step: forward, backward, SGD) in seconds, and its
  rate in GMAC/s: three times the forward multiply-adds of convolutions and linear layers
  (the forward product and the two of the backward pass) over the step's time;
* **every convolution alone**: one forward pass records each ``nn.Conv2d`` call (input shape and
  memory format, weight, stride, groups; the shared Conv1 once per input, with its weight
  repeated as it runs), then each distinct call is timed alone, forward and backward (the weight
  gradient, and the input's except on the images), the fastest of ``iters``; their sum is the
  convolutions' share of the step and the rest (``step - convolutions``) is everything else:
  batch norm, activations, the attention products, pooling, linear layers, the optimizer;
* **the core's matrix-multiply rate**: a float32 ``matmul_n`` x ``matmul_n`` product, the
  rate the library reaches on the plainest problem.

Then, for each network against ResNet-50: the measured training ratio, the multiply-add ratio
(the ratio if both ran at the same rate per multiply-add) and the ratio this network would reach
if each of its convolutions ran at ResNet-50's convolution rate, with everything else as
measured. The figures measured on this project's machines are in docs/benchmarks.md.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.conf.tool import option, run_tool
from reid.errors import ConfigError
from reid.memory import retain_freed_memory
from reid.models import ResNet50, count_macs
from reid.tools.bench.network import SIZES, TIMERS, cpu_model, fastest, measure
from reid.variants import build_variant, model_variant

RESNET = "ResNet-50"


@dataclass(frozen=True)
class ConvCall:
    """One convolution call of a forward pass, as it ran."""

    input_shape: tuple[int, ...]
    channels_last: bool
    weight_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    #: the backward pass computes the input's gradient too (every layer but those on the images)
    input_grad: bool = True

    @property
    def kind(self) -> str:
        """``<h>x<w> plain|grouped|depthwise``: the kernel size and how the channels are grouped."""
        in_per_group = self.weight_shape[1]
        grouping = "plain" if self.groups == 1 else "depthwise" if in_per_group == 1 else "grouped"
        return f"{self.weight_shape[2]}x{self.weight_shape[3]} {grouping}"

    def macs(self) -> int:
        """Forward multiply-adds of the call (the batch included)."""
        batch, _, height, width = self.input_shape
        out_h = (height + 2 * self.padding[0] - self.dilation[0] * (self.weight_shape[2] - 1) - 1) // self.stride[0] + 1
        out_w = (width + 2 * self.padding[1] - self.dilation[1] * (self.weight_shape[3] - 1) - 1) // self.stride[1] + 1
        per_output = self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3]
        return batch * self.weight_shape[0] * out_h * out_w * per_output


def record_convolutions(net: nn.Module, inputs: Sequence[Tensor]) -> list[ConvCall]:
    """Every ``nn.Conv2d`` call of one forward pass of ``net`` on ``inputs``, in order.

    A module called on more input channels than its weight and groups take (the shared Conv1 on
    the four stacked part crops) is recorded with its weight repeated, as it runs.
    """
    calls: list[ConvCall] = []

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        assert isinstance(module, nn.Conv2d)
        x = args[0]
        weight = tuple(module.weight.shape)
        groups = module.groups
        if x.shape[1] != weight[1] * groups:
            groups = x.shape[1] // weight[1]
            weight = (weight[0] * groups, *weight[1:])
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        calls.append(
            ConvCall(
                tuple(x.shape),
                channels_last,
                weight,
                tuple(module.stride),
                tuple(module.padding),  # type: ignore[arg-type]  # str padding is not used here
                tuple(module.dilation),
                groups,
                x.requires_grad,
            )
        )

    handles = [module.register_forward_hook(hook) for module in net.modules() if isinstance(module, nn.Conv2d)]
    try:
        net(*inputs)  # with autograd on, so that each call knows whether its input needs a gradient
    finally:
        for handle in handles:
            handle.remove()
    return calls


def time_convolution(call: ConvCall, warmup: int, iters: int, timer: Callable[[], float]) -> float:
    """Seconds of the call's forward and backward (and its input's gradient where it ran), fastest of ``iters``."""
    memory_format = torch.channels_last if call.channels_last else torch.contiguous_format
    x = torch.randn(call.input_shape).contiguous(memory_format=memory_format).requires_grad_(call.input_grad)
    weight = torch.randn(call.weight_shape).contiguous(memory_format=memory_format).requires_grad_()
    with torch.no_grad():
        grad = torch.randn_like(F.conv2d(x, weight, None, call.stride, call.padding, call.dilation, call.groups))

    def step() -> None:
        x.grad = weight.grad = None
        F.conv2d(x, weight, None, call.stride, call.padding, call.dilation, call.groups).backward(grad)

    return fastest(step, warmup, iters, timer)


def matmul_rate(n: int, warmup: int, iters: int, timer: Callable[[], float]) -> float:
    """GMAC/s of a float32 ``n x n`` by ``n x n`` matrix product on the current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def product() -> None:
        torch.mm(a, b)

    seconds = fastest(product, warmup, iters, timer)
    return n**3 / seconds / 1e9


@dataclass
class KindRow:
    """The convolutions of one kind in one network."""

    calls: int = 0
    seconds: float = 0.0
    gmac: float = 0.0  # forward multiply-adds of the batch, in G

    @property
    def rate(self) -> float:
        """GMAC/s over forward and backward (three products per multiply-add of the forward)."""
        return 3 * self.gmac / self.seconds if self.seconds > 0 else 0.0


@dataclass
class NetworkProfile:
    """One network's step and its convolutions."""

    name: str
    step_seconds: float
    step_gmac: float  # forward multiply-adds of convolutions and linear layers for the batch, in G
    kinds: dict[str, KindRow] = field(default_factory=dict)

    @property
    def conv_seconds(self) -> float:
        """The convolutions' seconds, each timed alone."""
        return sum(row.seconds for row in self.kinds.values())

    @property
    def conv_gmac(self) -> float:
        """The convolutions' forward multiply-adds of the batch, in G."""
        return sum(row.gmac for row in self.kinds.values())

    @property
    def rate(self) -> float:
        """The training step's GMAC/s (three products per forward multiply-add)."""
        return 3 * self.step_gmac / self.step_seconds


@dataclass
class ConvsOptions:
    """The options of ``reid-bench convs`` (``key=value``)."""

    variants: list[str] = option(["intra_inter"], "models of conf/model/ (ResNet-50 is always added)")
    size: str = option("paper", "paper (384x192 / 96x192) or demo (128x64 / 32x64)")
    batch_size: int = option(16, "images per batch", low=1)
    threads: int = option(1, "torch intra-op threads", low=1)
    timer: Literal["wall", "process"] = option("process", "wall clock or process CPU time")
    num_classes: int = option(751, "identities (classifier size)", low=1)
    warmup: int = option(1, "untimed iterations first", low=0)
    iters: int = option(3, "timed iterations (the fastest is kept)", low=1)
    matmul_n: int = option(2048, "size of the square matrix product that measures the core's rate", low=16)


def profile_network(name: str, net: nn.Module, inputs: Sequence[Tensor], options: ConvsOptions) -> NetworkProfile:
    """The network's training step and each of its convolutions timed alone."""
    timer = TIMERS[options.timer]
    whole_size = tuple(inputs[0].shape[-2:])
    part_size = tuple(inputs[1].shape[-2:]) if len(inputs) > 1 else None
    gmac = count_macs(net, whole_size, part_size) * options.batch_size / 1e9  # type: ignore[arg-type]
    train_ips, _ = measure(
        net,
        inputs,
        options.num_classes,
        precision="fp32",
        warmup=options.warmup,
        iters=options.iters,
        timer=options.timer,
    )
    net.train()
    profile = NetworkProfile(name, options.batch_size / train_ips, gmac)
    seconds_by_call: dict[ConvCall, float] = {}
    kinds: dict[str, KindRow] = defaultdict(KindRow)
    for call in record_convolutions(net, inputs):
        if call not in seconds_by_call:
            seconds_by_call[call] = time_convolution(call, options.warmup, options.iters, timer)
        row = kinds[call.kind]
        row.calls += 1
        row.seconds += seconds_by_call[call]
        row.gmac += call.macs() / 1e9
    profile.kinds = dict(sorted(kinds.items(), key=lambda item: -item[1].seconds))
    return profile


def format_report(profiles: Sequence[NetworkProfile], options: ConvsOptions, matmul_gmacs: float) -> str:
    """The Markdown tables: each network's step, its convolutions by kind, and the ratios to ResNet-50."""
    lines = [
        f"Hardware: {cpu_model()}, {options.threads} thread(s); torch {torch.__version__}; batch "
        f"{options.batch_size}; {options.size} size; fp32; channels_last; {options.timer} time, fastest of "
        f"{options.iters}; float32 {options.matmul_n}x{options.matmul_n} matrix product: "
        f"{matmul_gmacs:.1f} GMAC/s.",
        "",
        "| network | step s | GMAC / step (3x forward) | step GMAC/s | share of the matrix-product rate "
        "| convolutions s (alone) | convolution GMAC/s | everything else s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for profile in profiles:
        conv_rate = 3 * profile.conv_gmac / profile.conv_seconds
        lines.append(
            f"| {profile.name} | {profile.step_seconds:.3f} | {3 * profile.step_gmac:.1f} | {profile.rate:.1f} "
            f"| {profile.rate / matmul_gmacs:.0%} | {profile.conv_seconds:.3f} | {conv_rate:.1f} "
            f"| {profile.step_seconds - profile.conv_seconds:.3f} |"
        )
    lines += [
        "",
        "| network | convolution kind | calls | seconds | GMAC (forward) | GMAC/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for profile in profiles:
        for kind, row in profile.kinds.items():
            lines.append(
                f"| {profile.name} | {kind} | {row.calls} | {row.seconds:.3f} | {row.gmac:.2f} | {row.rate:.1f} |"
            )
    resnet = next(profile for profile in profiles if profile.name == RESNET)
    resnet_conv_rate = 3 * resnet.conv_gmac / resnet.conv_seconds
    lines += [
        "",
        "| network | training ratio to ResNet-50 | multiply-add ratio | ratio with every convolution at "
        "ResNet-50's convolution rate |",
        "|---|---:|---:|---:|",
    ]
    for profile in profiles:
        if profile is resnet:
            continue
        at_resnet_rate = 3 * profile.conv_gmac / resnet_conv_rate + profile.step_seconds - profile.conv_seconds
        lines.append(
            f"| {profile.name} | {resnet.step_seconds / profile.step_seconds:.2f}x "
            f"| {resnet.step_gmac / profile.step_gmac:.2f}x | {resnet.step_seconds / at_resnet_rate:.2f}x |"
        )
    return "\n".join(lines)


def convs(options: ConvsOptions) -> int:
    """Times each network's training step and each of its convolutions alone; prints the tables."""
    for name in options.variants:
        model_variant(name)  # an unknown model is one error line naming the models
    if options.size not in SIZES:
        raise ConfigError([f"unknown size {options.size!r} (fix: size= one of {', '.join(SIZES)})"])
    retain_freed_memory()  # as train.py: without it page faults dominate the larger network's step
    torch.set_num_threads(options.threads)
    torch.manual_seed(0)
    whole_size, part_size = SIZES[options.size]
    whole = torch.randn(options.batch_size, 3, *whole_size).contiguous(memory_format=torch.channels_last)
    parts = torch.randn(options.batch_size, 4, 3, *part_size)
    networks: list[tuple[str, nn.Module, tuple[Tensor, ...]]] = [
        (name, build_variant(name, options.num_classes), (whole, parts)) for name in options.variants
    ]
    networks.append((RESNET, ResNet50(options.num_classes), (whole,)))
    profiles = []
    for name, net, inputs in networks:
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        profiles.append(profile_network(name, net, inputs, options))
        print(f"  {name}: step {profiles[-1].step_seconds:.3f} s, convolutions {profiles[-1].conv_seconds:.3f} s")
    rate = matmul_rate(options.matmul_n, options.warmup, options.iters, TIMERS[options.timer])
    print()
    print(format_report(profiles, options, rate))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``reid-bench convs`` / ``python -m reid.tools.bench convs``."""
    return run_tool(convs, ConvsOptions, "bench convs", argv)


if __name__ == "__main__":
    raise SystemExit(main())
