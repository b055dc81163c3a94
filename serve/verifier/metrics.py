"""Prometheus metrics of the verifier service, on their own HTTP port.

Proof counts are read from the outbox at scrape time, so they are right across restarts;
RPC outcomes are counted as they happen.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily

from serve.verifier.outbox import Outbox


class OutboxCollector:
    def __init__(self, outbox: Outbox):
        self.outbox = outbox

    def collect(self):
        family = GaugeMetricFamily("zkserve_verifier_proofs", "proofs in the outbox by status", labels=["status"])
        for status, count in sorted(self.outbox.counts().items()):
            family.add_metric([status], count)
        yield family
        rejected = GaugeMetricFamily("zkserve_verifier_rejected_proofs",
                                     "proofs the contract refused for good, by its error", labels=["reason"])
        for reason, count in sorted(self.outbox.rejected_by_reason().items()):
            rejected.add_metric([reason], count)
        yield rejected


class VerifierMetrics:
    def __init__(self, outbox: Outbox):
        self.registry = CollectorRegistry()
        self.registry.register(OutboxCollector(outbox))
        self.rpcs = Counter("zkserve_verifier_rpcs", "verifier RPCs by method and status code",
                            ["method", "code"], registry=self.registry)
        self.reconciled = Counter("zkserve_verifier_reconciled",
                                  "repairs after the chain lost a record: batches sent again, models registered again",
                                  ["what"], registry=self.registry)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
