"""The latency benchmark's arithmetic: the suffix layout it times per horizon, and the ceiling on the total
ratio that prefill and decode set (pure functions of given timings; no timing is measured here)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def latency(load_benchmark):
    return load_benchmark("latency")


def test_spanvla_rows_use_one_expert_token_per_half_second(latency):
    assert latency.design_k(10) == 1 and latency.design_k(50) == 5
    assert {n: -(-n // latency.design_k(n)) for n in (10, 50)} == {10: 10, 50: 10}
    assert 1 in latency.LAYOUTS[10] and 1 in latency.LAYOUTS[50]  # the one-token-per-point layout is timed too


def test_total_bound_is_prefill_plus_75_decodes_over_prefill_plus_15(latency):
    p, d = 0.030, 0.003
    med = {"prefill_s": p, "ar_reasoning_50_s": 23 * d, "ar_trajectory_50_s": 52 * d, "span_reasoning_s": 15 * d,
           "span_trajectory_10_s": 0.005, "span_trajectory_50_s": 0.006}
    b = latency.total_bound(med)
    assert b["decode_per_token_s"] == pytest.approx(d)
    assert b["total_50_expert_free"] == pytest.approx((p + 75 * d) / (p + 15 * d))  # 3.4
    assert b["total_10_expert_free"] == pytest.approx((p + 35 * d) / (p + 15 * d))
    assert b["total_50_measured_expert"] == pytest.approx((p + 75 * d) / (p + 15 * d + 0.006))
    # The decode time per token at which the expert-free bound reaches the paper's 3.8x.
    d38 = b["decode_per_token_s_for_3.8x"]
    assert (p + 75 * d38) / (p + 15 * d38) == pytest.approx(3.8)
