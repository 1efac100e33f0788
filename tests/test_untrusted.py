"""Nothing runs from a checkpoint: a stored config that names code is refused at every entry point, in one line."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES

import reid.tasks as runner
from reid.checkpoints import CONFIG_KEY, load_checkpoint
from reid.inference import FeatureExtractor
from reid.lit.module import ReIDModule
from reid.tools.export import main as export_main
from reid.tools.search import main as search_main
from reid.trusted import TRUST_ENV, UntrustedConfigError, check_stored_config

_EVAL_OVERRIDES = [o for o in TINY_OVERRIDES if not o.startswith(("callbacks=", "model.", "trainer.enable_model"))]


class _CodePayload:
    """Unpickling it runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _saved(payload: object) -> bytes:
    """``payload`` as ``torch.save`` writes it: what ``torch.load(weights_only=False)`` unpickles."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _hostile(trained_ckpt: Path, folder: Path, where: str = "model.net") -> tuple[Path, Path, Path]:
    """The trained checkpoint with a payload planted at ``where`` in its stored config.

    Two payloads in one file, as a hostile round built them: ``torch.load`` of pickle bytes (a
    marker file appears if it runs) and ``builtins.open(<victim>, "w")`` (the victim is emptied).
    Both are plain data, so the archive's CRCs and ``torch.load(weights_only=True)`` pass.
    """
    marker, victim = folder / "payload_ran", folder / "victim.txt"
    victim.write_text("precious\n")
    checkpoint = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    pickled = {
        "_target_": "torch.load",
        "weights_only": False,
        "f": {"_target_": "io.BytesIO", "_args_": [_saved(_CodePayload(marker))]},
    }
    opener = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    node = checkpoint[CONFIG_KEY]
    *parents, last = where.split(".")
    for key in parents:
        node = node[key]
    if last == "net":  # the network and the scheduler: instantiate builds both before the module
        node[last] = pickled
        checkpoint[CONFIG_KEY]["model"]["scheduler"] = opener
    else:
        node[last] = {"payload": pickled, "victim": opener}
    path = folder / "hostile.ckpt"
    torch.save(checkpoint, path)
    return path, marker, victim


def _nothing_ran(marker: Path, victim: Path) -> None:
    assert not marker.exists(), "the pickle payload ran"
    assert victim.read_text() == "precious\n", "the victim file was opened for writing"


def _one_error_line(err: str, *names: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err


@pytest.fixture
def hostile(trained, tmp_path):
    return _hostile(trained[0], tmp_path)


def test_load_checkpoint_refuses_a_stored_config_that_names_code(hostile):
    path, marker, victim = hostile
    with pytest.raises(
        UntrustedConfigError, match=r"hostile\.ckpt: refusing the stored config key 'model\.net\._target_'"
    ):
        load_checkpoint(path)
    with pytest.raises(UntrustedConfigError):
        ReIDModule.load_from_checkpoint(path)
    _nothing_ran(marker, victim)


def test_from_checkpoint_builds_from_data_even_when_handed_an_unchecked_dict(hostile):
    path, marker, victim = hostile
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # past load_checkpoint's check
    with pytest.raises(UntrustedConfigError, match="model.net._target_"):
        ReIDModule.from_checkpoint(checkpoint, path)
    _nothing_ran(marker, victim)


def test_evaluate_refuses_it_in_one_line(hostile, make_cfg, capsys):
    path, marker, victim = hostile
    with pytest.raises(SystemExit) as stopped:
        runner.run_cli(
            runner.evaluate, make_cfg(f"ckpt_path={path}", *_EVAL_OVERRIDES, config_name="evaluate", tiny=False)
        )
    assert stopped.value.code == 2
    _one_error_line(capsys.readouterr().err, str(path), "model.net._target_")
    _nothing_ran(marker, victim)


def test_feature_extractor_refuses_it(hostile):
    path, marker, victim = hostile
    with pytest.raises(UntrustedConfigError, match="model.net._target_"):
        FeatureExtractor(path, device="cpu", pose_estimator="none")
    _nothing_ran(marker, victim)


def test_search_and_export_refuse_it_in_one_line(hostile, trained, tmp_path, capsys):
    path, marker, victim = hostile
    _, datamodule, _ = trained
    query = datamodule.eval_set.records[0].image_path
    gallery = Path(datamodule.eval_set.records[-1].image_path).parent
    assert search_main([f"ckpt_path={path}", query, f"gallery={gallery}", f"out={tmp_path / 'search'}"]) == 2
    _one_error_line(capsys.readouterr().err, "model.net._target_")
    assert export_main([f"ckpt_path={path}", f"out={tmp_path / 'export'}"]) == 2
    _one_error_line(capsys.readouterr().err, "model.net._target_")
    _nothing_ran(marker, victim)


def test_train_refuses_it_as_a_resume_and_as_pretrained_weights(hostile, make_cfg, capsys):
    path, marker, victim = hostile
    for override in (f"ckpt_path={path}", f"model.pretrained={path}"):
        with pytest.raises(SystemExit) as stopped:
            runner.run_cli(runner.train, make_cfg(override, "model=intra_inter", "trainer.max_epochs=1"))
        assert stopped.value.code == 2, override
        _one_error_line(capsys.readouterr().err, str(path), "model.net._target_")
    _nothing_ran(marker, victim)


@pytest.mark.parametrize("where", ["model.optimizer", "model.scheduler", "data.augment"])
def test_a_payload_anywhere_in_the_built_sections_is_refused(trained, tmp_path, where):
    path, marker, victim = _hostile(trained[0], tmp_path, where)
    with pytest.raises(UntrustedConfigError, match=f"'{where}.payload._target_'"):
        load_checkpoint(path)
    _nothing_ran(marker, victim)


def test_what_train_writes_passes_and_only_its_own_kinds_of_target_do(trained, monkeypatch):
    stored = torch.load(trained[0], map_location="cpu", weights_only=True)[CONFIG_KEY]
    check_stored_config(stored, "last.ckpt")  # the project's own checkpoint
    cases = {
        ("model", "optimizer", "_target_"): "torch.optim.Adam",  # another torch optimiser: fine
        ("model", "scheduler", "_target_"): "torch.optim.lr_scheduler.StepLR",
    }
    for (a, b, c), value in cases.items():
        stored[a][b][c] = value
    check_stored_config(stored, "last.ckpt")
    refused = {
        "torch.optim.Optimizer": ("model", "optimizer"),  # the base class is not an optimiser
        "torch.optim.lr_scheduler.StepLR": ("model", "optimizer"),  # a scheduler where the optimiser goes
        "torch.load": ("model", "scheduler"),
        "os.system": ("model", "net"),
        "reid.files.atomic_write": ("data",),  # the project's own code, but not a data module
    }
    for value, keys in refused.items():
        node = dict(stored)
        copy = node
        for key in keys[:-1]:
            copy[key] = dict(copy[key])
            copy = copy[key]
        copy[keys[-1]] = {**copy[keys[-1]], "_target_": value}
        with pytest.raises(UntrustedConfigError, match=".".join(keys) + "._target_"):
            check_stored_config(node, "last.ckpt")
    # the user's own optimiser, trusted explicitly
    stored["model"]["optimizer"]["_target_"] = "mypkg.optim.Lion"
    with pytest.raises(UntrustedConfigError, match=TRUST_ENV):
        check_stored_config(stored, "last.ckpt")
    monkeypatch.setenv(TRUST_ENV, "mypkg.optim")
    check_stored_config(stored, "last.ckpt")


def test_interpolations_and_unknown_hydra_keys_are_refused(trained):
    stored = torch.load(trained[0], map_location="cpu", weights_only=True)[CONFIG_KEY]
    stored["data"]["beta"] = "${oc.env:AWS_SECRET_ACCESS_KEY}"
    with pytest.raises(UntrustedConfigError, match="'data.beta' = .*an interpolation"):
        check_stored_config(stored, "last.ckpt")
    stored["data"]["beta"] = 0.1
    stored["model"]["net"]["_call_"] = "x"
    with pytest.raises(UntrustedConfigError, match="'model.net._call_': not a Hydra key"):
        check_stored_config(stored, "last.ckpt")


def test_a_module_rebuilt_for_inference_has_the_weights_and_no_optimiser(trained):
    path = trained[0]
    module = ReIDModule.load_from_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key, value in module.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][key]), key
    with pytest.raises(Exception, match="rebuilt from a checkpoint for inference and has no optimiser"):
        module.configure_optimizers()


def test_a_resumed_runs_stored_record_naming_code_is_compared_never_built(make_cfg, tmp_path):
    from reid.rundir import RunFolderError, check_run_folder, release_folder

    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (folder / ".hydra" / "config.yaml").write_text(
        "data: {name: synthetic}\ntrainer: {max_epochs: 1}\n"
        f"model:\n  net:\n    _target_: builtins.open\n    _args_: ['{victim}', 'w']\n"
    )
    try:
        with pytest.raises(RunFolderError, match="cannot resume the run .* with another network"):
            check_run_folder(folder, make_cfg("ckpt_path=last"))
    finally:
        release_folder(folder)
    assert victim.read_text() == "precious\n"
