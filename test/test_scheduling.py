"""Inference-delay estimation and the decision of when to request the next chunk."""

import math

import pytest

from vla_ros.runtime.chunking.scheduling import LatencyEstimator, RequestPolicy


def test_estimator_ignores_cold_start_samples():
    est = LatencyEstimator(warmup=2, initial_s=0.1)
    est.add(5.0)  # first call: engine build, allocator warm-up
    est.add(3.0)
    assert est.estimate_s() == pytest.approx(0.1)  # still the initial guess
    est.add(0.12)
    assert est.estimate_s() == pytest.approx(0.12)


def test_estimator_percentile_is_not_held_up_by_one_outlier_like_a_running_max():
    est = LatencyEstimator(window=20, rule='percentile', percentile=90, warmup=0)
    for _ in range(19):
        est.add(0.1)
    est.add(2.0)
    assert est.estimate_s() == pytest.approx(0.1)


def test_default_estimate_is_the_max_of_the_last_delays_as_rtc_does():
    est = LatencyEstimator(window=10, warmup=0)
    for latency in (0.10, 0.30, 0.12, 0.11):
        est.add(latency)
    assert est.estimate_s() == pytest.approx(0.30)


def test_max_rule_forgets_an_outlier_once_it_leaves_the_window():
    est = LatencyEstimator(window=3, warmup=0)
    for latency in (2.0, 0.1, 0.1, 0.1):
        est.add(latency)
    assert est.estimate_s() == pytest.approx(0.1)


def test_default_estimate_under_estimates_at_most_one_chunk_in_a_hundred():
    # Heavy-tailed latencies (lognormal, 150 ms median): the delay in steps of the next
    # chunk exceeds the estimate made before it in <= 1 % of chunks.
    import numpy as np

    rng = np.random.default_rng(0)
    latencies = 0.15 * np.exp(rng.normal(0.0, 0.35, 20000))
    est, under = LatencyEstimator(), 0
    for latency in latencies:
        under += est.delay_steps(0.05) < math.ceil(latency / 0.05)
        est.add(float(latency))
    assert under / len(latencies) <= 0.01


def test_estimator_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match='rule'):
        LatencyEstimator(rule='mean')


def test_estimator_window_forgets_old_latencies():
    est = LatencyEstimator(window=5, warmup=0)
    for _ in range(5):
        est.add(1.0)
    for _ in range(5):
        est.add(0.2)
    assert est.estimate_s() == pytest.approx(0.2)


def test_delay_steps_round_up():
    est = LatencyEstimator(warmup=0)
    est.add(0.151)
    assert est.delay_steps(0.05) == 4
    est2 = LatencyEstimator(warmup=0)
    est2.add(0.15)
    assert est2.delay_steps(0.05) == 3


def test_estimator_rejects_negative_latency():
    with pytest.raises(ValueError, match='>= 0'):
        LatencyEstimator().add(-0.1)


def test_first_request_is_immediate():
    assert RequestPolicy().should_request(0.0, 0.0, 0.1, 1.0, last_request_s=None)


def test_horizon_fraction_requests_once_the_plan_left_after_the_delay_is_short():
    policy = RequestPolicy('horizon_fraction', 0.5)
    # 1 s chunks, 0.2 s expected delay: request when remaining - 0.2 <= 0.5.
    assert not policy.should_request(1.0, 0.8, 0.2, 1.0, last_request_s=0.5)
    assert policy.should_request(1.0, 0.7, 0.2, 1.0, last_request_s=0.5)


def test_period_mode_requests_at_a_fixed_rate():
    policy = RequestPolicy('period_s', 0.25)
    assert not policy.should_request(1.2, 0.9, 0.1, 1.0, last_request_s=1.0)
    assert policy.should_request(1.25, 0.9, 0.1, 1.0, last_request_s=1.0)


def test_request_policy_validates_its_value():
    with pytest.raises(ValueError, match='outside'):
        RequestPolicy('horizon_fraction', 1.5)


@pytest.mark.parametrize('kwargs', [dict(window=0), dict(percentile=0.0),
                                    dict(percentile=100.5), dict(warmup=-1),
                                    dict(initial_s=-0.01)])
def test_latency_estimator_settings_outside_their_range_are_refused(kwargs):
    with pytest.raises(ValueError, match='bad latency estimator settings'):
        LatencyEstimator(**kwargs)


@pytest.mark.parametrize('kwargs', [dict(window=1), dict(percentile=0.5),
                                    dict(percentile=100.0), dict(warmup=0),
                                    dict(initial_s=0.0)])
def test_latency_estimator_settings_at_the_edge_of_their_range_are_accepted(kwargs):
    est = LatencyEstimator(**kwargs)
    est.add(0.2)
    est.add(0.2)
    est.add(0.3)
    assert 0.0 <= est.estimate_s() <= 0.3


def test_before_any_sample_the_estimate_is_the_initial_guess_of_0_1_s():
    assert LatencyEstimator().estimate_s() == 0.1
