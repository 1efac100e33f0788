"""The command-line tools beside training: the ablation report, ONNX export, throughput benchmark, model summary.

Each is a console script (``reid-report``, ``reid-export``, ``reid-bench``, ``reid-summary``) whose
options are ``key=value`` arguments composed by Hydra into the tool's typed dataclass
(:func:`reid.conf.tool.run_tool`).
"""
