"""The token bucket against its contract, on arbitrary call sequences (Hypothesis)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from xenvirtio.devices.rng.ratelimit import RateLimit, TokenBucket

calls = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=2, allow_nan=False),  # time step
        st.integers(min_value=0, max_value=5000),  # want
        st.integers(min_value=1, max_value=300),  # minimum
    ),
    max_size=60,
)


@given(
    rate=st.floats(min_value=0.5, max_value=1e6, allow_nan=False),
    burst=st.integers(min_value=1, max_value=10_000),
    seq=calls,
)
def test_grants_never_exceed_rate_times_window_plus_burst(
    rate: float, burst: int, seq: list[tuple[float, int, int]]
) -> None:
    now = 1000.0
    bucket = TokenBucket(RateLimit(rate, burst), now)
    log: list[tuple[float, int]] = []
    for dt, want, minimum in seq:
        now += dt
        grant = bucket.take(want, now, minimum)
        assert grant == 0 or min(want, minimum) <= grant <= want
        log.append((now, grant))
    # Every window [t_i, t_j] of calls: what was granted in it fits rate * span + burst.
    for i in range(len(log)):
        total = 0
        for j in range(i, len(log)):
            total += log[j][1]
            span = Fraction(log[j][0]) - Fraction(log[i][0])
            assert total <= Fraction(rate) * span + burst


@given(
    rate=st.floats(min_value=0.5, max_value=1e6, allow_nan=False),
    burst=st.integers(min_value=1, max_value=10_000),
    drain=st.integers(min_value=0, max_value=10_000),
    need=st.integers(min_value=1, max_value=20_000),
)
@example(rate=5.0, burst=3, drain=3, need=3)  # 0.6 s as a float is a hair below 3/5 s
def test_delay_is_when_the_need_is_met(rate: float, burst: int, drain: int, need: int) -> None:
    bucket = TokenBucket(RateLimit(rate, burst), 0.0)
    bucket.take(drain, 0.0)
    wait = bucket.delay(need, 0.0)
    assert bucket.available(wait) >= min(need, burst)  # never early


def test_starts_full_and_caps_at_burst() -> None:
    bucket = TokenBucket(RateLimit(100, 50), 0.0)
    assert bucket.available(0.0) == 50
    assert bucket.available(1000.0) == 50
    assert bucket.take(80, 1000.0) == 50
    assert bucket.take(1, 1000.0) == 0
    assert bucket.available(1000.1) == 10
    assert bucket.take(20, 1000.1, minimum=20) == 0  # below the minimum: nothing taken
    assert bucket.take(20, 1000.1, minimum=5) == 10
    assert bucket.available(999.0) == 0  # time going back adds nothing


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_rejects_nonsense_limits(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimit(rate, burst)
