"""What the train and evaluate tasks share.

One-line errors, building the data module, model and test sets, metrics.json.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from reid.checkpoints import CONFIG_KEY
from reid.errors import ReidError, one_line, user_errors
from reid.names import CLASSIFICATION_METRICS, RANK_METRICS

log = logging.getLogger(__name__)

# Lightning 2.6 trips over torch 2.13's pytree deprecation on every run; it is not ours to fix.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

METRIC_KEYS = RANK_METRICS + CLASSIFICATION_METRICS


class RunInterrupted(RuntimeError):
    """The run was terminated (SIGTERM) before it finished; the message says where and how to resume."""

    #: the exit status of a process ended by SIGTERM, as a shell reports it (128 + 15)
    exit_status = 143


class InterruptCheckpoint(pl.Callback):
    """Writes ``last.ckpt`` when training is terminated (SIGTERM), so that ``ckpt_path=last`` resumes there.

    Lightning stops at the next safe point (after the batch in progress, or at the epoch's
    end) by raising ``SIGTERMException``; the state there is the one a step checkpoint holds.
    A termination during validation saves nothing (the state between a batch and the end of
    validation is not one a run resumes from): the last step or epoch checkpoint stands.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saved: Path | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit" and not trainer.validating:
            trainer.save_checkpoint(self.path)
            self.saved = self.path


def run_cli(function: Any, cfg: DictConfig) -> Any:
    """Runs ``function(cfg)``; bad input exits with status 2 and one ``error: ...`` line on stderr.

    Set ``REID_DEBUG=1`` to get the full traceback instead.
    """
    from hydra.errors import InstantiationException

    try:
        try:
            return function(cfg)
        except InstantiationException as err:
            # Hydra wraps what a constructor raised ("Error in call to target ..."): the cause is the message
            cause = err.__cause__
            raise (cause if isinstance(cause, user_errors()) else err) from None
    except RunInterrupted as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr, flush=True)
        raise SystemExit(RunInterrupted.exit_status) from None
    except user_errors() as err:
        if os.environ.get("REID_DEBUG"):
            raise
        message = one_line(str(err))
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def configure_wandb_env(output_dir: str | Path | None = None) -> None:
    """Makes W&B offline unless the user chose a mode, and never prompts or blocks on the network."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


class StoreConfigInCheckpoint(pl.Callback):
    """Saves the resolved run config (plain containers only) into every checkpoint.

    ``evaluate.py`` rebuilds the network from it, and plain containers keep the checkpoint
    loadable with ``torch.load(weights_only=True)``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiates every entry of a ``callbacks`` or ``logger`` group that has a ``_target_``.

    A W&B logger that would log online is checked first (:func:`check_wandb_online`).
    """
    objects: list[Any] = []
    if not group:
        return objects
    for name, conf in group.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            if str(conf._target_).endswith("WandbLogger"):
                conf = check_wandb_online(conf, f"logger.{name!s}")
            log.info("instantiating %s <%s>", name, conf._target_)
            objects.append(instantiate(conf))
    return objects


#: how long the start of a run waits for the W&B server (name lookup and connection) before logging offline
WANDB_CONNECT_TIMEOUT = 5.0
ONLINE_MODES = ("online", "run")


class WandbLoginError(ReidError, RuntimeError):
    """W&B is to log online, but no API key is configured (or the one configured is malformed)."""


def check_wandb_online(conf: DictConfig, key: str = "logger.wandb") -> DictConfig:
    """Checks a ``WandbLogger`` config that logs online before it is made; returns the config to instantiate.

    Without an API key, ``wandb.init`` would stop the run with a traceback once training
    starts: this is one :class:`WandbLoginError` line instead. With a key but no route to the
    server within :data:`WANDB_CONNECT_TIMEOUT` seconds (``wandb.init`` waits 90 s, then fails),
    the run logs offline (``WANDB_MODE=offline``) after one warning line, to be uploaded later
    with ``wandb sync``. Offline and disabled loggers, and ranks other than 0 (which never log to
    W&B), are left as they are.
    """
    from pytorch_lightning.utilities import rank_zero_only

    # Lightning sets rank_zero_only.rank at import; lightning_utilities' typing of the function omits it
    if conf.get("offline") or rank_zero_only.rank != 0:  # type: ignore[attr-defined]
        return conf
    chosen_by = f"{key}.mode" if conf.get("mode") else "WANDB_MODE"
    mode = str(conf.get("mode") or os.environ.get("WANDB_MODE") or "online")
    if mode not in ONLINE_MODES:
        return conf
    base_url = _wandb_base_url()
    if not _has_wandb_credentials(base_url, f"{chosen_by}={mode}"):
        raise WandbLoginError(
            f"{chosen_by}={mode}: W&B is to log online to {base_url} but no W&B API key is configured; "
            "run `wandb login` or set WANDB_API_KEY, or log offline with WANDB_MODE=offline (`wandb sync` "
            "uploads the run later), or log without W&B with logger=csv"
        )
    problem = _unreachable(base_url, WANDB_CONNECT_TIMEOUT)
    if problem is None:
        return conf
    save_dir = Path(str(conf.get("save_dir") or conf.get("dir") or "."))
    log.warning(
        "warning: the W&B server %s cannot be reached (%s), so this run logs to W&B offline, into %s; "
        "upload it once online with `wandb sync %s`",
        base_url,
        problem,
        save_dir / "wandb",
        save_dir / "wandb" / "offline-run-*",
    )
    os.environ["WANDB_MODE"] = "offline"  # for processes started later (DDP)
    # and for this one as a wandb.init argument: wandb read the environment once, when first set up
    conf = OmegaConf.create(cast(dict[str, Any], OmegaConf.to_container(conf, resolve=True)))
    conf.mode = "offline"
    return conf


def _wandb_base_url() -> str:
    """The W&B server runs log to: ``WANDB_BASE_URL``, the ``wandb login --host`` setting, or wandb's default."""
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except (ImportError, AttributeError):  # another wandb version: its settings are elsewhere
        return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _has_wandb_credentials(base_url: str, setting: str) -> bool:
    """Whether wandb finds an API key (``WANDB_API_KEY``, a netrc, its settings), asking no one and nothing online."""
    import wandb

    try:
        from wandb.sdk.lib import wbauth

        found = wbauth.authenticate_session(host=base_url, source="reid", prompt=False, update_session=False)
    except (ImportError, AttributeError, TypeError):  # wandb without this module: its older key lookup
        return bool(getattr(getattr(wandb, "api", None), "api_key", None))
    except wandb.errors.Error as err:  # a key of the wrong format, named by wandb
        raise WandbLoginError(
            f"{setting}: {one_line(str(err))}; run `wandb login --relogin` or fix WANDB_API_KEY, "
            "or log offline with WANDB_MODE=offline"
        ) from None
    return found is not None


def _unreachable(url: str, timeout: float) -> str | None:
    """Why ``url``'s server (or the proxy to it) cannot be connected to within ``timeout`` seconds; None when it can.

    The name lookup counts too: it runs in a thread, since a socket timeout does not bound it.
    """
    import socket
    import threading
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{host}:{port}: {err.strerror or err}")

    thread = threading.Thread(target=connect, name="wandb-reachable", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def eval_options(cfg: DictConfig, protocol: str) -> dict[str, Any]:
    """Keyword options of :class:`reid.metrics.ReIDMetric` from the ``eval`` group."""
    from reid.evaluation import ScoringOptions

    return ScoringOptions.from_config(cfg.eval).metric_kwargs(protocol)


def build_datamodule(cfg: DictConfig) -> Any:
    """Instantiates the data module and reads the data set (generating the synthetic one if needed)."""
    datamodule = instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


# what a test set takes from the training set's config: the network's input and the loaders
TEST_SET_KEYS = (
    "whole_size",
    "part_size",
    "beta",
    "regions",
    "pose",
    "strips",
    "augment",
    "eval_batch_size",
    "num_workers",
    "pin_memory",
    "on_bad_sample",
    "verify_images",
    "pipeline",
    "image_cache_dir",
)


def build_test_sets(cfg: DictConfig) -> dict[str, Any]:
    """The data modules of ``data.test_sets`` (names of ``conf/data`` options), set up for evaluation only.

    Each is that option's config (its data set, options, keypoints) with the training set's input
    settings (:data:`TEST_SET_KEYS`: sizes, β, regions, pose thresholds, normalisation...), so the
    network sees what it was trained on.
    """
    from reid.conf import CONF_DIR, compose_configs
    from reid.errors import ConfigError

    names = list(cfg.data.get("test_sets") or [])
    if not names:
        return {}
    for name in names:
        if not (CONF_DIR / "data" / f"{name}.yaml").is_file() or name in ("default", "imagenet"):
            known = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem not in ("default", "imagenet"))
            raise ConfigError([f"data.test_sets: unknown data set {name!r}; choose among {', '.join(known)}"])
    # each set's data config exactly as `data=<name>` composes it
    composed = compose_configs([[f"data={name}", "logger=none", "callbacks=none"] for name in names])
    modules = {}
    for name, option in zip(names, composed, strict=True):  # one composed config per name
        # data configs are mappings, so to_container gives dicts
        data_cfg = OmegaConf.create(cast(dict[str, Any], OmegaConf.to_container(option.data, resolve=True)))
        if data_cfg.get("name") == "synthetic" and cfg.data.get("name") == "synthetic":
            # a condition of the synthetic set (synthetic_occluded): the training set's people and
            # difficulty, with only the options the condition's own YAML sets over the base set's
            base = compose_configs([["data=synthetic", "logger=none", "callbacks=none"]])[0].data.options
            own = {k: v for k, v in data_cfg.options.items() if base.get(k) != v}
            options = cast(dict[str, Any], OmegaConf.to_container(cfg.data.options, resolve=True))
            data_cfg.options = {**options, **own}
        for key in TEST_SET_KEYS:
            if key in cfg.data:
                data_cfg[key] = (
                    OmegaConf.to_container(cfg.data[key], resolve=True)
                    if isinstance(cfg.data[key], (DictConfig, ListConfig))
                    else cfg.data[key]
                )
        data_cfg.root = str(cfg.data.root)
        data_cfg.sampler_seed = None  # evaluation only: no training order
        data_cfg.test_sets = []
        datamodule = instantiate(data_cfg, _recursive_=False)
        datamodule.prepare_data()
        datamodule.setup("validate")
        modules[name] = datamodule
    return modules


def build_model(cfg: DictConfig, num_classes: int, protocol: str) -> Any:
    """Instantiates the LightningModule for ``num_classes`` identities."""
    # _convert_="all": plain containers in the hyper-parameters keep checkpoints weights_only-loadable
    return instantiate(cfg.model, num_classes=num_classes, eval_options=eval_options(cfg, protocol), _convert_="all")


def metrics_from(results: Mapping[str, Any]) -> dict[str, float]:
    """The ``val/...`` values of a validate() result as plain floats keyed ``rank1``, ``mAP``..."""
    out: dict[str, float] = {}
    for key in METRIC_KEYS:
        value = results.get(f"val/{key}")
        if value is not None:
            out[key] = float(value)
    return out


def provenance() -> dict[str, Any]:
    """What code and settings produced a result: the git commit of the source (None outside a checkout),
    whether the tree had uncommitted changes, and torch's version and intra-op thread count (another
    floating-point order is, in effect, another seed)."""
    import subprocess

    import torch

    source = Path(__file__).resolve().parents[2]
    commit, dirty = None, None
    try:
        found = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        commit = found.stdout.strip() or None
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # an installed package, or no git: the commit is unknown
    return {"commit": commit, "dirty": dirty, "torch": torch.__version__, "threads": torch.get_num_threads()}


def write_provenance(output_dir: str | Path, recorded: dict[str, Any] | None = None) -> Path:
    """Writes ``recorded`` (default: :func:`provenance` now) beside ``metrics.json`` (``provenance.json``).

    ``reid-report`` reads it.

    A training run records its provenance when it starts and writes it at the end: the code that
    trained is the code checked out at the start, whatever was committed while it ran.
    """
    from reid.files import atomic_write_json
    from reid.names import PROVENANCE_FILE

    record = provenance() if recorded is None else recorded
    return atomic_write_json(Path(output_dir) / PROVENANCE_FILE, record, indent=2, sort_keys=True)


def write_metrics(metrics: dict[str, Any], output_dir: str | Path) -> Path:
    """Writes ``metrics.json`` (fractions) into ``output_dir``, atomically: the old file survives a failed write."""
    from reid.files import atomic_write_json

    path = atomic_write_json(Path(output_dir) / "metrics.json", metrics, indent=2, sort_keys=True)
    log.info("wrote %s", path)
    return path


def format_table(metrics: dict[str, float]) -> str:
    """A one-row Markdown table of R1/R5/R10/R20/mAP in percent."""
    cols = [("R1", "rank1"), ("R5", "rank5"), ("R10", "rank10"), ("R20", "rank20"), ("mAP", "mAP"), ("mINP", "mINP")]
    cols += [("Top-1", "top1"), ("Top-5", "top5")]
    cols = [(label, key) for label, key in cols if key in metrics]
    header = "| " + " | ".join(label for label, _ in cols) + " |"
    sep = "|" + "|".join("---:" for _ in cols) + "|"
    row = "| " + " | ".join(f"{100 * metrics[key]:.2f}" for _, key in cols) + " |"
    return "\n".join([header, sep, row])


@contextmanager
def terminated_as_error(
    trainer: pl.Trainer, output_dir: Path, stage: str, saver: InterruptCheckpoint
) -> Iterator[None]:
    """Turns Lightning's SIGTERM exit (a ``SystemExit`` with status 0) into :class:`RunInterrupted`, logged."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from reid.lit.resume import find_resume_checkpoint

    try:
        yield
    except SIGTERMException:
        try:
            checkpoint = saver.saved or find_resume_checkpoint(output_dir)
        except FileNotFoundError:
            checkpoint = None
        where = f"at epoch {trainer.current_epoch}, step {trainer.global_step}"
        resume = (
            f"the last checkpoint is {checkpoint}: resume with `python train.py <same overrides> "
            f"hydra.run.dir={output_dir} ckpt_path=last`"
            if checkpoint
            else "no checkpoint was written yet"
        )
        message = f"terminated by SIGTERM during {stage} {where}; {resume}"
        log.error(message)
        raise RunInterrupted(message) from None
