"""Is the profiles worker making progress? ``/healthz`` answers from :func:`progress_health`.

A worker can be alive and stuck (a consumer that lost its broker connection and never got it
back, an agent wedged on a dead socket). Liveness alone would keep it running for ever behind
a green light, so health asks for progress: unhealthy when clicks are waiting (lag > 0) and no
batch has been consumed for ``stall_s`` — an orchestrator then restarts it — or when the lag
itself could not be measured for a while.

>>> progress_health(lag=0, lag_age_s=5, consumed_age_s=3600, stall_s=120)["healthy"]  # idle, nothing waiting
True
>>> progress_health(lag=3000, lag_age_s=5, consumed_age_s=300, stall_s=120)["healthy"]  # waiting, nothing consumed
False
"""

LAG_PROBE_MAX_AGE_S = 60.0


def progress_health(lag: int, lag_age_s: float, consumed_age_s: float, stall_s: float) -> dict[str, object]:
    stalled = lag > 0 and consumed_age_s > stall_s
    blind = lag_age_s > LAG_PROBE_MAX_AGE_S
    answer: dict[str, object] = {
        "healthy": not (stalled or blind),
        "consumer_lag": lag,
        "seconds_since_last_batch": round(consumed_age_s, 1),
    }
    if stalled:
        answer["reason"] = f"clicks are waiting but none was consumed for {consumed_age_s:.0f} s"
    elif blind:
        answer["reason"] = f"consumer lag unknown for {lag_age_s:.0f} s"
    return answer
