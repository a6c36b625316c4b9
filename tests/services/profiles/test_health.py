"""/healthz asks for progress, not just a live process."""

import pytest

from services.profiles.health import LAG_PROBE_MAX_AGE_S, progress_health
from services.profiles.metrics import ProfilesMetrics


@pytest.mark.parametrize(
    ("lag", "lag_age_s", "consumed_age_s", "healthy"),
    [
        (0, 5, 10_000, True),  # nothing waiting: an idle worker is fine however long ago it consumed
        (3000, 5, 10, True),  # behind but consuming
        (3000, 5, 121, False),  # behind and stuck: the case an orchestrator must restart
        (1, 5, 120, True),  # exactly at the limit
        (0, LAG_PROBE_MAX_AGE_S + 1, 1, False),  # the lag could not be measured for a while
    ],
)
def test_unhealthy_only_when_stuck_or_blind(lag, lag_age_s, consumed_age_s, healthy):
    answer = progress_health(lag, lag_age_s, consumed_age_s, stall_s=120)
    assert answer["healthy"] is healthy and answer["consumer_lag"] == lag
    assert ("reason" in answer) is (not healthy)


def test_metrics_record_each_batch():
    metrics = ProfilesMetrics()
    before = metrics.last_batch_at
    metrics.batch_consumed()
    assert metrics.last_batch_at >= before
    assert metrics.registry.get_sample_value("shelfsight_profiles_last_batch_timestamp_seconds") == metrics.last_batch_at
