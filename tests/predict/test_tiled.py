"""Tiling, blending windows, per-tile seeds and streaming stitching."""

from __future__ import annotations

import numpy as np
import pytest

from diffst.geometry import GeometryError
from diffst.inference.tiled import (
    TileAccumulator,
    blend_window,
    iter_batches,
    tile_origins,
    tile_seeds,
    tile_stride,
)


def test_stride_is_multiple_of_factor_and_overlap_at_least_requested() -> None:
    assert tile_stride(32, 8, 4) == 24
    assert tile_stride(32, 10, 4) == 20  # rounded down: realised overlap 12 ≥ 10
    assert tile_stride(32, None, 4) == 24  # default overlap P // 4
    assert tile_stride(8, 7, 4) == 4  # never below one LR cell
    with pytest.raises(GeometryError, match="smaller than the patch"):
        tile_stride(16, 16, 4)


def test_origins_cover_every_tissue_bin_and_skip_empty_tiles() -> None:
    tissue = np.zeros((50, 70), dtype=bool)
    tissue[5:20, 3:30] = True
    tissue[45:50, 65:70] = True
    origins = tile_origins(tissue, patch=16, stride=12)
    covered = np.zeros_like(tissue)
    for r, c in origins:
        covered[r : r + 16, c : c + 16] = True
    assert covered[tissue].all()
    # every kept tile holds tissue, and the empty middle of the section has no tile
    for r, c in origins:
        assert tissue[r : r + 16, c : c + 16].any()
    assert len(origins) < len(np.arange(0, 50, 12)) * len(np.arange(0, 70, 12))
    assert (origins % 12 == 0).all()


def test_origins_of_grid_smaller_than_patch() -> None:
    origins = tile_origins(np.ones((5, 7), dtype=bool), patch=16, stride=8)
    np.testing.assert_array_equal(origins, [[0, 0]])
    assert tile_origins(np.zeros((5, 7), dtype=bool), 16, 8).shape == (0, 2)


def test_cosine_window_is_smooth_positive_and_peaks_in_the_centre() -> None:
    w = blend_window(8, "cosine")
    assert w.shape == (8, 8)
    assert w.min() > 0
    np.testing.assert_allclose(w.min(), np.sin(np.pi / 16) ** 4)
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[3, 3] == w.max()
    np.testing.assert_array_equal(blend_window(4, "uniform"), np.ones((4, 4)))
    with pytest.raises(ValueError, match="unknown blend window"):
        blend_window(4, "gauss")


@pytest.mark.parametrize("kind", ["cosine", "uniform"])
def test_stitching_a_known_field_is_exact(kind: str) -> None:
    rng = np.random.default_rng(0)
    h, w, patch, stride = 37, 53, 16, 12
    field = rng.normal(size=(2, 3, h, w))
    tissue = np.ones((h, w), dtype=bool)
    origins = tile_origins(tissue, patch, stride)
    acc = TileAccumulator((2, 3), (h, w), blend_window(patch, kind), dtype=np.float64)
    padded = np.pad(field, ((0, 0), (0, 0), (0, patch), (0, patch)), constant_values=1e9)
    for batch in iter_batches(len(origins), 3):
        for r, c in origins[batch]:
            acc.add((r, c), padded[..., r : r + patch, c : c + patch])
    assert acc.covered().all()
    np.testing.assert_allclose(acc.result(), field, rtol=0, atol=1e-12)


def test_stitching_weights_and_uncovered_bins() -> None:
    acc = TileAccumulator((1,), (6, 6), np.ones((4, 4)))
    acc.add((0, 0), np.full((1, 4, 4), 2.0))
    acc.add((0, 2), np.full((1, 4, 4), 4.0))
    out = acc.result()
    np.testing.assert_allclose(out[0, 0, :2], 2.0)
    np.testing.assert_allclose(out[0, 0, 2:4], 3.0)  # mean of the two overlapping tiles
    np.testing.assert_allclose(out[0, 0, 4:6], 4.0)
    assert np.isnan(out[0, 5]).all()  # rows 4, 5 never covered
    with pytest.raises(ValueError, match="expected"):
        acc.add((0, 0), np.zeros((1, 3, 3)))
    with pytest.raises(GeometryError, match="outside the grid"):
        acc.add((6, 0), np.zeros((1, 4, 4)))


def test_merging_accumulators_equals_one_accumulator() -> None:
    rng = np.random.default_rng(1)
    tiles = [((r, c), rng.normal(size=(1, 8, 8))) for r in (0, 4, 8) for c in (0, 4)]
    win = blend_window(8)
    one = TileAccumulator((1,), (16, 12), win, dtype=np.float64)
    a = TileAccumulator((1,), (16, 12), win, dtype=np.float64)
    b = TileAccumulator((1,), (16, 12), win, dtype=np.float64)
    for k, (o, t) in enumerate(tiles):
        one.add(o, t)
        (a if k % 2 else b).add(o, t)
    a.merge(b)
    np.testing.assert_allclose(a.result(), one.result())


def test_tile_seeds_depend_only_on_seed_and_tile() -> None:
    assert tile_seeds(0, 5, 4) == tile_seeds(0, 5, 4)
    assert tile_seeds(0, 5, 4) != tile_seeds(0, 6, 4)
    assert tile_seeds(0, 5, 4) != tile_seeds(1, 5, 4)
    assert len(set(tile_seeds(3, 0, 8))) == 8
    assert [list(b) for b in iter_batches(5, 2)] == [[0, 1], [2, 3], [4]]


def _tiles_on_a_line() -> tuple[np.ndarray, list[np.ndarray]]:
    """Three overlapping 8-bin tiles on a 8×16 grid, each a constant (its own index + 1)."""
    origins = np.array([[0, 0], [0, 4], [0, 8]])
    tiles = [np.full((2, 1, 8, 8), float(k + 1)) for k in range(3)]
    return origins, tiles


def test_central_channels_come_from_the_most_central_tile_in_any_order() -> None:
    origins, tiles = _tiles_on_a_line()
    results = []
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        acc = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
        for k in order:
            acc.add(origins[k], tiles[k], tile_index=k)
        results.append(acc.result())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    central = results[0][1, 0, 0]
    # column j is most central in the tile whose centre (origin + 3.5) is nearest; ties → lower
    centres = origins[:, 1] + 3.5
    expect = [
        1 + min(np.flatnonzero(np.abs(j - centres) == np.min(np.abs(j - centres)[  # covering
            (j >= origins[:, 1]) & (j < origins[:, 1] + 8)]))) for j in range(16)
    ]  # fmt: skip
    np.testing.assert_array_equal(central, expect)
    blended = results[0][0, 0, 0]
    assert np.all((blended > 1 - 1e-5) & (blended < 3 + 1e-5)) and np.unique(blended).size > 3


def test_merged_accumulators_equal_one_accumulator() -> None:
    """What torchrun ranks do: each sums its tiles, the central values of the winning rank stay."""
    origins, tiles = _tiles_on_a_line()
    one = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
    a = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
    b = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
    for k in range(3):
        one.add(origins[k], tiles[k], tile_index=k)
        (a if k != 1 else b).add(origins[k], tiles[k], tile_index=k)
    a.merge(b)
    np.testing.assert_allclose(a.result(), one.result())


def _ddp_rank(rank: int, init: str, queue: object) -> None:
    import torch.distributed as dist

    from diffst.inference.tiled import reduce_to_rank0

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)

    class Env:
        device = "cpu"
        is_main = rank == 0

    origins, tiles = _tiles_on_a_line()
    acc = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
    for k in range(rank, 3, 2):  # round-robin like predict's ranks
        acc.add(origins[k], tiles[k], tile_index=k)
    reduce_to_rank0(acc, Env())
    if rank == 0:
        queue.put(acc.result())  # type: ignore[attr-defined]
    dist.destroy_process_group()


def test_reduce_to_rank0_matches_one_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_ddp_rank, args=(r, init, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = queue.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    origins, tiles = _tiles_on_a_line()
    one = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
    for k in range(3):
        one.add(origins[k], tiles[k], tile_index=k)
    np.testing.assert_allclose(got, one.result())


def test_select_tiles_keeps_tiles_touching_the_region() -> None:
    from diffst.inference.tiled import select_tiles

    origins = np.array([[0, 0], [0, 8], [8, 0], [8, 8]])
    region = np.zeros((16, 16), bool)
    region[9, 3] = True
    assert select_tiles(origins, 8, region).tolist() == [2]
    region[7, 7] = True
    assert select_tiles(origins, 8, region).tolist() == [0, 2]


def test_central_samples_keep_one_tiles_samples_per_bin() -> None:
    from diffst.inference.tiled import CentralSamples

    origins, tiles = _tiles_on_a_line()
    box = CentralSamples(2, 1, (0, 2), (8, 10), blend_window(8))
    for k in (2, 0, 1):
        box.add(origins[k], np.stack([tiles[k][0], -tiles[k][0]]), k)
    acc = TileAccumulator((2, 1), (8, 16), blend_window(8), central=(1,))
    for k in range(3):
        acc.add(origins[k], tiles[k], tile_index=k)
    np.testing.assert_array_equal(box.samples[0], acc.result()[1][:, :, 2:12])
    np.testing.assert_array_equal(box.samples[1], -box.samples[0])
