from ecad.quality.base import QualityScorer, available_scorers, build_scorer, register_scorer

__all__ = ["QualityScorer", "available_scorers", "build_scorer", "register_scorer"]
