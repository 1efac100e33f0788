"""``python -m reid.tools.bench [benchmark] [key=value ...]``: the same as ``reid-bench``."""

from reid.tools.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
