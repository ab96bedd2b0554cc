"""torch.compile with cache schedules: components compiled before the hooks, so switching
schedules adds no graph and recompiles nothing; output equals eager."""

import pytest
import torch
from torch._dynamo.utils import counters

from ecad.adapters import get_adapter
from ecad.compile import compile_pipeline, decompile_pipeline, is_compiled
from ecad.generate import generate, load_pipeline
from ecad.heuristics import fora
from ecad.hooks import apply_cache_schedule, remove_cache_schedule
from ecad.setting import Setting
from engine_helpers import SIZE, tiny_dir

STEPS = 6
SETTING = Setting(SIZE, SIZE, STEPS, 4.5)
PROMPTS = ["a red apple"]


def compiled_frames() -> int:
    return counters["frames"]["total"]


def run_schedules(pipe, schedules):
    return {n: generate(pipe, PROMPTS, [0], SETTING, s) for n, s in schedules.items()}


@pytest.mark.parametrize("kind", ["pixart-alpha", "flux"])
def test_switching_schedules_adds_no_graph(kind, tmp_path_factory):
    pipe = load_pipeline(tiny_dir(tmp_path_factory, kind))
    layout = get_adapter(pipe).layout(pipe.transformer)
    schedules = {"fora-2": fora(layout, STEPS, 2), "fora-3": fora(layout, STEPS, 3), "none": None}
    eager = run_schedules(pipe, schedules)
    torch._dynamo.reset()
    counters.clear()
    # aot_eager: Dynamo's tracing and guards, which decide recompilation, without a C++ build
    assert compile_pipeline(pipe, backend="aot_eager") == sum(map(len, get_adapter(pipe).component_modules(pipe.transformer)))
    assert is_compiled(pipe)
    generate(pipe, PROMPTS, [0], SETTING, schedules["fora-2"])
    graphs, frames = counters["stats"]["unique_graphs"], compiled_frames()
    assert 1 <= graphs <= 6 and frames == graphs  # one graph per component kind/shape, none per step
    compiled = run_schedules(pipe, schedules)
    assert compiled_frames() == frames and counters["stats"]["unique_graphs"] == graphs
    for name in schedules:
        torch.testing.assert_close(compiled[name], eager[name], atol=1e-5, rtol=0)
    decompile_pipeline(pipe)
    assert not is_compiled(pipe)
    torch.testing.assert_close(generate(pipe, PROMPTS, [0], SETTING, schedules["fora-3"]), eager["fora-3"],
                               atol=0, rtol=0)


def test_compiling_after_hooks_is_refused_and_would_recompile(tmp_path_factory):
    pipe = load_pipeline(tiny_dir(tmp_path_factory, "pixart-alpha"))
    layout = get_adapter(pipe).layout(pipe.transformer)
    apply_cache_schedule(pipe, fora(layout, STEPS, 2))
    with pytest.raises(RuntimeError, match="before a schedule is applied"):
        compile_pipeline(pipe)
    # The control: compiling the hooked blocks traces the hooks' decisions and recompiles per step.
    torch._dynamo.reset()
    counters.clear()
    for block in pipe.transformer.transformer_blocks:
        block.forward = torch.compile(block.forward, backend="aot_eager")
    with torch._dynamo.config.patch(recompile_limit=64):
        generate(pipe, PROMPTS, [0], SETTING, None)  # the applied schedule's hooks are still on
    print("frames compiled around the hooks:", compiled_frames())
    assert compiled_frames() > 2 * STEPS
    remove_cache_schedule(pipe)


@pytest.mark.slow
def test_inductor_output_matches_eager(tmp_path_factory):
    pipe = load_pipeline(tiny_dir(tmp_path_factory, "pixart-alpha"))
    layout = get_adapter(pipe).layout(pipe.transformer)
    schedules = {"fora-2": fora(layout, STEPS, 2), "fora-3": fora(layout, STEPS, 3)}
    eager = run_schedules(pipe, schedules)
    torch._dynamo.reset()
    counters.clear()
    compile_pipeline(pipe)
    compiled = run_schedules(pipe, schedules)
    assert counters["stats"]["unique_graphs"] == compiled_frames() <= 6
    for name in schedules:
        torch.testing.assert_close(compiled[name], eager[name], atol=1e-4, rtol=0)
