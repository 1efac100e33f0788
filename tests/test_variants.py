"""conf/model/*.yaml is the one list of models: code and tests discover it (reid.variants)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from reid.tools import bench, report
from reid.tools.report import collect, render, stats
from reid.variants import (
    MODEL_GROUP_DIR,
    UnknownVariantError,
    build_variant,
    model_names,
    model_variant,
    model_variants,
)

PAPER_TABLE_6 = ["baseline", "aligned", "intra", "inter", "intra_inter"]


def test_the_model_list_is_the_files_of_conf_model():
    files = {path.stem for path in MODEL_GROUP_DIR.glob("*.yaml")} - {"default"}
    assert set(model_names()) == files
    shipped = [name for name in model_names() if name in PAPER_TABLE_6]
    assert shipped == PAPER_TABLE_6  # Table 6's rows, in the paper's order, from what each model is


def test_a_variant_is_what_hydra_composes(make_cfg):
    # the model group's options; a data set's recipe may then change sizes (the synthetic one: width)
    recipe = OmegaConf.load(MODEL_GROUP_DIR.parent / "recipe" / "synthetic.yaml")
    changed_by_recipe = set(OmegaConf.select(recipe, "model.net", default={}) or {})
    for variant in model_variants():
        cfg = make_cfg(f"model={variant.name}", tiny=False)
        assert cfg.model.regions == variant.regions
        net = OmegaConf.to_container(cfg.model.net)
        kept = [key for key in variant.net if key not in changed_by_recipe]
        assert {key: net[key] for key in kept} == {key: variant.net[key] for key in kept}
        assert len(kept) > 5
    assert model_variant("intra_inter").description.startswith('Table 6 "intra + inter"')


def test_an_unknown_model_is_one_line_naming_the_models():
    with pytest.raises(UnknownVariantError, match=r"unknown model 'intra_intre' \(fix: one of baseline, aligned"):
        build_variant("intra_intre", 10)


@pytest.fixture
def new_model_file() -> Iterator[Path]:
    """A model added the way a contributor would: one YAML file in conf/model/ (removed afterwards)."""
    path = MODEL_GROUP_DIR / "zz_full_mask.yaml"
    path.write_text(
        "# Table 8's full h x w x c mask on the intra model.\ndefaults:\n  - intra\nnet:\n  decompose: false\n"
    )
    model_variants.cache_clear()
    try:
        yield path
    finally:
        path.unlink()
        model_variants.cache_clear()


def test_a_new_model_file_is_found_by_every_consumer(new_model_file, make_cfg):
    assert "zz_full_mask" in model_names()
    net = build_variant("zz_full_mask", 10, width=0.25)
    assert net.intra_attention and not net.decompose
    # the ablation report names a run without hydra.yaml by its options, and sorts it with the others
    cfg = make_cfg("model=intra", "model.net.decompose=false")
    assert collect._model_variant(cfg) == "zz_full_mask"
    assert collect._model_variant(make_cfg("model=intra")) == "intra"
    assert stats._model_rank("zz_full_mask")[0] < len(model_names())
    assert "zz_full_mask" in report.sweep_command()
    # the throughput benchmark measures every distinct network
    assert "zz_full_mask" in bench.distinct_networks()


def test_the_benchmark_measures_each_distinct_network_once():
    networks = bench.distinct_networks()
    assert "aligned" not in networks  # the baseline's network, fed other crops
    assert set(networks) == set(model_names()) - {"aligned"}


def test_lambda_note_names_the_models_with_a_trained_fusion():
    note = render._lambda_note()
    trained, ignored = note.split("trained fusion (", 1)[1].split(")", 1)
    assert set(trained.split(", ")) == {"intra_fc", "inter", "intra_inter"}
    assert set(ignored.split(";")[1].split(" ignore")[0].strip().split(", ")) == {"baseline", "aligned", "intra"}


def test_a_new_data_set_module_is_found_by_the_package(tmp_path):
    # a data set is its module (+ its YAML and test): nothing else lists the modules
    import subprocess
    import sys

    from conftest import ROOT

    module = ROOT / "reid" / "data" / "datasets" / "zz_new_set.py"
    module.write_text(
        "from reid.data.datasets.registry import register\n\n\n@register('zz_new_set')\n"
        "def load_zz(root, **options):\n    raise NotImplementedError\n"
    )
    try:
        found = subprocess.run(
            [sys.executable, "-c", "from reid.data.datasets import available; print(available())"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )
    finally:
        module.unlink()
    assert "'zz_new_set'" in found.stdout, found.stderr[-2000:]
