"""`python -m ecad.configs [--frames 17,33,81]`: the full-size architectures on the meta device.

One line per published config: parameters (meta model / model card), MACs of one denoising step
for one image (one video) at the pipeline's default setting, every transformer call of the step
included, and the cacheable share (the components' MACs over the step's). Video configs also at
each `--frames` count.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from . import Architecture, architecture_names, get_architecture


@dataclass(frozen=True)
class StepCost:
    architecture: str
    num_frames: int | None
    tokens: int  # image (video) tokens one call sees
    step_macs: int  # one denoising step, all its transformer calls
    cacheable_share: float  # components / everything the step computes

    @property
    def label(self) -> str:
        return self.architecture + (f" @ {self.num_frames} frames" if self.num_frames else "")


def step_cost(architecture: Architecture, num_frames: int | None = None) -> StepCost:
    """`StepCost` of `architecture` at its pipeline's default size and guidance."""
    from ecad.adapters import get_adapter
    from ecad.cost import CostTable

    transformer = architecture.shared_meta_transformer()
    adapter = get_adapter(transformer)
    height, width = architecture.default_size
    kw = architecture.shape(height, width, architecture.default_guidance_scale, num_frames=num_frames)
    table = CostTable(
        component=adapter.component_macs(transformer, **kw),
        block_other=adapter.block_linear_macs(transformer, **kw) + adapter.block_elementwise_ops(transformer, **kw),
        other=int(adapter.other_macs(transformer, **kw)), component_elements=None, block_elements=None)
    per_call = int(table.component.sum()) + int(table.block_other.sum()) + table.other
    tokens = adapter.num_tokens(transformer, height=height, width=width, vae_scale_factor=kw["vae_scale_factor"],
                                **({"num_frames": kw["num_frames"]} if "num_frames" in kw else {}))
    return StepCost(architecture.name, kw.get("num_frames"), tokens,
                    per_call * architecture.transformer_calls(architecture.default_guidance_scale),
                    int(table.component.sum()) / per_call)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecad.configs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", default="17,33,81", help="video frame counts besides the default (default %(default)s)")
    args = parser.parse_args(argv)
    frames = [int(f) for f in args.frames.split(",") if f.strip()]
    print(f"{'architecture':<42} {'params (card)':>15} {'tokens':>7} {'TMACs/step':>11} {'cacheable':>9}")
    for name in architecture_names():
        arch = get_architecture(name)
        params = sum(p.numel() for p in arch.shared_meta_transformer().parameters())
        card = f"{params / 1e9:.2f}B" + (f" ({arch.published_parameters / 1e9:g}B)" if arch.published_parameters else "")
        counts = [None] if arch.default_num_frames is None else sorted({*frames, arch.default_num_frames})
        for count in counts:
            cost = step_cost(arch, count)
            print(f"{cost.label:<42} {card:>15} {cost.tokens:>7} {cost.step_macs / 1e12:>11.2f} {cost.cacheable_share:>9.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
