"""The paired bootstrap that decides whether a difference between two models is more than noise."""
import numpy as np
import pytest

from embedfactory.eval.significance import mean_scores, paired_bootstrap


def test_a_constant_gain_on_every_query_has_a_tight_interval_at_that_gain():
    a = {str(i): 0.3 + 0.001 * i for i in range(200)}
    b = {q: s + 0.02 for q, s in a.items()}
    found = paired_bootstrap(a, b)
    assert found.delta == pytest.approx(0.02) and found.low == pytest.approx(0.02) and found.high == pytest.approx(0.02)
    assert found.significant and found.queries == 200


def test_noise_around_zero_is_not_a_finding_and_a_real_gain_is():
    rng = np.random.default_rng(1)
    a = {str(i): float(rng.uniform(0, 1)) for i in range(225)}
    noise = {q: s + float(rng.normal(0, 0.2)) for q, s in a.items()}
    flat = paired_bootstrap(a, noise, resamples=2000)
    assert flat.low < 0 < flat.high and not flat.significant
    assert 0.04 < flat.high - flat.low < 0.07  # about 2 x 1.96 x 0.2 / sqrt(225)
    gain = {q: s + 0.05 + float(rng.normal(0, 0.2)) for q, s in a.items()}
    assert paired_bootstrap(a, gain, resamples=2000).low > 0


def test_only_shared_queries_are_paired_and_none_shared_is_an_error():
    a, b = {"1": 0.5, "2": 0.5, "3": 0.1}, {"2": 0.7, "3": 0.3, "4": 0.9}
    found = paired_bootstrap(a, b)
    assert found.queries == 2 and found.delta == pytest.approx(0.2)
    with pytest.raises(ValueError, match="share no query"):
        paired_bootstrap({"1": 0.1}, {"2": 0.2})


def test_seeds_are_averaged_per_query():
    assert mean_scores([{"1": 0.2, "2": 0.4}, {"1": 0.4, "2": 0.4}]) == {"1": pytest.approx(0.3), "2": 0.4}
