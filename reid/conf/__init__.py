"""The Hydra configs of `reid-train` and `reid-evaluate`, and the one way code composes them (:func:`compose_config`).

The configs are package data, so an installed ``reid`` has them; the repository's top-level
``conf`` is a link to this folder. Importing this module registers the
``${reid.cwd:}`` resolver; the typed schemas enter Hydra's ConfigStore when a run config is
first composed (:func:`reid.conf.store.register_schemas`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reid.conf.store import ROOT_SCHEMAS, compose_error, register_schemas

# ${reid.cwd:}: the working directory, also where Hydra has not set up a job yet (a sweep's folder)
OmegaConf.register_new_resolver("reid.cwd", os.getcwd, replace=True)

CONF_DIR = Path(__file__).resolve().parent


def compose_config(overrides: Sequence[str], config_name: str | None = "train") -> DictConfig:
    """Composes ``conf/<config_name>.yaml`` with Hydra overrides, paths rooted at the working directory.

    ``config_name=None`` composes only what the overrides add (``+model=intra``: one group).

    ``paths.*`` normally come from Hydra's runtime (only set under ``hydra.main``); here the
    working directory stands in for both the project root and the output folder.
    """
    return compose_configs([overrides], config_name)[0]


def compose_configs(override_lists: Sequence[Sequence[str]], config_name: str | None = "train") -> list[DictConfig]:
    """:func:`compose_config` for each list of overrides, with Hydra set up once (it is the slow part)."""
    from hydra import compose, initialize, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf import open_dict

    # inside a running Hydra app (a tool composing the model list, say) Hydra is already set up:
    # compose from the packaged configs anyway, then hand the app its own state back
    outer = get_gh_backup() if GlobalHydra.instance().is_initialized() else None
    if outer is not None:
        GlobalHydra.instance().clear()
    if config_name not in ROOT_SCHEMAS:
        # the typed schemas that the YAML files extend (`- /schema/reid_module@_here_`) must be in
        # Hydra's ConfigStore before anything composes; deriving them imports the classes (slow), so
        # it waits until a run config is first composed
        register_schemas()
    try:
        # a tool's config is its dataclass alone: the run config's groups (`paths`, `data`...) are not its options
        setup = (
            initialize(config_path=None, version_base="1.3")
            if config_name in ROOT_SCHEMAS
            else initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
        )
        with setup:
            configs = [compose(config_name=config_name, overrides=list(overrides)) for overrides in override_lists]
    except HydraException as err:
        raise compose_error(err, ROOT_SCHEMAS.get(config_name or "")) from None
    finally:
        if outer is not None:
            restore_gh_from_backup(outer)
    for cfg in configs:
        if config_name not in ROOT_SCHEMAS and "paths" in cfg:
            with open_dict(cfg):
                cfg.paths.root_dir = str(Path.cwd())
                cfg.paths.output_dir = str(Path.cwd())
    return configs
