"""The command-line tools beside training: ablation report, ONNX export, benchmark, model summary, keypoints, regions.

Each is a console script (``reid-report``, ``reid-export``, ``reid-bench``, ``reid-summary``,
``reid-extract-pose``) or a module run with ``python -m`` (``reid.tools.regions``,
``reid.tools.options_doc``) whose options are ``key=value`` arguments composed by Hydra into the
tool's typed dataclass (:func:`reid.conf.tool.run_tool`).
"""
