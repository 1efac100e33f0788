"""`python -m reid.tools.export`: ONNX export of a checkpoint's feature extractor, checked in onnxruntime."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import reid.tools.export
from reid.tasks import build_model
from reid.tools.export import ExportOptions, main, parse_options

ort = pytest.importorskip("onnxruntime", reason='the export tests need pip install -e ".[export]"')

NUM_CLASSES = 6
WHOLE, PART = (64, 32), (16, 32)


def save_tiny_checkpoint(cfg, path: Path) -> Path:
    """A checkpoint laid out as train.py writes it, with BatchNorm statistics of random batches.

    Fresh BatchNorm statistics (mean 0, var 1) let activations grow to features in the hundreds,
    where float32 rounding alone exceeds 1e-4; a trained network's statistics keep them small.
    """
    torch.manual_seed(0)
    module = build_model(cfg, NUM_CLASSES, "market")
    for bn in module.net.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.momentum = None  # cumulative average over the calibration batches
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randn(8, 3, *WHOLE), torch.randn(8, 4, 3, *PART))
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"num_classes": NUM_CLASSES},
            "reid_config": OmegaConf.to_container(cfg, resolve=True),
        },
        path,
    )
    return path


# the baseline's network (no attention, a subset of intra_inter's operations) in CI
@pytest.mark.parametrize("model", ["intra_inter", pytest.param("baseline", marks=pytest.mark.slow)])
def test_exported_feature_matches_pytorch_at_two_batch_sizes(make_cfg, tmp_path, model, capsys):
    cfg = make_cfg(f"model={model}")
    ckpt = save_tiny_checkpoint(cfg, tmp_path / "last.ckpt")

    assert main([f"ckpt_path={ckpt}", "format=onnx"]) == 0
    printed = capsys.readouterr().out
    onnx_path = tmp_path / "last.onnx"  # default: next to the checkpoint
    assert f"wrote {onnx_path}" in printed and ": ok" in printed

    # independent of the module's own check: rebuild the network from the checkpoint, compare here
    from hydra.utils import instantiate

    stored = torch.load(ckpt, weights_only=True)
    net = instantiate(OmegaConf.create(stored["reid_config"]["model"]["net"]))(num_classes=NUM_CLASSES)
    net.load_state_dict({k[4:]: v for k, v in stored["state_dict"].items() if k.startswith("net.")})
    net.eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["whole", "parts"]
    assert [o.name for o in session.get_outputs()] == ["feature"]
    exact = copy.deepcopy(net).double()
    generator = torch.Generator().manual_seed(7)
    for batch in (1, 3):
        whole = torch.randn(batch, 3, *WHOLE, generator=generator)
        parts = torch.randn(batch, 4, 3, *PART, generator=generator)
        with torch.no_grad():
            expected = net(whole, parts).feature.numpy()
            reference = exact(whole.double(), parts.double()).feature.numpy()
        (got,) = session.run(["feature"], {"whole": whole.numpy(), "parts": parts.numpy()})
        assert got.shape == (batch, net.feature_dim)
        scale = max(1.0, np.abs(expected).max())
        assert np.abs(expected).max() > 1e-2  # not a trivially zero feature
        # PyTorch's float32 result is itself up to ~2e-4 * scale from the exact one here, so
        # "< 1e-4" cannot hold for every batch: ask for reid.tools.export's default bound, and that
        # onnxruntime is as close to the float64 result as PyTorch's float32 run is
        assert np.abs(got - expected).max() < 1e-3 * scale
        onnx_error = np.abs(got - reference).max()
        torch_error = np.abs(expected - reference).max()
        assert onnx_error <= 2 * torch_error + 1e-5 * scale, (onnx_error, torch_error)

    meta = json.loads((tmp_path / "last.onnx.json").read_text())
    assert meta["inputs"]["whole"]["size"] == list(WHOLE) and meta["inputs"]["parts"]["size"] == list(PART)
    assert meta["feature_dim"] == net.feature_dim == meta["output"]["shape"][1]
    assert meta["normalization"]["method"] == cfg.data.augment.normalize
    assert meta["regions"]["kind"] == ("strips" if model == "baseline" else "pose")
    assert "reid.data.crops.crop_regions" in meta["regions"]["note"]
    assert meta["check"]["max_abs_diff"] < 1e-3 * max(1.0, meta["check"]["max_abs_feature"])
    assert meta["check"]["passed"] is True and meta["check"]["batches"] == [1, 3]


class _OffByOnePercent(torch.nn.Module):
    """A deliberately wrong export: the right feature times 1.01."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, whole: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        return self.model(whole, parts) * 1.01


def test_a_wrong_export_fails_the_check_and_out_is_honoured(make_cfg, tmp_path, capsys, monkeypatch):
    ckpt = save_tiny_checkpoint(make_cfg("model=baseline"), tmp_path / "run.ckpt")
    out = tmp_path / "deploy" / "reid.onnx"
    real_export = reid.tools.export._export_onnx
    monkeypatch.setattr(
        reid.tools.export, "_export_onnx", lambda model, *args: real_export(_OffByOnePercent(model).eval(), *args)
    )
    assert main([f"ckpt_path={ckpt}", f"out={out}", "batch=1"]) == 1
    captured = capsys.readouterr()
    assert out.is_file() and Path(f"{out}.json").is_file()
    assert "FAILED" in captured.out and "vs float64" in captured.out and "tolerance=0.001" in captured.err
    check = json.loads(Path(f"{out}.json").read_text())["check"]
    assert check["passed"] is False and check["batches"] == [1, 2]
    for batch in check["per_batch"]:  # the float64 run blames the export, not rounding
        assert batch["onnx_error"] > 100 * batch["torch_error"]


def test_a_tolerance_below_rounding_falls_back_to_the_float64_comparison(make_cfg, tmp_path, capsys):
    ckpt = save_tiny_checkpoint(make_cfg("model=baseline"), tmp_path / "run.ckpt")
    main([f"ckpt_path={ckpt}", "batch=1", "tolerance=1e-30"])
    assert "vs float64" in capsys.readouterr().out
    check = json.loads((tmp_path / "run.onnx.json").read_text())["check"]
    for batch in check["per_batch"]:
        scale = max(1.0, batch["max_abs_feature"])
        assert 0 < batch["torch_error"] < 1e-3 * scale and 0 < batch["onnx_error"] < 1e-3 * scale


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_errors_are_one_line(make_cfg, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.ckpt"
    assert main([f"ckpt_path={missing}"]) == 2
    assert "checkpoint not found" in _error_line(capsys)

    assert main([]) == 2
    assert "ckpt_path is required" in _error_line(capsys)

    assert main([f"ckpt_path={missing}", "format=tflite"]) == 2
    assert "format=tflite is not supported" in _error_line(capsys)

    assert main([f"ckpt_path={missing}", "opset=seventeen"]) == 2
    assert "config key 'opset': expected int or null, got 'seventeen'" in _error_line(capsys)

    assert main([f"ckpt_path={missing}", "colour=red"]) == 2
    assert "unknown config key 'colour'" in _error_line(capsys)

    no_config = tmp_path / "weights_only.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 2}}, no_config)
    assert main([f"ckpt_path={no_config}"]) == 2
    assert "no reid_config" in _error_line(capsys)

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    ckpt = tmp_path / "any.ckpt"
    ckpt.write_bytes(b"")
    assert main([f"ckpt_path={ckpt}"]) == 2
    line = _error_line(capsys)
    assert "onnxruntime is not installed" in line and 'pip install -e ".[export]"' in line


def test_parse_options_types():
    options = parse_options(["ckpt_path=a.ckpt", "check=false", "batch=4", "tolerance=1e-3", "out=x.onnx"])
    assert options == ExportOptions(ckpt_path="a.ckpt", check=False, batch=4, tolerance=1e-3, out="x.onnx")


def test_a_read_only_out_folder_is_one_line_naming_it_and_the_fix(make_cfg, tmp_path, capsys, monkeypatch):
    import builtins
    import os

    ckpt = save_tiny_checkpoint(make_cfg("model=baseline"), tmp_path / "run.ckpt")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: refuse what the kernel would refuse anyone else
        real_os_open, real_open = os.open, builtins.open

        def refused(path) -> bool:
            return Path(os.fspath(path)).parent == folder

        def os_open(path, flags, *args, **kwargs):
            if refused(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_os_open(path, flags, *args, **kwargs)

        def open_(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and refused(file) and set(mode) & set("wax+"):
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)
    try:
        status = main([f"ckpt_path={ckpt}", f"out={folder / 'model.onnx'}", "check=false"])
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)
    assert status == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: out={folder / 'model.onnx'}: cannot write {folder} (Permission denied); ")
    assert "pass out=<a file in a folder you can write>" in line and f"or make {folder} writable" in line
    assert list(folder.iterdir()) == []
