import json

import numpy as np
import pytest

from ecad.schedule import BlockGroup, BlockLayout, CacheSchedule, ScheduleError

PIXART = BlockLayout((BlockGroup("transformer_blocks", 28, ("attn1", "attn2", "ff")),))
FLUX = BlockLayout((BlockGroup("transformer_blocks", 19, ("attn", "ff", "ff_context")),
                    BlockGroup("single_transformer_blocks", 38, ("attn", "proj_mlp", "proj_out"))))


def random_schedule(layout, steps=20, seed=0):
    mask = np.random.default_rng(seed).random((steps, layout.num_blocks, layout.num_components)) < 0.4
    mask[0] = True
    return CacheSchedule(mask, layout)


@pytest.mark.parametrize("layout", [PIXART, FLUX])
def test_json_round_trip_is_exact_and_compact(layout):
    s = random_schedule(layout)
    text = s.to_json()
    back = CacheSchedule.from_json(text)
    assert back == s and back.hash == s.hash and back.layout == layout
    assert np.array_equal(back.mask, s.mask) and back.mask.dtype == bool
    assert len(text) < s.mask.size  # packed bits, not one JSON boolean per entry
    data = json.loads(text)
    assert data["version"] == 1 and data["shape"] == list(s.shape)


def test_layout_accessors():
    assert FLUX.num_blocks == 57 and FLUX.num_components == 3
    assert FLUX.component_names(18) == ("attn", "ff", "ff_context")
    assert FLUX.component_names(19) == ("attn", "proj_mlp", "proj_out")
    assert FLUX.block_ranges()["single_transformer_blocks"] == range(19, 57)
    assert BlockLayout.from_dict(FLUX.to_dict()) == FLUX
    with pytest.raises(ScheduleError, match="same number of components"):
        BlockLayout((BlockGroup("a", 1, ("x",)), BlockGroup("b", 1, ("x", "y"))))


def test_hash_is_stable_and_distinguishes():
    a, b = random_schedule(PIXART, seed=1), random_schedule(PIXART, seed=2)
    assert a.hash == random_schedule(PIXART, seed=1).hash and a.hash != b.hash
    assert len(a.hash) == 64 and len({a, b, random_schedule(PIXART, seed=1)}) == 2
    # same bits, different layout -> different id
    other = BlockLayout((BlockGroup("transformer_blocks", 28, ("attn1", "attn2", "mlp")),))
    assert CacheSchedule(a.mask, other).hash != a.hash


def test_immutable():
    s = CacheSchedule.full(PIXART, 4)
    with pytest.raises(ValueError):
        s.mask[1, 0, 0] = False
    source = np.ones((4, 28, 3), bool)
    t = CacheSchedule(source, PIXART)
    source[1] = False
    assert t.mask.all()


def test_validation_messages():
    CacheSchedule.full(PIXART, 5).validate(layout=PIXART, num_steps=5)
    with pytest.raises(ScheduleError, match="does not match its layout"):
        CacheSchedule(np.ones((5, 27, 3), bool), PIXART).validate()
    with pytest.raises(ScheduleError, match="3-D"):
        CacheSchedule(np.ones((5, 28), bool), PIXART).validate()
    with pytest.raises(ScheduleError, match="made for layout"):
        CacheSchedule.full(PIXART, 5).validate(layout=FLUX)
    with pytest.raises(ScheduleError, match=r"resample\(7\)"):
        CacheSchedule.full(PIXART, 5).validate(num_steps=7)
    mask = np.ones((5, 28, 3), bool)
    mask[0, 3, 2] = False
    s = CacheSchedule(mask, PIXART)  # constructing does not fix or refuse it
    assert not s.mask[0, 3, 2]
    with pytest.raises(ScheduleError, match="step 0 must recompute.*block 3 component 'ff'"):
        s.validate()
    assert issubclass(ScheduleError, ValueError)


def test_from_dict_errors():
    good = CacheSchedule.full(PIXART, 3).to_dict()
    with pytest.raises(ScheduleError, match="version"):
        CacheSchedule.from_dict({**good, "version": 4})
    with pytest.raises(ScheduleError, match="bits"):
        CacheSchedule.from_dict({**good, "shape": [4, 28, 3]})
    with pytest.raises(ScheduleError, match="malformed"):
        CacheSchedule.from_dict({k: v for k, v in good.items() if k != "bits"})
    with pytest.raises(ScheduleError, match="not valid JSON"):
        CacheSchedule.from_json("{")


def test_resample_nearest_in_normalized_time():
    steps = np.array([1, 0, 1, 0, 1], bool)  # 5 steps
    s = CacheSchedule.from_step_mask(PIXART, steps)
    assert s.resample(5) is s
    up = s.resample(9)  # t_i = i/8 -> nearest of j/4: j = round(i/2)
    assert up.mask[:, 0, 0].tolist() == [steps[j] for j in np.rint(np.arange(9) / 2).astype(int)]
    down = s.resample(3)  # j = 0, 2, 4
    assert down.mask[:, 0, 0].tolist() == [True, True, True]
    for n in (1, 2, 7, 25, 50):
        r = random_schedule(FLUX, steps=20, seed=n).resample(n)
        assert r.num_steps == n and r.mask[0].all()
        r.validate()
    with pytest.raises(ScheduleError):
        s.resample(0)


# -- format v2: actions and the block-skip plane ----------------------------------------------

from ecad.paths import REPO_ROOT  # noqa: E402
from ecad.schedule import FORECAST, RECOMPUTE, REUSE  # noqa: E402


def action_schedule(layout, steps=20, seed=0):
    rng = np.random.default_rng(seed)
    actions = rng.choice([REUSE, RECOMPUTE, FORECAST], size=(steps, layout.num_blocks, layout.num_components))
    skip = rng.random((steps, layout.num_blocks)) < 0.2
    return CacheSchedule.repaired(actions, layout, skip)


def test_committed_v1_bank_loads_unchanged_with_the_same_ids():
    # the bundled model's first bank (reuse only, format v1), kept as it was committed
    bank = json.loads((REPO_ROOT / "tests/data/ecad-scenes-v1-bank.json").read_text())
    for entry in bank["entries"]:
        s = CacheSchedule.from_dict(entry["schedule"])
        assert s.is_reuse_only and s.to_dict() == entry["schedule"]  # written back byte for byte
        assert s.actions.dtype == np.int8 and np.array_equal(s.actions == RECOMPUTE, s.mask)
        if entry["id"].startswith("ecad-"):
            assert s.hash.startswith(entry["id"].rsplit("-", 1)[1])  # bank ids carry the v1 hash
    # a v1 hash pinned: packbits of the mask after the shape/layout header, as before actions existed
    assert CacheSchedule.full(PIXART, 20).hash == CacheSchedule.from_actions(
        np.ones((20, 28, 3), np.int8), PIXART).hash


@pytest.mark.parametrize("layout", [PIXART, FLUX])
def test_v2_round_trip_is_exact_and_compact(layout):
    s = action_schedule(layout)
    s.validate()
    text = s.to_json()
    data = json.loads(text)
    assert data["version"] == 2 and not s.is_reuse_only
    back = CacheSchedule.from_json(text)
    assert back == s and back.hash == s.hash
    assert np.array_equal(back.actions, s.actions) and np.array_equal(back.skip, s.skip)
    assert len(data["actions"]) <= s.actions.size / 3 + 4  # two bits per action, base64 (4/3 chars per byte)
    # the same recompute mask with reuse elsewhere is a different schedule with a v1 hash
    reuse = CacheSchedule(s.mask, layout)
    assert reuse != s and reuse.hash != s.hash and reuse.to_dict()["version"] == 1


def test_mask_is_recompute_outside_skipped_blocks():
    actions = np.ones((3, 28, 3), np.int8)
    actions[1, 0] = [REUSE, FORECAST, RECOMPUTE]
    skip = np.zeros((3, 28), bool)
    skip[2, 5] = True
    s = CacheSchedule.from_actions(actions, PIXART, skip)
    assert s.mask[1, 0].tolist() == [False, False, True]
    assert not s.mask[2, 5].any() and s.actions[2, 5].tolist() == [REUSE] * 3  # canonical under a skip
    assert s.mask.sum() == 3 * 28 * 3 - 2 - 3
    with pytest.raises(ScheduleError, match="integer codes"):
        CacheSchedule.from_actions(np.ones((3, 28, 3), bool), PIXART)


def test_impossible_actions_are_named():
    def refused(actions, skip=None, match=""):
        with pytest.raises(ScheduleError, match=match):
            CacheSchedule.from_actions(actions, PIXART, skip).validate()

    ones = np.ones((5, 28, 3), np.int8)
    a = ones.copy()
    a[0, 4, 1] = REUSE
    refused(a, match=r"step 0 must recompute.*step 0 block 4 component 'attn2' \(reuse\)")
    a = ones.copy()
    a[2, 7, 2] = FORECAST
    a[1, 7, 2] = REUSE
    refused(a, match="forecast at step 2 block 7 component 'ff' needs two earlier recomputed outputs, but only 1")
    a = ones.copy()
    a[2, 7, 2] = FORECAST
    skip = np.zeros((5, 28), bool)
    skip[1, 7] = True  # a skipped block computes nothing
    refused(a, skip, match="forecast at step 2 block 7 component 'ff'")
    skip = np.zeros((5, 28), bool)
    skip[0, 9] = True
    refused(ones, skip, match="step 0 block 9 is skipped")
    a = ones.copy()
    a[3, 1, 0] = 5
    refused(a, match="unknown action code 5 at step 3 block 1 component 'attn1'")
    a = ones.copy()
    a[2, 7, 2] = FORECAST  # two recomputes before it: fine
    CacheSchedule.from_actions(a, PIXART).validate()


def test_resample_keeps_actions_and_skip():
    s = action_schedule(FLUX, steps=20, seed=4)
    r = s.resample(10)
    idx = np.rint(np.arange(10) / 9 * 19).astype(int)
    assert np.array_equal(r.actions, s.actions[idx]) and np.array_equal(r.skip, s.skip[idx])


# -- genes for the search ---------------------------------------------------------------------

from ecad.search.genome import GeneSpace  # noqa: E402


@pytest.mark.parametrize("layout", [PIXART, FLUX])
def test_genes_round_trip_and_allowed_values(layout):
    space = GeneSpace(layout, 20)
    s = action_schedule(layout, seed=3)
    genes = space.to_genes(s)
    assert genes.dtype == np.int64 and genes.shape == (space.num_genes,)
    assert space.num_genes == 19 * layout.num_blocks * (layout.num_components + 1)
    assert space.from_genes(genes) == s
    allowed = space.allowed_values()
    assert len(allowed) == space.num_genes and all(g in a for g, a in zip(genes, allowed))
    low, high = space.bounds()
    assert (low == 0).all() and set(high.tolist()) == {1, 2}


def test_any_genome_decodes_to_a_valid_schedule():
    space = GeneSpace(PIXART, 8)
    rng = np.random.default_rng(0)
    low, high = space.bounds()
    for _ in range(20):
        s = space.from_genes(rng.integers(low, high + 1))
        s.validate(layout=PIXART, num_steps=8)
    # a forecast at step 1 has only step 0 before it: decoded as a reuse
    genes = np.ones(space.num_genes, np.int64)
    genes[0] = FORECAST
    genes[space.num_action_genes:] = 0
    assert space.from_genes(genes).actions[1, 0, 0] == REUSE


def test_v1_gene_space_is_the_mask():
    space = GeneSpace(PIXART, 20, actions=(REUSE, RECOMPUTE), block_skip=False)
    s = random_schedule(PIXART)
    assert np.array_equal(space.to_genes(s), s.mask[1:].ravel())
    assert space.from_genes(space.to_genes(s)).hash == s.hash
    with pytest.raises(ScheduleError, match="forecast at step"):
        space.to_genes(action_schedule(PIXART, seed=1))


def test_skip_idle_blocks_skips_only_all_reused_blocks():
    s = random_schedule(PIXART, steps=6, seed=2)
    mask = s.mask.copy()
    mask[3, 4] = False
    mask[3, 5] = [False, True, False]
    t = CacheSchedule(mask, PIXART).skip_idle_blocks()
    t.validate()
    assert np.array_equal(t.skip, ~mask.any(axis=2)) and t.skip[3, 4] and not t.skip[3, 5]
    assert np.array_equal(t.mask, mask)  # the same components run
