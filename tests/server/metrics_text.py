"""Reading one value from a server's /metrics."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def metric_value(url: str, name: str, **labels: str) -> float:
    """The sample `name{labels}`, or 0 when there is none yet."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
