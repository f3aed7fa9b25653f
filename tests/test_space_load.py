"""Load on the Space: 20 concurrent gradio_client users, 2 requests each, on tiny models: no errors.

    pytest tests/test_space_load.py -s        # prints p50/p95

The same ``run_load`` as ``bench/bench_space_load.py`` (which records the bundled models' figures).
"""

from __future__ import annotations

import pytest
from test_space import ROOT, load_module, start_space


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo, url, examples = start_space(tmp_path_factory.getbasetemp())
    yield url, examples
    demo.close()


def test_twenty_concurrent_clients_get_answers_without_errors(server):
    bench = load_module("chexanatomy_bench_space_load", ROOT / "bench" / "bench_space_load.py")
    url, examples = server
    result = bench.run_load(
        url, examples / "pa_synthetic_pose0.png", clients=20, requests=2, structures=["heart", "lung_left"]
    )
    latency = result["latency_s"]
    print(f"\n40 requests, 20 clients: p50 {latency['p50']} s, p95 {latency['p95']} s, wall {result['wall_s']} s")
    assert result["errors"] == 0, result["error_messages"]
    assert result["requests"] == 40 and latency["p50"] <= latency["p95"] <= latency["max"]
