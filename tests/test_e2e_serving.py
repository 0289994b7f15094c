"""End to end for model serving: fake vLLM and prometheus_client servers -> Prometheus -> dashboard queries."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.pack import local as harness
from tests.conftest import Stack, assert_every_query_returns_data, query_panel


def run(stack: Stack, panel: str, index: int = 0, model: str = ".*") -> list[dict[str, Any]]:
    return query_panel(stack, "model-serving-performance", panel, index=index, variables={"model": model})


def by_model(result: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(r["metric"]["model"], r["metric"]["version"]): float(r["value"][1]) for r in result}


@pytest.fixture(scope="module")
def serving(stack: Stack) -> Stack:
    def settled() -> bool:  # the (shortened) rate window is full
        rates = harness.query(stack.prom, 'namespace_model_version:ml_model_requests:rate5m{model="recsys"}')
        return bool(rates) and float(rates[0]["value"][1]) > 0.98 * stack.serving.requests[("recsys", "7")]

    harness.eventually(settled, "settled serving rates")
    return stack


def test_request_rate_errors_and_latency_are_what_the_servers_served(serving: Stack) -> None:
    expected = serving.serving
    assert by_model(run(serving, "requestsByModel")) == pytest.approx(expected.requests, rel=0.05)
    assert by_model(run(serving, "errorsByModel")) == pytest.approx(expected.error_ratio, rel=0.05)
    for index, quantile in enumerate(("p50", "p95", "p99")):
        got = by_model(run(serving, "latencyPercentiles", index))
        want = {key: latencies[index] for key, latencies in expected.latency.items()}
        assert got == pytest.approx(want, rel=0.01), quantile


def test_stats(serving: Stack) -> None:
    expected = serving.serving
    (rate,) = run(serving, "requestRate")
    assert float(rate["value"][1]) == pytest.approx(sum(expected.requests.values()), rel=0.05)
    (ratio,) = run(serving, "errorRatio")
    total = sum(expected.requests.values())
    errors = sum(expected.requests[k] * expected.error_ratio[k] for k in expected.requests)
    assert float(ratio["value"][1]) == pytest.approx(errors / total, rel=0.05)
    (p99,) = run(serving, "p99Latency")
    assert float(p99["value"][1]) == pytest.approx(max(v[2] for v in expected.latency.values()), rel=0.01)
    (ready,) = run(serving, "readyModels")
    assert float(ready["value"][1]) == expected.ready_models  # fraud-detector failed to load


def test_llm_and_resource_panels(serving: Stack) -> None:
    llm = ("llm-chat", "granite-3.1")
    assert by_model(run(serving, "ttft")) == pytest.approx({llm: 0.48}, rel=0.01)
    assert by_model(run(serving, "tokensPerSecond")) == pytest.approx({llm: 500}, rel=0.05)
    assert by_model(run(serving, "runningWaiting", 0)) == {llm: 4}
    assert by_model(run(serving, "runningWaiting", 1)) == {llm: 1}
    assert by_model(run(serving, "kvCache")) == {llm: 0.3}
    assert by_model(run(serving, "modelGpu")) == pytest.approx({llm: 0.7})
    cpu = {(r["metric"]["model"], r["metric"]["pod"]): float(r["value"][1]) for r in run(serving, "podCpu")}
    assert cpu == pytest.approx({("llm-chat", "llm-chat-predictor-6d8f9"): 3.0}, rel=0.1)


def test_model_variable_filters(serving: Stack) -> None:
    assert set(by_model(run(serving, "requestsByModel", model="recsys"))) == {("recsys", "7")}


def test_every_dashboard_query_returns_data(serving: Stack) -> None:
    assert_every_query_returns_data(serving, "model-serving-performance")
