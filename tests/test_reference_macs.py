"""Our cost model against the MACs published with the ECAD paper's schedules, on full-size
meta-device transformers (no weights).

Without the attention matmuls our count equals theirs at every step of every file: PixArt α/Σ at
120 text tokens with CFG as a batch of 2; FLUX.1-dev at 512 text tokens with two evaluations of one
image per step; T-GATE with CFG dropped from the gate step on (their kernel does that)."""

import json
from pathlib import Path

import numpy as np
import pytest

from ecad.configs import get_architecture
from ecad.reference import read_reference, reference_layout, reference_macs
from ecad.setting import Setting

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference-schedules"
FILES = sorted(REFERENCE_DIR.rglob("*.json")) if REFERENCE_DIR.is_dir() else []


def architecture_for(path: Path) -> tuple[str, Setting]:
    config = json.loads(path.read_text()).get("config") or {}
    size = int(config.get("height", 256))
    if "flux" in str(path.relative_to(REFERENCE_DIR)):
        return "FLUX.1-dev", Setting(size, size, 20, 5.0)
    return ("PixArt-XL-2-1024-MS" if size == 1024 else "PixArt-XL-2-256x256"), Setting(size, size, 20, 4.5)


@pytest.mark.skipif(not FILES, reason="../shared/reference-schedules not present")
@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REFERENCE_DIR)))
def test_macs_without_attention_matmuls_equal_the_reference(path):
    name, setting = architecture_for(path)
    arch = get_architecture(name)
    ref = read_reference(path, reference_layout(arch))
    ours = reference_macs(arch, setting, ref.schedule, cfg_dropped_from=ref.cfg_dropped_from)
    assert len(ours) == len(ref.step_macs) == 20
    for step, (a, b) in enumerate(zip(ours, ref.step_macs)):
        assert abs(a - b) <= 1e-3 * b, f"step {step}: ours {a}, reference {b}"
    assert abs(sum(ours) - ref.total_macs) <= 1e-3 * ref.total_macs


def test_attention_matmuls_are_the_whole_difference_pixart():
    arch = get_architecture("PixArt-XL-2-256x256")
    with_mm, other = arch.step_macs(256, 256, 4.5, text_len=120)
    without, other2 = arch.step_macs(256, 256, 4.5, attention_matmuls=False, text_len=120)
    assert other == other2
    n, d, batch = 32 // 2 * 32 // 2, 1152, 2
    per_block = [2 * batch * n * n * d, 2 * batch * n * 120 * d, 0]  # QK^T + AV of attn1, attn2; ff none
    assert np.array_equal(with_mm - without, np.tile(per_block, (28, 1)))
    assert (with_mm - without).sum() == 12_419_334_144  # 12.42e9 per step, as measured from outside
    assert without.sum() + other == 285_689_806_848  # the reference file's per-step MACs at step 0


def test_flux_reference_counts_two_evaluations_per_step():
    """One FluxPipeline call per step at batch 1 (guidance is an embedding in FLUX.1-dev) is exactly
    half of what the source reports: it counted two evaluations of one image per step."""
    arch = get_architecture("FLUX.1-dev")
    component, other = arch.step_macs(256, 256, 5.0, attention_matmuls=False)
    assert arch.transformer_batch(5.0) == 1 and arch.max_sequence_length == 512
    assert 2 * (int(component.sum()) + other) == 9_934_575_501_312  # default_256x256_gs_5.json, every step
    with_mm, _ = arch.step_macs(256, 256, 5.0)
    seq = 256 + 512
    assert int((with_mm - component).sum()) == 57 * 2 * seq * seq * 3072  # joint attention over 768 tokens
