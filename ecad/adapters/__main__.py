"""`python -m ecad.adapters`: one line per supported family.

Its name, transformer class, block groups x components (of its first published config in
`ecad/configs`, built on the meta device: no weights) and the banks that ship for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from . import adapter_for_class, supported_families


@dataclass(frozen=True)
class FamilyLine:
    family: str
    transformer_class: str
    layout: str  # "-" where no published config ships
    banks: tuple[str, ...]  # "<model>/<setting>" of every shipped bank


def family_lines() -> list[FamilyLine]:
    from ecad.configs import architecture_names, get_architecture
    from ecad.paths import SCHEDULES_DIR

    architectures: dict[str, list] = {}
    for name in architecture_names():
        arch = get_architecture(name)
        architectures.setdefault(arch.transformer_class, []).append(arch)
    lines = []
    for family, cls in supported_families():
        # the family's first published config first (SD3.5-Large before -Medium), else by name
        preferred = getattr(getattr(adapter_for_class(cls), "family", None), "architectures", ())
        archs = sorted(architectures.get(cls, []), key=lambda a: preferred.index(a.name) if a.name in preferred else 99)
        layout = str(archs[0].layout()) if archs else "-"
        banks = tuple(f"{a.name}/{p.stem}" for a in archs for p in sorted((SCHEDULES_DIR / a.name).glob("*.json")))
        lines.append(FamilyLine(family, cls, layout, banks))
    return lines


def main(argv: list[str] | None = None) -> int:
    for line in family_lines():
        banks = ", ".join(line.banks) if line.banks else "none"
        print(f"{line.family:<32} {line.transformer_class:<32} {line.layout}  | banks: {banks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
