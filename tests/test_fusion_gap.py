"""scripts/fusion_gap.py builds each test feature from the branches as it says, and pairs models by seed."""

from __future__ import annotations

import pytest
import torch
from conftest import load_script
from hydra.utils import instantiate


@pytest.mark.parametrize("model", ["intra", "intra_inter"])
def test_the_feature_forms_are_the_branches_combined_as_named(make_cfg, model):
    script = load_script("fusion_gap")
    torch.manual_seed(0)
    module = instantiate(make_cfg(f"model={model}").model, num_classes=5, _convert_="all").eval()
    with torch.no_grad():
        output = module(torch.randn(3, 3, 64, 32), torch.randn(3, 4, 3, 16, 32))
    forms = script.feature_forms(output)
    assert list(forms) == list(script.FORMS)
    g, parts = output.global_feature, output.part_features
    assert torch.equal(forms["global"], g)
    assert torch.equal(forms["concatenation"], torch.cat([g, parts.flatten(1)], dim=1))
    unit = forms["unit branches"].split([g.shape[1]] + [parts.shape[2]] * 4, dim=1)
    for block in unit:
        assert torch.allclose(block.norm(dim=1), torch.ones(3), atol=1e-5)
    # the concatenation is intra's own test feature; inter-attention's differs (unit-norm, weighted parts)
    same = torch.equal(forms["as trained"], forms["concatenation"])
    assert same == (model == "intra")


def test_summarise_pairs_models_by_seed():
    script = load_script("fusion_gap")
    forms = {form: (50.0, 40.0) for form in script.FORMS}

    def run(shift: float) -> dict:
        return {c: {f: (r1 + shift, ap + shift) for f, (r1, ap) in forms.items()} for c in script.CONDITIONS}

    # the second model is 2 points above the first in every seed; seed 9 has no partner and is left out
    scores = {"a": {1: run(0.0), 2: run(4.0)}, "b": {1: run(2.0), 2: run(6.0), 9: run(-50.0)}}
    lines = script.summarise(scores)
    assert any(line.startswith("| a (n=2) | hard preset | 52.0 ± 2.8 / 42.0 ± 2.8 |") for line in lines)
    pair = [line for line in lines if line.startswith("| b − a (2 seeds) | hard preset |")]
    assert len(pair) == 1 and pair[0].count("+2.0 ± 0.0 / +2.0 ± 0.0") == len(script.FORMS)


def test_an_argument_without_a_label_or_a_checkpoint_is_one_error_line(tmp_path):
    script = load_script("fusion_gap")
    for argument in (str(tmp_path / "last.ckpt"), f"intra={tmp_path / 'missing.ckpt'}"):
        with pytest.raises(SystemExit) as stopped:
            script.main([argument])
        message = str(stopped.value.code)
        assert message.count("\n") == 0 and message.startswith(f"error: {argument!r} is not label=<checkpoint file>")
