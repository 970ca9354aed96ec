"""scripts/bench_serve.py measures the server with concurrent openpi-keyed clients, batching off and on."""

from __future__ import annotations

from bench_serve import main


def test_bench_serve_reports_throughput_latency_and_batching() -> None:
    results = main(["--clients", "1", "3", "--requests", "4", "--device", "cpu"])
    assert set(results) == {f"{n} clients, batching {b}" for n in (1, 3) for b in ("off", "5 ms")}
    for result in results.values():
        assert result["requests_per_s"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    assert results["1 clients, batching off"]["requests_per_forward"] == 1.0
    assert results["3 clients, batching off"]["requests_per_forward"] == 1.0  # off means one request each
