"""The heuristic bank of a published architecture: `ecad.heuristics.heuristic_suite` at its
pipeline's default setting, MACs counted on the meta-device transformer, quality unmeasured.

What ships for a family before anyone has calibrated it on real weights: FORA, component FORA,
Δ-DiT, T-GATE where there is cross-attention, TaylorSeer and static block skipping, each with the
MACs of `ecad.cost.image_macs` on the architecture (the full cost model: forecasts, skips, the
blocks' element-wise work) at the default size, steps, guidance and, for video, the pipeline's
default frame count. Quality is marked
unmeasured exactly as for the imported ECAD banks (`ecad.reference`): each entry's value is its
share of the no-cache MACs, and `ecad-rescore` on a machine with the weights replaces it.

    python -m ecad.configs.banks            # (re)write schedules/<model>/<setting>.json for every family
    python -m ecad.configs.banks --check    # fail if a committed bank differs from what this writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecad.bank import BankEntry, ScheduleBank
from ecad.configs import Architecture, get_architecture
from ecad.setting import Setting

#: the architectures that ship a heuristic bank: each family's published models (PixArt and FLUX
#: ship the banks imported from the ECAD paper instead). SD3.5-Medium does not: its second
#: self-attention is named `attn2`, which the suite's T-GATE would take for cross-attention.
BANKED = ("stable-diffusion-3.5-large", "Qwen-Image", "Wan2.1-T2V-14B-Diffusers", "Wan2.1-T2V-1.3B-Diffusers",
          "Lumina-Image-2.0", "Sana_1600M_1024px_diffusers", "Chroma1-HD", "LTX-Video", "HunyuanVideo")

NOTICE = ("Hand-designed schedules (ecad.heuristics.heuristic_suite: FORA, component FORA, Delta-DiT, T-GATE, "
          "TaylorSeer, static block skipping) at the pipeline's default setting; MACs counted by ecad on the "
          "published transformer config (no weights). Quality is unmeasured: run ecad-rescore with the weights, "
          "or ecad-calibrate for a learned front.")


QUALITY_RULE = ("quality is unmeasured: each entry's value is its share of the no-cache MACs (ecad's count), so "
                "no-cache is 1.0 and no entry ever ranks above it; that more compute means better images holds "
                "within one heuristic's family (fora-2 over fora-3) and is an assumption across them. Run "
                "ecad-rescore on a machine with the weights to replace it with measured scores.")


def default_setting(architecture: Architecture) -> Setting:
    """The pipeline's default size, steps and guidance."""
    if architecture.default_num_inference_steps is None:
        raise ValueError(f"{architecture.name}: no default number of steps in its config")
    return Setting(*architecture.default_size, architecture.default_num_inference_steps,
                   architecture.default_guidance_scale)


def heuristic_bank(model: str | Architecture, setting: Setting | None = None) -> ScheduleBank:
    """The heuristic suite of `model` (a bundled architecture) at `setting` (default: the pipeline's)."""
    from ecad.cost import image_macs
    from ecad.heuristics import heuristic_suite
    from ecad.reference import QUALITY_PROXY_METRIC

    architecture = get_architecture(model) if isinstance(model, str) else model
    setting = setting or default_setting(architecture)
    suite = heuristic_suite(architecture.layout(), setting.num_inference_steps)
    full = image_macs(architecture, setting, suite["no-cache"])
    entries = []
    for name, schedule in suite.items():
        macs = image_macs(architecture, setting, schedule)
        entries.append(BankEntry(
            id=name, schedule=schedule.to_dict(), macs=macs, quality={QUALITY_PROXY_METRIC: macs / full},
            source="no-cache" if name == "no-cache" else "heuristic", quality_measured=False))
    entries.sort(key=lambda e: (-e.macs, e.id))
    calibration = {"heuristic_suite": "ecad.heuristics.heuristic_suite", "quality_rule": QUALITY_RULE,
                   "text_tokens": architecture.max_sequence_length}
    if architecture.default_num_frames is not None:
        calibration["num_frames"] = architecture.default_num_frames
    return ScheduleBank(
        model=architecture.hub_id, model_fingerprint=architecture.fingerprint(), **setting.to_dict(),
        scorer="unmeasured", quality_metric=QUALITY_PROXY_METRIC, entries=entries, calibration=calibration,
        notice=NOTICE,
    )


def bank_path(architecture: Architecture, setting: Setting, root: Path) -> Path:
    """Where the bank catalogue looks for it: ``<root>/<model name>/<setting>.json``."""
    return root / architecture.name / f"{setting.name}.json"


def _comparable(bank: ScheduleBank) -> dict:
    return bank.model_dump(mode="json", exclude={"created_at"})


def main(argv: list[str] | None = None) -> int:
    from ecad.paths import SCHEDULES_DIR

    parser = argparse.ArgumentParser(prog="python -m ecad.configs.banks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=SCHEDULES_DIR, help="bank folder (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the committed banks, write nothing")
    parser.add_argument("models", nargs="*", default=list(BANKED), help="architectures (default: every banked one)")
    args = parser.parse_args(argv)
    stale = []
    for name in args.models:
        architecture = get_architecture(name)
        bank = heuristic_bank(architecture)
        path = bank_path(architecture, bank.setting, args.root)
        if args.check:
            if not path.is_file() or _comparable(ScheduleBank.load(path)) != _comparable(bank):
                stale.append(str(path))
            continue
        bank.save(path)
        print(f"{len(bank.entries):3d} entries -> {path}")
    if stale:
        print("stale or missing banks: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
