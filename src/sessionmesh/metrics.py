"""``/metrics`` in the Prometheus text format (prometheus_client, one registry per broker)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .server import Runner

SEND_STATUSES = ("received", "queued", "denied", "refused", "sent")
RECEIPT_STATES = ("delivered", "read", "answered", "expired")


class _CoreCollector:
    """Reads the core's counters and the store's queue depths at scrape time."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        counters = self.runner.core.counters
        sends = CounterMetricFamily("mesh_messages", "Sends answered, by status", labels=["status"])
        for status in SEND_STATUSES:
            sends.add_metric([status], counters.get(f"send_{status}", 0))
        yield sends
        stored = CounterMetricFamily("mesh_messages_stored", "Envelopes written to the store")
        stored.add_metric([], counters.get("messages_stored", 0))
        yield stored
        receipts = CounterMetricFamily("mesh_receipts", "Receipt transitions, by new state", labels=["state"])
        for state in RECEIPT_STATES:
            receipts.add_metric([state], counters.get(f"receipts_{state}", 0))
        yield receipts
        depth = GaugeMetricFamily(
            "mesh_queue_depth", "Unread messages waiting, by recipient", labels=["peer"]
        )
        for peer, count in sorted(self.runner.store.queue_depths().items()):
            depth.add_metric([peer], count)
        yield depth
        wakes = CounterMetricFamily("mesh_wakes", "Idle agents woken for mail, by peer", labels=["peer"])
        for peer, count in sorted(self.runner.core._wake_counts.items()):
            wakes.add_metric([peer], count)
        yield wakes
        online = GaugeMetricFamily("mesh_connected_peers", "Peers with a live connection")
        online.add_metric([], len(self.runner.core.online_names()))
        yield online


class Metrics:
    def __init__(self, runner: Runner) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CoreCollector(runner))  # type: ignore[arg-type]
        self.send_latency = Histogram(
            "mesh_send_latency_seconds",
            "Time from a send arriving at the broker to its answer leaving",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def observe_send(self, seconds: float) -> None:
        self.send_latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
