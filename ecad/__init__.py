"""ecad: learned cache schedules for diffusion transformers (ECAD, ICLR 2026)."""

__version__ = "0.1.0"
