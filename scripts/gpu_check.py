"""The one-command GPU check (`make gpu-check`): paper-width training in bf16, compiled, DDP/NCCL, bench,
loader; one JSON.

Run on a CUDA machine from the repository root; it installs nothing (``make gpu-wheels`` fetches,
on a machine with a package registry, what a bare GPU image lacks, and ``make gpu-check``
installs those wheels offline first). Each step runs in its own process with a time limit, and
the whole check stays within ``--budget-s`` (5 minutes by default):

1. ``train_bf16``: a short synthetic training at the paper's width and sizes, ``trainer=gpu``
   (bf16-mixed): wall time, training images/s (``reid.lit.callbacks.TrainThroughput``), the
   final rank-1/mAP and attention health, peak GPU memory; ``train_bf16_device``: the same with
   ``data.pipeline=device`` (the crops cut on the GPU);
2. ``ddp_nccl``: one epoch with ``trainer=ddp`` on one GPU (the NCCL process group's path);
3. ``train_compiled``: step 1 with ``model.compile=true`` (each training step gets a share of
   the budget, so a long compile cannot starve the steps after it);
4. ``bench``: ``reid-bench device=cuda`` (bf16) for the full model and ResNet-50, at batch 64 and
   256 (how much of the step is kernel-launch overhead);
5. ``loader``: images/s the training loader delivers with 8 and 16 workers on each pipeline,
   against the images/s the GPU consumed in step 1: whether the loader keeps up;
6. ``step``: ``reid-bench step`` on each pipeline (paper size, batch 64, 8 workers) and the GPU's
   busy share of the step: those images/s over the network's own (``reid-bench``, same batch).

Figures go to one JSON file (``--out``), written atomically, and a summary is printed.
Without CUDA it stops with one ``error:`` line (exit status 2). ``--cpu-smoke`` runs every step
on the CPU at toy sizes, to test this script where there is no GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# what the toy (--cpu-smoke) runs change: a tiny synthetic set and network on the CPU
SMOKE_OVERRIDES = [
    "data.options.num_train_ids=6",
    "data.options.num_test_ids=4",
    "data.options.images_per_train_id=4",
    "data.options.images_per_test_id=4",
    "data.options.num_distractors=3",
    "data.options.num_junk=2",
    "data.whole_size=[64,32]",
    "data.part_size=[16,32]",
    "data.batch_size=8",
    "data.eval_batch_size=16",
    "model.net.width=0.25",
    "trainer.accelerator=cpu",
]

# reid-bench step on the GPU: bf16 like the network benchmark it is compared with
GPU_STEP = ["trainer=gpu", "trainer.precision=bf16-mixed"]


def _train_command(data_dir: Path, run_dir: Path, epochs: int, smoke: bool, *extra: str) -> list[str]:
    """A train.py command line at the paper's width and sizes (toy sizes with ``smoke``)."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "model.net.width=1.0",
        "data.whole_size=[384,192]",
        "data.part_size=[96,192]",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={epochs}",
        "logger=csv",
        "callbacks=[model_checkpoint]",
        "+callbacks.throughput._target_=reid.lit.callbacks.TrainThroughput",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    return command + (SMOKE_OVERRIDES if smoke else [])


def _run_step(command: list[str], timeout: float) -> dict[str, Any]:
    """Runs ``command``; its status, wall time and (on failure) the end of its output."""
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "wall_s": round(time.perf_counter() - started, 1),
            "error": f"timed out after {timeout:.0f} s",
        }
    figures: dict[str, Any] = {"ok": result.returncode == 0, "wall_s": round(time.perf_counter() - started, 1)}
    if result.returncode != 0:
        figures["error"] = (result.stderr or result.stdout)[-2000:]
    return figures


def _training_figures(run_dir: Path) -> dict[str, Any]:
    """Final metrics, attention health and the last epoch's images/s of a train.py run folder."""
    figures: dict[str, Any] = {}
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        figures.update({k: metrics[k] for k in ("rank1", "mAP") if k in metrics})
        summary = metrics.get("attention", {}).get("intra_mean", {})
        if summary:
            figures["attention_saturated"] = summary.get("saturated")
            figures["attention_spatial_std"] = summary.get("spatial_std")
    for table in run_dir.glob("csv/**/metrics.csv"):
        with open(table) as handle:
            values = [row["train/images_per_s"] for row in csv.DictReader(handle) if row.get("train/images_per_s")]
        if values:
            figures["train_images_per_s"] = round(float(values[-1]), 1)
    return figures


def _loader_rates(
    workers: Sequence[int], smoke: bool, data_dir: Path, batches: int, pipeline: str = "cpu"
) -> dict[str, float]:
    """Training images/s the loader delivers (no model) with each number of workers."""
    from reid.conf import compose_config
    from reid.tasks import build_datamodule

    rates = {}
    for count in workers:
        overrides = [
            f"paths.data_dir={data_dir}",
            f"data.num_workers={count}",
            f"data.pipeline={pipeline}",
            "data.whole_size=[384,192]",
            "data.part_size=[96,192]",
            "logger=none",
            "callbacks=none",
        ]
        cfg = compose_config(overrides + (SMOKE_OVERRIDES if smoke else []))
        datamodule = build_datamodule(cfg)
        loader = datamodule.train_dataloader()
        iterator = iter(loader)
        next(iterator)  # workers started and the first batch out of the way
        started, images = time.perf_counter(), 0
        for _ in range(min(batches, len(loader) - 1)):
            images += int(next(iterator)["pid"].shape[0])
        rates[str(count)] = round(images / max(time.perf_counter() - started, 1e-9), 1)
        del iterator, loader
    return rates


def _write_json(figures: dict[str, Any], path: Path) -> None:
    """Writes ``figures`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.py", description=" ".join(__doc__.split("\n\n")[0].split())
    )
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check" / "gpu_check.json")
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / "data", help="where the synthetic set is (made if missing)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training step")
    parser.add_argument("--budget-s", type=float, default=300.0, help="wall-time limit of the whole check")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16], help="loader workers to measure")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU at toy sizes (tests)")
    parser.add_argument("--cuda-only", action="store_true", help="only check that CUDA is there (exit status 2 if not)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the check; 0 when every step passed, 1 when one failed, 2 without CUDA."""
    args = build_parser().parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print(
            f"error: make gpu-check needs a CUDA GPU, and torch {torch.__version__} sees none here "
            "(torch.cuda.is_available() is False); run it on a GPU machine",
            file=sys.stderr,
        )
        return 2
    if args.cuda_only:
        return 0
    smoke = args.cpu_smoke
    deadline = time.perf_counter() + args.budget_s
    device = "cpu" if smoke else "cuda"
    figures: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": "cpu (smoke test)" if smoke else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host_cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "smoke": smoke,
        "steps": {},
    }
    steps = figures["steps"]
    gpu = [] if smoke else ["trainer=gpu"]
    workers = [] if smoke else ["data.num_workers=8"]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        runs = Path(scratch)
        # (name, overrides, epochs, share of the budget): torch.compile of the five branches can
        # take minutes, so it runs last and no step may eat the time of those after it
        plan = [
            ("train_bf16", [*gpu, *workers, "trainer.precision=bf16-mixed"], args.epochs, 0.2),
            (
                "train_bf16_device",
                [*gpu, *workers, "trainer.precision=bf16-mixed", "data.pipeline=device"],
                args.epochs,
                0.15,
            ),
            (
                "ddp_nccl",
                [
                    "trainer=ddp",
                    "trainer.devices=1",
                    *(["trainer.accelerator=gpu"] if not smoke else []),
                    *workers,
                    "trainer.precision=bf16-mixed",
                ],
                1,
                0.15,
            ),
            # on the CPU the smoke test compiles with the eager backend: the compile path, not inductor's minutes
            (
                "train_compiled",
                [
                    *gpu,
                    *workers,
                    "trainer.precision=bf16-mixed",
                    "model.compile=true",
                    *(["model.compile_options.backend=eager"] if smoke else []),
                ],
                args.epochs,
                0.25,
            ),
        ]
        for name, extra, epochs, share in plan:
            left = deadline - time.perf_counter()
            limit = min(left - 60, share * args.budget_s) if not smoke else left - 30
            print(f"[gpu-check] {name} ({left:.0f} s left, {limit:.0f} s for this step)", flush=True)
            run_dir = runs / name
            result = _run_step(_train_command(args.data_dir, run_dir, epochs, smoke, *extra), timeout=limit)
            result.update(_training_figures(run_dir))
            steps[name] = result
            _write_json(figures, args.out)

        print(f"[gpu-check] bench ({deadline - time.perf_counter():.0f} s left)", flush=True)
        try:
            from dataclasses import asdict

            from reid.tools import bench

            rows = []
            # the second, larger batch says whether the narrow branches' many small kernels (launch
            # overhead) or the arithmetic set the pace: only the former gains much from it
            for batch_size in (8, 16) if smoke else (64, 256):
                bench_args = bench.BenchOptions(
                    device=device,
                    sizes=["demo" if smoke else "paper"],
                    variants=["intra_inter"],
                    precision="bf16",
                    batch_size=batch_size,
                    warmup=1 if smoke else 3,
                    iters=1 if smoke else 10,
                    threads=max(1, torch.get_num_threads()),
                )
                rows += [{**asdict(row), "batch_size": batch_size} for row in bench.run(bench_args)]
            steps["bench"] = {"ok": True, "rows": rows}
        except Exception as err:  # a broken step is a figure of the check, not the end of it
            steps["bench"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        _write_json(figures, args.out)

        print(f"[gpu-check] loader ({deadline - time.perf_counter():.0f} s left)", flush=True)
        try:
            counts = [1, 2] if smoke else list(args.workers)
            consumed = steps["train_bf16"].get("train_images_per_s")
            steps["loader"] = {"ok": True, "consumed_images_per_s": consumed}
            for pipeline in ("cpu", "device"):
                delivered = _loader_rates(counts, smoke, args.data_dir, 2 if smoke else 40, pipeline)
                steps["loader"][pipeline] = {
                    "delivered_images_per_s": delivered,
                    "keeps_up": {k: (v >= consumed if consumed else None) for k, v in delivered.items()},
                }
        except Exception as err:
            steps["loader"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        _write_json(figures, args.out)

        print(f"[gpu-check] step ({deadline - time.perf_counter():.0f} s left)", flush=True)
        try:
            from reid.tools.bench.step import StepOptions, measure_steps

            step_options = StepOptions(
                steps=2 if smoke else 20,
                warmup=1 if smoke else 5,
                batch_size=8 if smoke else 64,
                workers=1 if smoke else 8,
                size="demo" if smoke else "paper",
                overrides=[
                    f"paths.data_dir={args.data_dir}",
                    *(SMOKE_OVERRIDES if smoke else ["trainer=gpu", "trainer.precision=bf16-mixed"]),
                ],
            )
            network = next(
                (
                    r["train_ips"]
                    for r in steps.get("bench", {}).get("rows", [])
                    if r.get("model") == "intra_inter" and r.get("batch_size") == step_options.batch_size
                ),
                None,
            )
            steps["step"] = {"ok": True, "network_images_per_s": network}
            for pipeline in ("cpu", "device"):
                rate = round(measure_steps(step_options, pipeline), 1)
                share = round(rate / network, 3) if network else None
                steps["step"][pipeline] = {"images_per_s": rate, "busy_share": share}
        except Exception as err:
            steps["step"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    if not smoke:
        figures["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    figures["ok"] = all(step.get("ok") for step in steps.values())
    _write_json(figures, args.out)
    for name, step in steps.items():
        shown = {k: v for k, v in step.items() if k not in ("error", "rows")}
        print(f"[gpu-check] {name}: {json.dumps(shown)}" + (f"\n    {step['error'][-400:]}" if "error" in step else ""))
    print(f"[gpu-check] figures written to {args.out}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
