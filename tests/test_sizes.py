"""Every size a setting implies is estimated at load, before anything is allocated (dr_fdsl/memory.py); stored
indices are as wide as the counts they must hold; an out-of-range size is named itself, not a key it breaks."""

import numpy as np
import pytest
import torch

from dr_fdsl import memory
from dr_fdsl.config import BankConfig, SVD2DConfig, load_config
from dr_fdsl.errors import ConfigError
from dr_fdsl.families.svd2d import generator as svd2d_family

QUICK = ["renderer.image_size=32", "renderer.points_per_pixel=4", "bank.num_classes=4", "bank.num_points=300",
         "model.name=test_vit", "train.batch_size=8"]
GIB = r"would need about [\d.]+ GiB, more than this machine's 16.0 GiB"


@pytest.fixture
def machine_of_16_gib(monkeypatch):
    """The estimates against a machine of 16 GiB, whatever this one has."""
    monkeypatch.setattr(memory, "machine_memory", lambda: 16 * 2**30)


# Every estimate comes from the config alone: nothing is built. random_layers=12 is the case that the kernel
# killed at 24 GB with no message; the num_points cases fit the bank's tables (11-13 GB) but not the family's own
# generation buffers.
@pytest.mark.parametrize("overrides, key", [
    (["renderer.mode=match", "match.dataset=fashion_mnist", "match.random_layers=12"], "match.random_layers"),
    (["renderer.mode=match", "match.dataset=fashion_mnist", "match.random_channels=100000"], "match.random_layers"),
    (["bank.family=svd2d", "bank.svd2d.max_maps=10000000000"], "bank.svd2d.max_maps"),
    (["bank.family=svd2d", "bank.svd2d.canvas=1000000"], "bank.svd2d.canvas"),
    (["bank.family=ifs3d", "bank.ifs3d.max_maps=10000000"], "bank.ifs3d.max_maps"),
    (["bank.family=ifs3d", "bank.num_points=120000000"], "bank.num_points"),
    (["bank.family=visualatom", "bank.visualatom.vertex_num_max=100000000000"], "bank.visualatom.vertex_num_max"),
    (["bank.family=visualatom", "bank.visualatom.line_num_max=1000000000000"], "bank.visualatom.line_num_max"),
    (["bank.family=fractaldb", "bank.fractaldb.search_points=100000000000"], "bank.fractaldb.search_points"),
    (["bank.family=ofdb", "bank.num_points=100000000"], "bank.num_points"),
    (["renderer.image_size=100000"], "renderer.image_size"),
    (["renderer.augment.add_global=100000000000"], "renderer.augment.add_global"),
    (["renderer.augment.add_local=100000000000"], "renderer.augment.add_local"),
    (["renderer.color_init=palette", "renderer.palette_size=100000000000"], "renderer.palette_size"),
])
def test_a_size_past_the_machine_is_refused_at_load_naming_its_key(machine_of_16_gib, overrides, key):
    with pytest.raises(ConfigError, match=rf"^config key '{key}' \(.+\): {GIB}; "):
        load_config(None, QUICK + overrides)


def test_the_estimates_admit_the_shipped_sizes_and_grow_as_the_buffers_do(machine_of_16_gib):
    from dr_fdsl.match import random_feature_bytes

    load_config(None, QUICK + ["renderer.mode=match", "match.dataset=fashion_mnist"])
    load_config(None, ["bank.family=visualatom"])  # 1,000 categories of 10,000 points, published orbits
    # 12 layers of 16 doubling channels hold 24 GB of float32 weights (the kernel's kill at 24 GB); the estimate
    # is those weights plus the (small, at 32 px) activations, and it grows 4x per layer as the weights do
    weights = sum(16 * 2**i * (3 if i == 0 else 16 * 2 ** (i - 1)) * 9 * 4 for i in range(12))
    assert weights <= random_feature_bytes(12, 16, 32, 72) < 1.1 * weights
    assert 3.5 < random_feature_bytes(12, 16, 32, 72) / random_feature_bytes(11, 16, 32, 72) < 4.5


def test_the_refusal_says_how_much_and_against_what(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: 2**30)
    with pytest.raises(ConfigError) as err:
        memory.need_bytes("bank.svd2d.canvas", 3 * 2**30, "a density image")
    assert str(err.value) == ("config key 'bank.svd2d.canvas' (a density image): would need about 3.0 GiB, more "
                              "than this machine's 1.0 GiB; lower it")
    memory.need_bytes("bank.svd2d.canvas", 2**30, "a density image")  # what fits passes


def test_corruption_counts_are_checked_against_the_bank_at_load():
    # drop_local >= num_points used to pass load and fail after the bank was built
    with pytest.raises(ConfigError, match=r"'renderer.augment.drop_local': 100000 points would empty clouds of "
                                          r"bank.num_points=2000"):
        load_config(None, QUICK + ["bank.num_points=2000", "renderer.augment.drop_local=100000"])
    load_config(None, QUICK + ["bank.num_points=2000", "renderer.augment.drop_local=500"])


@pytest.mark.parametrize("override, key", [
    ("renderer.image_size=0", "renderer.image_size"),  # was reported as image_aug.distortion.grid_steps
    ("renderer.image_size=-32", "renderer.image_size"),
    ("bank.num_classes=0", "bank.num_classes"),
    ("bank.num_points=0", "bank.num_points"),
    ("bank.num_points=-1", "bank.num_points"),
    ("renderer.points_per_pixel=0", "renderer.points_per_pixel"),
    ("train.batch_size=0", "train.batch_size"),
    ("image_aug.distortion.grid_steps=0", "image_aug.distortion.grid_steps"),
])
def test_an_out_of_range_size_is_named_itself(override, key):
    # views_per_category reads bank.num_classes, patch_size and grid_steps read renderer.image_size: the size's
    # own check must come first
    with pytest.raises(ConfigError, match=rf"^config key '{key}': "):
        load_config(None, QUICK + ["model.patch_size=4", "data.views_per_category=2", override])


def test_index_dtype_holds_the_count():
    assert [memory.index_dtype(n) for n in (1, 256, 257, 2**15, 2**15 + 1, 2**31 + 1)] == [
        torch.uint8, torch.uint8, torch.int16, torch.int16, torch.int32, torch.int64]
    assert memory.index_dtype(300, "numpy") is np.int16


def test_svd2d_stores_map_indices_past_255():
    # 600 maps: the chaos game reaches maps above 255, which uint8 stored as other maps (map_jitter replays them)
    cfg = BankConfig(family="svd2d", num_classes=1, num_points=3000, seed=0, cache_dir="unused",
                     svd2d=SVD2DConfig(min_maps=600, max_maps=600))
    out = svd2d_family.generate(cfg)
    parts, seed = svd2d_family.draw_category(0, 0, 600, 600, 1.0)
    _, chosen = svd2d_family.chaos_games([parts["system"]], [seed], 3000)
    assert chosen.max() > 255
    assert out.params["maps"].dtype == torch.int16
    np.testing.assert_array_equal(out.params["maps"][0].long().numpy(), chosen[0])
    # the published sizes keep their compact uint8 (and the cached banks' layout)
    small = svd2d_family.generate(BankConfig(family="svd2d", num_classes=2, num_points=50, cache_dir="unused"))
    assert small.params["maps"].dtype == torch.uint8


def test_the_step_is_checked_against_the_gpu_once_the_device_is_known(monkeypatch):
    from dr_fdsl.config import validate_device

    cfg = load_config(None, QUICK + ["renderer.image_size=1536"])  # 2.3 GiB of fragments and images
    monkeypatch.setattr(memory, "device_memory", lambda device=None: 2**30 if device is not None else 2**40)
    validate_device(cfg, torch.device("cpu"), autocast=False)  # a CPU run was checked at load
    with pytest.raises(ConfigError, match=r"^config key 'renderer.image_size' \(1536 px, .*\): would need about "
                                          r"[\d.]+ GiB, more than the 1.0 GiB of GPU cuda:0; lower"):
        validate_device(cfg, torch.device("cuda", 0), autocast=True)


def test_an_ofdb_file_with_more_maps_than_the_family_stores_is_refused(tmp_path):
    from dr_fdsl.errors import BankError
    from dr_fdsl.families.ofdb import generator as ofdb

    rows = np.full((8, 13), 0.1)
    rows[:, 12] = 1 / 8  # 8 contractive maps, probabilities summing to 1
    np.savetxt(tmp_path / "000000.csv", rows, delimiter=",")
    cfg = BankConfig(family="ofdb", num_classes=1, num_points=50, cache_dir="unused")
    cfg.ofdb.source = str(tmp_path)
    with pytest.raises(BankError, match=r"category 0 has 8 maps, more than the 7 of the published search"):
        ofdb.generate(cfg)  # was a shape-mismatch traceback after the cloud was made


def test_a_cached_svd2d_bank_with_wrapped_map_indices_is_refused(tmp_path):
    """A cache file written before indices were widened keeps its name (same settings), so it is refused by what it
    holds: uint8 indices for more than 256 maps."""
    from dr_fdsl.bank import PointBank, bank_from_config, cache_path, save_bank
    from dr_fdsl.config import content_settings
    from dr_fdsl.errors import BankCacheError

    cfg = BankConfig(family="svd2d", num_classes=1, num_points=3000, seed=0, cache_dir=str(tmp_path),
                     svd2d=SVD2DConfig(min_maps=600, max_maps=600))
    bank = bank_from_config(cfg)  # today's: int16, and read back as it is
    assert bank_from_config(cfg).params["maps"].dtype == torch.int16
    old = {**bank.params, "maps": bank.params["maps"].to(torch.uint8)}  # what the earlier code wrote
    save_bank(PointBank(bank.points, old, content_settings(cfg), bank.draws), cache_path(cfg))
    with pytest.raises(BankCacheError, match=r"map indices are torch.uint8, which cannot hold the 600 maps .*rebuild"):
        bank_from_config(cfg)
