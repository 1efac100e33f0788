"""`python -m reid.tools.summary`: parameter and MAC counts of the configured model at the paper's sizes."""

from __future__ import annotations

import json

from reid.models import AttentionReIDNet
from reid.models.complexity import count_parameters
from reid.tools.summary import SummaryOptions, main, summarize


def test_summary_counts_the_configured_model_at_paper_size_not_the_demo_width(capsys):
    main(["model=baseline"])
    line = json.loads(capsys.readouterr().out)
    assert line["params"] == count_parameters(AttentionReIDNet(751))  # width 1.0, not the synthetic recipe's 0.5
    assert line["whole_size"] == [384, 192] and line["part_size"] == [96, 192] and line["num_classes"] == 751
    assert line["params_no_classifier"] < line["params"]


def test_attention_adds_parameters_and_macs_and_overrides_apply():
    base = summarize(SummaryOptions(model="baseline"))
    full = summarize(SummaryOptions(model="intra_inter"))
    assert full["params"] > base["params"] and full["macs"] > base["macs"]
    narrow = summarize(SummaryOptions(model="baseline", overrides=["model.net.width=0.5"], num_classes=10))
    assert narrow["num_classes"] == 10 and narrow["params"] < base["params"] / 2


def test_the_summary_reads_its_options_as_every_tool_does(capsys):
    assert main(["model=baseline", "overrides=[model.net.width=0.5]", "num_classes=10"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["model"] == "baseline" and line["num_classes"] == 10
    assert line["params"] == count_parameters(AttentionReIDNet(10, width=0.5))
    assert main(["model=intra_intre"]) == 2
    assert "config group 'model' has no option 'intra_intre'" in capsys.readouterr().err
