"""Which steps does diffusers' FirstBlockCache compute on the bundled model, and how good is a
static copy of that pattern? (docs/calibration.md, "Early-skip patterns")

    python scripts/fbc_pattern.py --thresholds 0.1 0.15 0.186
    python scripts/fbc_pattern.py --thresholds --static 1,2,3,5,7,9,11,13,15,17:1 1,2,3,4,5,7,9,11,13,15,17:0

For each threshold: FirstBlockCache (diffusers' own hook + ecad-bench's cache-context shim) runs
one image at a time over the calibration prompts x seeds; a step counts as computed when the
second block ran. Printed: the share of images computing each step, and FirstBlockCache's PSNR on
the held-out prompts x seeds (one image at a time). Each ``--static STEPS:KEPT`` is a static
schedule skipping every block from ``KEPT`` on at ``STEPS``: its held-out PSNR and MACs speedup.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ecad.adapters import get_adapter
from ecad.bench.competitors import apply_diffusers_cache, install_shim, remove_diffusers_cache, remove_shim
from ecad.cost import macs_speedup
from ecad.generate import generate, load_pipeline
from ecad.paths import DEFAULT_MODEL
from ecad.quality.fidelity import psnr_per_image
from ecad.quality.prompts import prompt_set
from ecad.schedule import CacheSchedule
from ecad.setting import Setting


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.1, 0.15, 0.186])
    p.add_argument("--static", nargs="*", default=[], metavar="STEPS:KEPT")
    p.add_argument("--prompts", type=int, default=8)
    args = p.parse_args()
    from diffusers.hooks import FirstBlockCacheConfig

    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    setting = Setting(32, 32, 20, 4.5)
    items = {split: [(q, s) for q in prompt_set(args.model, args.prompts, split) for s in (0, 1)]
             for split in ("calibration", "held-out")}
    held = items["held-out"]
    reference = generate(pipe, [q for q, _ in held], [s for _, s in held], setting)
    block_runs: list[int] = []
    pipe.transformer.transformer_blocks[1].attn1.register_forward_pre_hook(lambda m, a: block_runs.append(1))

    def fbc(threshold: float, split: str):
        apply_diffusers_cache(pipe.transformer, FirstBlockCacheConfig(threshold=threshold))
        install_shim(pipe)
        patterns, images = [], []
        try:
            for prompt, seed in items[split]:
                calls: list[int] = []
                hook = pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append(len(block_runs)))
                images.append(generate(pipe, [prompt], [seed], setting))
                hook.remove()
                calls.append(len(block_runs))
                patterns.append([b > a for a, b in zip(calls, calls[1:])])
        finally:
            remove_shim(pipe)
            remove_diffusers_cache(pipe.transformer)
        return np.array(patterns), torch.cat(images)

    for threshold in args.thresholds:
        patterns, _ = fbc(threshold, "calibration")
        _, images = fbc(threshold, "held-out")
        psnr = psnr_per_image(images, reference, 100).mean().item()
        print(f"FirstBlockCache {threshold}: share computing each step {np.round(patterns.mean(0), 2).tolist()}; "
              f"held-out PSNR {psnr:.2f} dB (one image at a time)")
    layout = get_adapter(pipe).layout(pipe.transformer)
    for spec in args.static:
        steps, kept = spec.split(":")
        skip = np.zeros((20, layout.num_blocks), bool)
        skip[[int(t) for t in steps.split(",")], int(kept):] = True
        schedule = CacheSchedule.from_actions(np.ones((20, layout.num_blocks, layout.num_components), np.int8), layout, skip)
        images = generate(pipe, [q for q, _ in held], [s for _, s in held], setting, schedule)
        print(f"static skip of steps {steps} from block {kept}: held-out PSNR "
              f"{psnr_per_image(images, reference, 100).mean().item():.2f} dB, "
              f"MACs {macs_speedup(pipe, setting, schedule):.2f}x")


if __name__ == "__main__":
    main()
