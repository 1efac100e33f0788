"""Config validation: wrong types and misspelt keys -> one line with the full key path; every shipped config passes."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

import pytest
from conftest import CONF_DIR
from omegaconf import OmegaConf, open_dict

from reid.conf import schema
from reid.conf.schema import (
    ClassificationModuleConfig,
)
from reid.conf.validate import validate_config
from reid.errors import ConfigError
from reid.lit.imagenet import ClassificationModule

# Base configs that other files extend rather than choices of their own (data/default has name: ???).
BASES = {("data", "default")}
GROUPS = ("data", "model", "trainer", "callbacks", "logger", "eval", "paths", "experiment", "hparams_search")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml") if (group, p.stem) not in BASES)


SHIPPED = [(group, option) for group in GROUPS for option in _options(group)]


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def _problems(make_cfg, *overrides: str) -> list[str]:
    """What is wrong with the overrides: found by Hydra when it composes (the typed schemas), or after."""
    try:
        cfg = make_cfg(*overrides)
    except ConfigError as err:
        assert "\n" not in str(err)
        return err.problems
    with pytest.raises(ConfigError) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)
    return info.value.problems


# ---------------------------------------------------------------------------- shipped configs


def _first_of_each_group_fast(shipped: list[tuple[str, str]]) -> list:
    """The options as test cases: the first of each group in the fast loop, the others (0.2 s of composing
    each) in CI; the models, data sets and experiments the other tests use are composed there anyway."""
    seen: set[str] = set()
    cases = []
    for group, option in shipped:
        cases.append(pytest.param(group, option, marks=[pytest.mark.slow] if group in seen else []))
        seen.add(group)
    return cases


@pytest.mark.parametrize(("group", "option"), _first_of_each_group_fast(SHIPPED), ids=[f"{g}={o}" for g, o in SHIPPED])
def test_every_shipped_config_option_composes_and_validates(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}", tiny=False)
    validate_config(cfg)


def test_the_shipped_configs_are_all_covered():
    assert {"imagenet_pretrain", "paper_market"} <= set(_options("experiment"))
    assert {"synthetic", "market", "imagenet", "custom"} <= set(_options("data"))
    assert len(SHIPPED) >= 30


@pytest.mark.parametrize("overrides", [[], ["experiment=imagenet_pretrain"], ["data=market", "model=baseline"]])
def test_the_evaluate_config_validates(make_cfg, overrides):
    validate_config(make_cfg(*overrides, config_name="evaluate", tiny=False))


def test_the_tiny_test_config_and_the_trainer_presets_validate(make_cfg):
    validate_config(make_cfg())
    validate_config(make_cfg("trainer=gpu", "model=intra", "callbacks=default", "logger=csv"))


# ---------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=abc", "config key 'data.batch_size': expected int, got 'abc' (fix: e.g. data.batch_size=32)"),
        ("data.batch_size=true", "config key 'data.batch_size': expected int, got True"),
        ("data.beta=small", "config key 'data.beta': expected float, got 'small' (fix: e.g. data.beta=0.1)"),
        (
            "data.pin_memory=often",
            "config key 'data.pin_memory': expected bool, got 'often' (fix: e.g. data.pin_memory=false)",
        ),
        ("data.whole_size=[384,192,3]", "config key 'data.whole_size': expected a list of 2 int, got [384, 192, 3]"),
        ("data.part_size=[96,wide]", "config key 'data.part_size': expected a list of 2 int, got [96, 'wide']"),
        ("data.pose.min_joints=6.5", "config key 'data.pose.min_joints': expected int, got 6.5"),
        (
            "data.on_bad_sample=skp",
            "config key 'data.on_bad_sample': expected one of 'error', 'skip', got 'skp' (fix: did you mean 'skip'?)",
        ),
        ("data.verify_images=full", "config key 'data.verify_images': expected one of 'decode', 'header', got 'full'"),
        ("eval.pictures.query_rows=3", "config key 'eval.pictures.query_rows': expected list of int or null, got 3"),
        ("model.net.width=wide", "config key 'model.net.width': expected float, got 'wide'"),
        ("model.net.fusion=sum", "config key 'model.net.fusion': expected one of 'concat', 'fc', 'inter', got 'sum'"),
        ("model.lambda_intra=[0.5]", "config key 'model.lambda_intra': expected float, got [0.5]"),
        ("eval.max_rank=many", "config key 'eval.max_rank': expected int, got 'many'"),
        ("trainer.max_epochs=ten", "config key 'trainer.max_epochs': expected int or null, got 'ten'"),
        ("seed=abc", "config key 'seed': expected int or null, got 'abc' (fix: e.g. seed=42)"),
        ("final_validation=maybe", "config key 'final_validation': expected bool, got 'maybe'"),
    ],
)
def test_a_wrong_type_names_the_full_key_and_a_fix(make_cfg, override, expected):
    problems = _problems(make_cfg, override)
    assert len(problems) == 1 and expected in problems[0]


def test_an_interpolated_value_is_reported_once_where_it_is_written(make_cfg):
    # data.regions is ${model.regions}: only the key the user must fix is named
    assert _problems(make_cfg, "model.regions=sideways") == [
        "config key 'model.regions': expected one of 'pose', 'strips', got 'sideways' (fix: e.g. model.regions=pose)"
    ]


def test_an_interpolation_of_an_unchecked_key_names_both(make_cfg):
    cfg = make_cfg()
    with open_dict(cfg):
        cfg.data.options.size = "big"
        cfg.data.batch_size = "${data.options.size}"
    assert _error(cfg) == (
        "config key 'data.batch_size' (= ${data.options.size}): expected int, got 'big' (fix: e.g. data.batch_size=32)"
    )


def test_a_value_left_missing_is_named(make_cfg):
    assert "config key 'data.name' has no value (???)" in _error(make_cfg("data.name=???"))


def test_every_problem_is_reported_in_one_line(make_cfg):
    error = pytest.raises(ConfigError, validate_config, make_cfg("data.on_bad_sample=skp", "+model.net.widht=1"))
    assert len(error.value.problems) == 2 and str(error.value) == "; ".join(error.value.problems)
    assert isinstance(error.value, ValueError)


# ---------------------------------------------------------------------------- misspelt keys


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("+model.net.widht=0.5", "unknown config key 'model.net.widht' (did you mean 'model.net.width'?)"),
        ("+data.pose.min_conff=0.2", "unknown config key 'data.pose.min_conff' (did you mean 'data.pose.min_conf'?)"),
        ("+data.augment.hflp=0.5", "unknown config key 'data.augment.hflp' (did you mean 'data.augment.hflip'?)"),
        ("+data.strips.layot=equal", "unknown config key 'data.strips.layot' (did you mean 'data.strips.layout'?)"),
        ("+model.lamda_intra=0.2", "unknown config key 'model.lamda_intra' (did you mean 'model.lambda_intra'?)"),
        ("+eval.distanse=cosine", "unknown config key 'eval.distanse' (did you mean 'eval.distance'?)"),
        ("+trainer.max_epoch=3", "unknown config key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
        (
            "+model.optimizer.weight_decy=0.1",
            "unknown config key 'model.optimizer.weight_decy' (did you mean 'model.optimizer.weight_decay'?)",
        ),
        (
            "+callbacks.model_checkpoint.monitr=x",
            "unknown config key 'callbacks.model_checkpoint.monitr' "
            "(did you mean 'callbacks.model_checkpoint.monitor'?)",
        ),
        ("+callbacks.nonfinite_guard.actoin=skip", "(did you mean 'callbacks.nonfinite_guard.action'?)"),
        ("+final_validaton=false", "unknown config key 'final_validaton' (did you mean 'final_validation'?)"),
    ],
)
def test_a_misspelt_key_names_the_full_path_and_the_likely_key(make_cfg, override, expected):
    message = _error(make_cfg("callbacks=default", override))
    assert expected in message


def test_an_unknown_key_without_a_close_match_lists_the_known_ones(make_cfg):
    message = _error(make_cfg("+data.pose.zzz=1"))
    assert message == (
        "unknown config key 'data.pose.zzz' (fix: remove it or correct it; the keys of 'data.pose' are "
        "max_outside, min_conf, min_joints, path, source, visibility)"
    )


def _user_configs(tmp_path: Path, files: dict[str, str]) -> str:
    """A folder of the user's own config files, added to Hydra's search path (the override returned)."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return f"hydra.searchpath=[file://{tmp_path}]"


def test_a_typo_in_a_yaml_file_fails_at_compose_naming_the_file(make_cfg, tmp_path):
    # an experiment file needs no `+` to add a key: the typed schemas catch what Hydra would merge
    searchpath = _user_configs(
        tmp_path,
        {
            "experiment/mine.yaml": "# @package _global_\ndata:\n  augment:\n"
            "    random_erasin: 0.5\n  batch_size: lots\n"
        },
    )
    assert _problems(make_cfg, searchpath, "experiment=mine") == [
        "unknown config key 'data.augment.random_erasin' in experiment/mine.yaml "
        "(did you mean 'data.augment.random_erasing'?)"
    ]
    (tmp_path / "experiment/mine.yaml").write_text("# @package _global_\ndata:\n  batch_size: lots\n")
    assert _problems(make_cfg, searchpath, "experiment=mine") == [
        "config key 'data.batch_size' in experiment/mine.yaml: expected int, got 'lots' (fix: e.g. data.batch_size=32)"
    ]


def test_an_unknown_group_option_is_one_line_with_the_nearest(make_cfg):
    assert _problems(make_cfg, "data=markt") == [
        "config group 'data' has no option 'markt' (fix: did you mean 'data=market'?)"
    ]
    assert _problems(make_cfg, "model=nothing_like_it")[0].startswith(
        "config group 'model' has no option 'nothing_like_it' (fix: one of aligned, baseline"
    )


def test_the_schemas_give_the_options_no_file_sets(make_cfg):
    # model/default.yaml does not list group_parts: the schema's default (the class's own) fills it in
    assert make_cfg().model.net.group_parts is True
    assert OmegaConf.get_type(make_cfg("data=imagenet", tiny=False).data).__name__ == "ImageNetDataConfig"


def test_trainer_options_beyond_the_defaults_are_lightnings_own(make_cfg):
    validate_config(make_cfg("+trainer.gradient_clip_algorithm=norm", "+trainer.accumulate_grad_batches=2"))


def test_a_users_own_data_module_config_is_left_to_its_class(make_cfg, tmp_path):
    # a data config that does not extend data/default is not typed by the project's schema
    searchpath = _user_configs(tmp_path, {"data/mine.yaml": "_target_: my.DataModule\nname: mine\nshards: 8\n"})
    cfg = make_cfg(searchpath, "data=mine", tiny=False)
    assert cfg.data.shards == 8
    validate_config(cfg)


def test_groups_of_other_classes_are_left_to_them(make_cfg):
    cfg = OmegaConf.create(OmegaConf.to_container(make_cfg()))  # untyped, as a user's own files compose
    with open_dict(cfg):
        cfg.data._target_ = "somebody.else.DataModule"
        cfg.data.anything_goes = 1
        cfg.model.net._target_ = "somebody.else.Net"
        cfg.model.net.depth = "deep"
    validate_config(cfg)


def test_an_unimportable_target_is_named(make_cfg):
    message = _error(make_cfg("model.optimizer._target_=torch.optim.SDG"))
    assert message.startswith("config key 'model.optimizer._target_': cannot import 'torch.optim.SDG'")


def test_unresolvable_interpolations_are_not_checked(make_cfg):
    cfg = make_cfg()
    with open_dict(cfg):
        cfg.paths.output_dir = "${hydra:runtime.output_dir}"  # outside a Hydra run
    validate_config(cfg)
    assert OmegaConf.is_interpolation(cfg.paths, "output_dir")


# ---------------------------------------------------------------------------- schemas of the code


def test_the_classification_module_schema_adds_top_k():
    options = set(inspect.signature(ClassificationModule).parameters)
    assert "top_k" in options and "top_k" in {f.name for f in dataclasses.fields(ClassificationModuleConfig)}


# ---------------------------------------------------------------------------- ranges

_RANGED_GROUPS = {
    "data": schema.ReIDDataConfig,
    "data.pose": schema.PoseConfig,
    "data.augment": schema.AugmentConfig,
    "model": schema.ReIDModuleConfig,
    "model.net": schema.NetConfig,
    "eval": schema.EvalConfig,
    "eval.pictures": schema.PicturesConfig,
    "trainer": schema.TrainerConfig,
}


def _out_of_range(valid: schema.Range) -> float:
    if valid.low is not None:
        return valid.low - 1 if not valid.low_open else valid.low
    return valid.high + 1


def _list_length(hint) -> int | None:
    """How many items an option of type ``hint`` holds when it is a list (1 for a list of any length), else None."""
    for option in typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,):
        origin, args = typing.get_origin(option), typing.get_args(option)
        if origin is tuple:
            return len(args)
        if origin is list:
            return 1
    return None


def _ranged_options() -> list[tuple[str, schema.Range, object]]:
    options = []
    for group, dataclass_ in _RANGED_GROUPS.items():
        hints = typing.get_type_hints(dataclass_)
        for item in dataclasses.fields(dataclass_):
            valid = item.metadata.get("range")
            if valid is not None:
                options.append((f"{group}.{item.name}", valid, _list_length(hints[item.name])))
    return options


def test_every_numeric_option_has_a_range():
    ranged = {path for path, _, _ in _ranged_options()}
    numeric = set()
    for group, dataclass_ in _RANGED_GROUPS.items():
        hints = typing.get_type_hints(dataclass_)
        for item in dataclasses.fields(dataclass_):
            text = str(hints[item.name])
            if re.search(r"\b(int|float)\b", text) and "seed" not in item.name and item.name != "precision":
                numeric.add(f"{group}.{item.name}")
    assert numeric - ranged == set(), "numeric options without a valid range"


def test_every_numeric_option_out_of_range_at_once_is_one_problem_each(make_cfg):
    # every option out of range in one config: one composition (0.2 s) instead of one per option (the
    # slow test below, which also shows each alone is the only problem)
    ranged = _ranged_options()
    overrides = []
    for path, valid, length in ranged:
        bad = _out_of_range(valid)
        overrides.append(f"++{path}=" + (f"[{','.join([str(bad)] * length)}]" if length else str(bad)))
    with pytest.raises(ConfigError) as error:
        validate_config(make_cfg(*overrides, tiny=False))
    problems = error.value.problems
    assert len(problems) == len(ranged)
    for path, valid, _ in ranged:
        (problem,) = [p for p in problems if p.startswith(f"config key '{path}': ")]
        assert "is out of range, must be" in problem and valid.describe() in problem


@pytest.mark.slow
@pytest.mark.parametrize(("path", "valid", "length"), _ranged_options(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_numeric_option_out_of_range_is_one_line_naming_key_value_and_range(make_cfg, path, valid, length):
    bad = _out_of_range(valid)
    value = f"[{','.join([str(bad)] * length)}]" if length else str(bad)
    cfg = make_cfg(f"++{path}={value}", tiny=False)  # ++: set it, also where the YAML leaves it to the default
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    problems = error.value.problems
    assert len(problems) == 1 and problems[0].startswith(f"config key '{path}': ")
    assert "is out of range, must be" in problems[0] and valid.describe() in problems[0]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.optimizer.lr=abc", "config key 'model.optimizer.lr': expected float, got 'abc'"),
        ("model.optimizer.lr=0", "config key 'model.optimizer.lr': 0 is out of range, must be > 0"),
        (
            "model.optimizer.momentum=1.5",
            "config key 'model.optimizer.momentum': 1.5 is out of range, must be in [0, 1]",
        ),
        ("model.optimizer.weight_decay=-1", "config key 'model.optimizer.weight_decay': -1 is out of range"),
    ],
)
def test_optimizer_options_are_numbers_in_range(make_cfg, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(make_cfg(override, tiny=False))


def test_values_at_the_edges_of_their_ranges_are_accepted(make_cfg):
    validate_config(
        make_cfg(
            "data.beta=0",
            "data.beta=0.5",
            "trainer.max_epochs=-1",
            "data.num_workers=0",
            "data.augment.hflip=1.0",
            "model.lambda_intra=0",
            "seed=0",
            "seed=4294967295",
            tiny=False,
        )
    )


@pytest.mark.parametrize(
    "override",
    ["seed=-5", "seed=4294967296", "data.sampler_seed=-1", "data.augment.seed=-1", "eval.pictures.seed=-2"],
)
def test_a_seed_numpy_cannot_take_is_one_line_naming_the_key_and_range(make_cfg, override):
    key, _, value = override.partition("=")
    problems = _problems(make_cfg, override)
    assert len(problems) == 1
    assert problems[0].startswith(f"config key '{key}': {value} is out of range, must be in [0, 4294967295] (fix: ")


# YAML and Hydra read nan, inf and 1e400 (too large: inf) as floats; no comparison with a bound rejects NaN
NON_FINITE = [
    ("data.beta=nan", "nan", "in [0, 0.5]"),
    ("data.beta=inf", "inf", "in [0, 0.5]"),
    ("model.optimizer.lr=1e400", "inf", "> 0"),
    ("model.optimizer.lr=nan", "nan", "> 0"),
    ("model.lambda_intra=inf", "inf", ">= 0"),
    ("data.augment.erasing_aspect=[0.3,inf]", "[0.3, inf]", "> 0"),
    ("trainer.gradient_clip_val=nan", "nan", ">= 0"),
]


@pytest.mark.parametrize(("override", "shown", "bounds"), NON_FINITE, ids=[o for o, _, _ in NON_FINITE])
def test_nan_and_inf_are_outside_every_range(make_cfg, override, shown, bounds):
    key = override.partition("=")[0]
    problems = _problems(make_cfg, override)
    assert len(problems) == 1
    assert problems[0].startswith(f"config key '{key}': {shown} is out of range, must be a finite number {bounds}")


@pytest.mark.parametrize("override", ["seed=-5", "data.beta=nan", "model.optimizer.lr=1e400"])
def test_a_bad_seed_or_a_non_finite_float_ends_train_in_one_line(make_cfg, capsys, override):
    from reid import tasks as runner

    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.train, make_cfg(override, "trainer.max_epochs=1"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: config key '{override.partition('=')[0]}': "), err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_tool_option_with_a_range_refuses_nan_and_inf(value, capsys):
    from reid.conf.tool import run_tool
    from reid.tools.export import ExportOptions

    assert run_tool(lambda options: 0, ExportOptions, "export", ["ckpt_path=a.ckpt", f"tolerance={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key 'tolerance': ") and "must be a finite number > 0" in err, err


def test_fusion_names_come_from_the_fusion_registry(make_cfg):
    from reid.models.fusion import FUSION_REGISTRY, ConcatFusion

    with pytest.raises(
        ConfigError,
        match=r"model.net.fusion': expected one of 'concat', 'fc', 'inter', got 'intr' "
        r"\(fix: did you mean 'inter'\?\)",
    ):
        validate_config(make_cfg("model.net.fusion=intr"))
    FUSION_REGISTRY["concat_again"] = ConcatFusion  # a newly registered fusion is a valid choice at once
    try:
        validate_config(make_cfg("model.net.fusion=concat_again"))
    finally:
        FUSION_REGISTRY.pop("concat_again")


# ---------------------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], (24, 8, 0.05, [18])),  # conf/recipe/synthetic.yaml: make train's recipe
        (["data=market"], (100, 10, 0.01, [40, 80])),  # the paper's, the defaults
        (["experiment=paper_duke"], (100, 10, 0.01, [40, 80])),
        (["data=imagenet"], (9, 1, 0.01, [3, 6])),  # conf/recipe/imagenet.yaml
        (["data=msmt17"], (100, 10, 0.01, [40, 80])),
    ],
)
def test_a_data_sets_recipe_sets_the_trainer_and_optimiser_keys(make_cfg, overrides, expected):
    cfg = make_cfg(*overrides, tiny=False)
    recipe = (
        cfg.trainer.max_epochs,
        cfg.trainer.check_val_every_n_epoch,
        cfg.model.optimizer.lr,
        list(cfg.model.scheduler.milestones),
    )
    assert recipe == expected


def test_a_moved_key_names_where_it_went(make_cfg):
    assert _problems(make_cfg, "data.schedule.max_epochs=3") == [
        "config key 'data.schedule.max_epochs' has moved (fix: trainer.max_epochs=...)"
    ]
    assert _problems(make_cfg, "+data.schedule.lr=0.1") == [
        "config key 'data.schedule' has moved (fix: its options are now model.optimizer.lr, "
        "model.scheduler.milestones, trainer.check_val_every_n_epoch, trainer.max_epochs)"
    ]


def test_the_paper_experiments_list_only_what_differs_from_the_recipe():
    for path in sorted((Path(CONF_DIR) / "experiment").glob("paper_*.yaml")):
        cfg = OmegaConf.load(path)
        assert set(cfg) == {"defaults", "tags", "expect_pretrained", "data", "model"}, path.name
        assert set(cfg.data) == {"beta"} and set(cfg.model) == {"lambda_intra"}, path.name
