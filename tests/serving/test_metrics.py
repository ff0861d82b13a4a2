"""The scorer's metrics are its own: another app in the process, or prometheus_client's
multiprocess mode (which importing feast.metrics switches on), never mixes into them."""
import os
import subprocess
import sys

from prometheus_client import generate_latest

from mmfs.serving.metrics import Metrics


def test_two_apps_count_apart_and_the_text_format_is_prometheus():
    a, b = Metrics(), Metrics()
    a.requests.labels("/score", 200).inc()
    a.requests.labels("/score", 200).inc()
    a.latency.observe(0.004)
    a.stale.inc(3)
    a.ready.set(1)
    text = generate_latest(a.registry).decode()
    assert 'mmfs_requests_total{endpoint="/score",status="200"} 2.0' in text
    assert 'mmfs_score_latency_seconds_bucket{le="0.005"} 1.0' in text and 'mmfs_score_latency_seconds_bucket{le="0.003"} 0.0' in text
    assert 'mmfs_score_latency_seconds_bucket{le="+Inf"} 1.0' in text and "mmfs_score_latency_seconds_count 1.0" in text
    assert "mmfs_stale_features_total 3.0" in text and "mmfs_ready 1.0" in text
    assert "mmfs_requests_total{" not in generate_latest(b.registry).decode()


def test_feast_imported_first_does_not_share_values_between_apps():
    code = ("import feast.metrics, os; assert os.environ.get('PROMETHEUS_MULTIPROC_DIR');"
            "from prometheus_client import generate_latest; from mmfs.serving.metrics import Metrics;"
            "a, b = Metrics(), Metrics(); a.requests.labels('/x', 200).inc(); b.requests.labels('/x', 200).inc();"
            "print([l for l in generate_latest(b.registry).decode().splitlines() if l.startswith('mmfs_requests_total')])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd(), check=True)
    assert done.stdout.strip().splitlines()[-1] == "['mmfs_requests_total{endpoint=\"/x\",status=\"200\"} 1.0']"
