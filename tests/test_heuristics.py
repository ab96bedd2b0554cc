import numpy as np
import pytest

from ecad.heuristics import block_skip, component_fora, delta_dit, fora, heuristic_suite, no_cache, taylorseer, tgate
from ecad.schedule import BlockGroup, BlockLayout

PIXART = BlockLayout((BlockGroup("transformer_blocks", 6, ("attn1", "attn2", "ff")),))
FLUX = BlockLayout((BlockGroup("transformer_blocks", 2, ("attn", "ff", "ff_context")),
                    BlockGroup("single_transformer_blocks", 4, ("attn", "proj_mlp", "proj_out"))))


@pytest.mark.parametrize("layout", [PIXART, FLUX])
@pytest.mark.parametrize("steps", [5, 20])
def test_suite_is_valid_and_unique(layout, steps):
    suite = heuristic_suite(layout, steps)
    assert "no-cache" in suite and "fora-2" in suite
    assert len({s.hash for s in suite.values()}) == len(suite)
    for s in suite.values():
        s.validate(layout=layout, num_steps=steps)
    assert any(name.startswith("tgate") for name in suite) == (layout is PIXART)


def test_fora_pattern():
    assert no_cache(PIXART, 4).mask.all()
    m = fora(PIXART, 7, 3).mask
    assert m[:, 2, 1].tolist() == [True, False, False, True, False, False, True]
    assert (m == m[:, :1, :1]).all()


def test_component_fora_only_touches_named_components():
    m = component_fora(FLUX, 6, 2, ["attn"]).mask
    assert m[:, :, 1:].all()  # ff, ff_context, proj_mlp, proj_out: every step
    assert m[:, :, 0].T.tolist() == [[True, False] * 3] * FLUX.num_blocks
    with pytest.raises(ValueError, match="none of"):
        component_fora(FLUX, 6, 2, ["attn2"])


def test_delta_dit_caches_back_blocks_early_front_blocks_late():
    m = delta_dit(PIXART, 8, boundary=4, num_cached_blocks=2, interval=2).mask
    assert m[0].all()
    early, late = m[1:4], m[4:]
    assert early[:, :4].all() and not early[:, 4:].all()  # back blocks cached before the boundary
    assert late[:, 2:].all() and not late[:, :2].all()    # front blocks cached after it
    assert m[:, 5, 0].tolist() == [True, False, True, False, True, True, True, True]


def test_tgate_freezes_cross_attention_after_gate():
    m = tgate(PIXART, 6, gate_step=2).mask
    assert m[:, :, [0, 2]].all()
    assert m[:, 0, 1].tolist() == [True, True, False, False, False, False]
    with pytest.raises(ValueError, match="cross-attention"):
        tgate(FLUX, 6, 2)


def test_suite_keeps_v1_names_and_schedules_and_adds_actions():
    v1 = heuristic_suite(PIXART, 20, actions=False)
    full = heuristic_suite(PIXART, 20)
    assert all(full[name] == s for name, s in v1.items())  # existing names unchanged
    assert all(s.is_reuse_only for s in v1.values())
    added = set(full) - set(v1)
    assert {"taylorseer-2", "taylorseer-2-c14", "block-skip-3"} <= added
    assert all(not full[name].is_reuse_only for name in added)


def test_taylorseer_forecasts_between_fora_steps_until_cutoff():
    from ecad.schedule import FORECAST, RECOMPUTE, REUSE

    s = taylorseer(FLUX, 10, 3, cutoff=8)
    s.validate()
    col = s.actions[:, 4, 1].tolist()
    assert col == [RECOMPUTE, REUSE, REUSE, RECOMPUTE, FORECAST, FORECAST, RECOMPUTE, FORECAST, RECOMPUTE, RECOMPUTE]
    assert (s.actions == s.actions[:, :1, :1]).all()


def test_block_skip_runs_leading_blocks():
    s = block_skip(PIXART, 6, 2, leading_blocks=1)
    s.validate()
    assert not s.skip[:, 0].any()
    assert s.skip[:, 3].tolist() == [False, True, False, True, False, True]
    assert not s.mask[1, 1:].any() and s.mask[1, 0].all()
    with pytest.raises(ValueError, match="leading_blocks"):
        block_skip(PIXART, 6, 2, leading_blocks=6)


def test_block_skip_early_skip_pattern():
    # FirstBlockCache's recorded pattern on the bundled model at threshold 0.15: skip 1..3, then alternate
    s = block_skip(PIXART, 20, 2, early_skip=3)
    s.validate()
    runs = [t for t in range(20) if not s.skip[t].any()]
    assert runs == [0, 4, 6, 8, 10, 12, 14, 16, 18, 19]
    assert not s.skip[:, 0].any() and s.skip[1, 1:].all()
    every = block_skip(PIXART, 20, 2, leading_blocks=0, early_skip=3)
    assert every.skip[1].all() and (every.skip.any(axis=1) == s.skip.any(axis=1)).all()
    with pytest.raises(ValueError, match="early_skip"):
        block_skip(PIXART, 20, 2, early_skip=19)
    suite = heuristic_suite(PIXART, 20)
    assert suite["block-skip-2-e3"].hash == s.hash and suite["block-skip-2-e3-all"].hash == every.hash
    assert {"block-skip-3-e4", "block-skip-3-e5-all"} <= set(suite)
