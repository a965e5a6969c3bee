"""The benchmark harness still works end to end (a very reduced run: a few requests of each kind)."""

from __future__ import annotations

import json
import os

from bench import run


def test_bench_smoke_run_measures_every_phase_and_bills_cancellations_exactly(tmp_path, capsys):
    output = tmp_path / "bench.json"
    assert run.main(["--smoke", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    for phase in ("latency_c1", "ttft_c1"):
        for target in ("direct", "bare", "router"):
            assert results[phase][target]["n"] > 0
            assert results[phase][target]["errors"] == 0
    for phase, figure in (("throughput", "requests_per_s"), ("streaming", "chunks_per_s")):
        for target in ("direct", "bare", "recorded", "router"):
            assert results[phase][target][figure] > 0
    # The recorded relay (a floor) really records: every request it served is settled with the
    # vendor's token counts (the fake vendor sends 16 or 64 tokens per answer).
    records = results["recorded_relay_records"]
    assert set(records) == {"completed", "completion_tokens"}, records
    assert records["completion_tokens"] >= 16 * records["completed"] > 0
    router = results["streaming"]["router"]
    assert router["errors"] == 0
    # A Messages and a Responses stream beside chat completions, through the same router.
    for target in ("router", "router-messages", "router-responses"):
        assert results["apis"]["ttft_c1"][target]["n"] > 0
        assert results["apis"]["ttft_c1"][target]["errors"] == 0
        assert results["apis"]["streaming"][target]["chunks_per_s"] > 0
        assert results["apis"]["streaming"][target]["errors"] == 0
    cancel = results["cancellation"]
    for target in ("direct", "bare", "router"):
        assert cancel[target]["vendor_saw_close"] == cancel[target]["n"] > 0
    assert cancel["router"]["billed_equals_delivered"] == cancel["router"]["n"]
    (streams,) = results["open_streams"]
    assert streams["all_keepalive"], streams
    assert streams["rss_per_stream_kb"] > 0
    printed = capsys.readouterr().out
    assert "| Measure |" in printed and "| Messages stream: time to first token, c=1, p50 (ms) |" in printed


def test_bench_workers_smoke_measures_one_and_two_workers_of_the_production_command(tmp_path, capsys):
    output = tmp_path / "workers.json"
    assert run.main(["--smoke", "--workers", "2", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    assert results["names"] == ["1 worker", "2 workers"]
    for phase, figure in (("throughput", "requests_per_s"), ("streaming", "chunks_per_s")):
        for name in results["names"]:
            assert results[phase][name][figure] > 0
            assert results[phase][name]["errors"] == 0
    # The second router's requests were admitted by its workers (how the kernel spreads a few
    # connections over them is not fixed; routing/tests/test_serve_workers.py checks both serve).
    spread = results["records_per_worker"]
    assert 1 <= len(spread) <= 2 and sum(spread) > 0, spread
    assert results["meta"]["cpus"] == os.cpu_count()
    assert "| Non-streaming requests/s, c=4 |" in capsys.readouterr().out
