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
        CacheSchedule.from_dict({**good, "version": 2})
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
