"""Score a checkpoint: `python evaluate.py ckpt_path=PATH [data=...]` (= `reid-evaluate`); writes metrics.json."""

from reid.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
