"""The one bootstrap interval (calibration noise, the benchmark's relative reward, timing
verdicts) and the single-image spread a served entry states."""

import numpy as np
import pytest

from ecad.stats import bootstrap_interval, median_of_rows, spread


def test_bootstrap_interval_is_seeded_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    few, many = rng.normal(1.0, 0.2, 8), rng.normal(1.0, 0.2, 128)
    assert bootstrap_interval(few) == bootstrap_interval(few)
    low, high = bootstrap_interval(few)
    assert low < few.mean() < high
    many_low, many_high = bootstrap_interval(many)
    assert many_high - many_low < high - low
    assert bootstrap_interval([3.0]) == (3.0, 3.0)


def test_any_statistic_and_paired_samples():
    values = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]
    lo, hi = bootstrap_interval(values, statistic=median_of_rows)
    assert lo <= 1.3 <= hi and lo >= 1.0 and hi <= 1.6
    assert bootstrap_interval([2.0, 2.0, 2.0], statistic=median_of_rows) == (2.0, 2.0)
    # paired: the same indices drawn from both samples, so a ratio of a sample to itself is exactly 1
    assert bootstrap_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], statistic=lambda a, b: a.mean(1) / b.mean(1)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_interval([1.0, 2.0], [1.0])


def test_spread_is_the_5th_to_95th_percentile_of_single_values():
    values = np.arange(101, dtype=float)
    assert spread(values) == (5.0, 95.0)
    assert spread([7.0]) == (7.0, 7.0)
