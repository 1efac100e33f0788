"""The Hydra configs of `reid-train` and `reid-evaluate` (a package, so that Hydra finds them when installed)."""
