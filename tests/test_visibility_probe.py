"""scripts/visibility_probe.py's probes find visibility where it is planted, and nothing in noise (the
positive and negative controls behind its low figures on real checkpoints)."""

from __future__ import annotations

import torch
from conftest import load_script

from reid.metrics.truth import concordance


def shares(n: int, generator: torch.Generator) -> torch.Tensor:
    """Visible shares as the synthetic sets have them: most parts whole, the others partly hidden."""
    hidden = torch.rand(n, generator=generator) < 0.3
    return torch.where(hidden, 0.4 + 0.55 * torch.rand(n, generator=generator), torch.ones(n))


def test_the_ridge_probe_finds_a_planted_feature_and_nothing_in_noise() -> None:
    probe = load_script("visibility_probe")
    generator = torch.Generator().manual_seed(0)
    train_y, test_y = shares(600, generator), shares(300, generator)
    noise_train, noise_test = torch.randn(600, 64, generator=generator), torch.randn(300, 64, generator=generator)
    planted_train, planted_test = noise_train.clone(), noise_test.clone()
    planted_train[:, 5] += 20 * train_y
    planted_test[:, 5] += 20 * test_y
    found = probe.predict(probe.ridge(planted_train, train_y, 1000.0), planted_test).float()
    blind = probe.predict(probe.ridge(noise_train, train_y, 1000.0), noise_test).float()
    assert concordance(found, test_y) > 0.9
    assert abs(concordance(blind, test_y) - 0.5) < 0.1


def test_the_map_probe_learns_the_share_of_hidden_locations() -> None:
    probe = load_script("visibility_probe")
    generator = torch.Generator().manual_seed(1)

    def maps(y: torch.Tensor) -> torch.Tensor:
        # channel 2 marks the hidden locations of a 4 x 8 map, as many as the hidden share says
        x = torch.randn(len(y), 16, 4, 8, generator=generator)
        hidden_cells = torch.round((1 - y) * 32).long()
        order = torch.rand(len(y), 32, generator=generator).argsort(dim=1)
        marks = (order < hidden_cells[:, None]).float().view(len(y), 4, 8)
        x[:, 2] += 4 * marks
        return x

    train_y, test_y = shares(400, generator), shares(200, generator)
    fitted = probe.fit_map_probe(maps(train_y), train_y, hidden=0, epochs=200)
    assert concordance(probe.map_scores(fitted, maps(test_y)), test_y) > 0.9
