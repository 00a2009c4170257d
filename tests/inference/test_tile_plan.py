"""The overlap-tile plan (pipeline.inference.tile_plan): phase-aligned tiles that cover the image."""

from __future__ import annotations

from pipeline.inference import plan_tiles
from pipeline.model import output_size


def test_tile_plan_phase_aligned_and_covering():
    for depth in (2, 3, 4):
        for size in [(7,), (100,), (389,), (1000,)]:
            plan = plan_tiles(size, depth, (30,))
            assert output_size(plan.input_tile, depth) == plan.output_tile
            starts = plan.starts[0]
            assert all(s % 2**depth == 0 for s in starts)  # pooling phase preserved
            assert all(b - a <= plan.output_tile[0] for a, b in zip(starts, starts[1:]))  # no gaps
            assert starts[-1] + plan.output_tile[0] >= size[0]  # covers the image
            assert plan.padded_size[0] == starts[-1] + plan.input_tile[0]
