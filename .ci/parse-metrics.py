"""Reads /metrics from a running server in both formats and parses each with the Prometheus
project's own Python parsers (prometheus_client): OpenMetrics when asked for it, the classic
text format 0.0.4 otherwise. Every histogram must end at le="+Inf", be cumulative, and have its
_sum and a _count equal to its +Inf bucket, or histogram_quantile cannot read it.

Usage: parse-metrics.py ADMIN_ADDR (host:port). Exits 1 with one line on the first fault."""

import math
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

FORMATS = [
    ("application/openmetrics-text; version=1.0.0", "application/openmetrics-text", openmetrics),
    ("text/plain; version=0.0.4", "text/plain; version=0.0.4", classic),
]


def fail(message):
    print(f"error: /metrics: {message}", file=sys.stderr)
    sys.exit(1)


def scrape(addr, accept):
    request = urllib.request.Request(f"http://{addr}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def check_histogram(family):
    series = {}
    for sample in family.samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        series.setdefault(labels, {"buckets": [], "sum": None, "count": None})
        entry = series[labels]
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
    for labels, entry in series.items():
        buckets = entry["buckets"]
        where = f"{family.name}{dict(labels)}"
        if not buckets or not math.isinf(buckets[-1][0]):
            fail(f'{where} has no le="+Inf" bucket last')
        if any(a[1] > b[1] for a, b in zip(buckets, buckets[1:])):
            fail(f"{where} is not cumulative")
        if entry["count"] != buckets[-1][1] or entry["sum"] is None:
            fail(f"{where}: _count {entry['count']} is not its +Inf bucket {buckets[-1][1]}, or no _sum")
    return len(series)


def main():
    addr = sys.argv[1]
    for accept, content_type, parse in FORMATS:
        got_type, text = scrape(addr, accept)
        if content_type not in got_type:
            fail(f"asked for {accept}, got {got_type}")
        try:
            families = list(parse(text))
        except ValueError as error:
            fail(f"{content_type} does not parse: {error}")
        histograms = [family for family in families if family.type == "histogram"]
        if len(histograms) < 3:
            fail(f"{content_type}: {len(histograms)} histograms, not the request, queue-wait and run-time ones")
        series = sum(check_histogram(family) for family in histograms)
        print(f"metrics: {content_type}: {len(families)} families parse, {series} histogram series end at +Inf")


main()
