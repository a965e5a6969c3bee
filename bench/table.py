"""The benchmark's table: the figures of one run against the targets, as the README shows them."""

from __future__ import annotations

import math
from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _check(ok: bool) -> str:
    return "met" if ok else "MISSED"


Row = tuple[str, str, str, str, str, str]


def rows(results: dict[str, Any]) -> list[Row]:
    """(measure, direct, bare relay, recorded relay, router, router against its target)."""
    lat, thr, ttft, st, cancel = (
        results[k] for k in ("latency_c1", "throughput", "ttft_c1", "streaming", "cancellation")
    )
    d, b, r = "direct", "bare", "router"
    out: list[Row] = []
    for label, data, target_p50 in (("Non-streaming latency, c=1", lat, 1.0), ("Time to first token, c=1", ttft, 1.0)):
        for q in ("p50", "p99"):
            key = f"{q}_ms"
            out.append((f"{label}, {q} (ms)", _f(data[d][key]), _f(data[b][key]), "", _f(data[r][key]), ""))
        over_bare = data[r]["p50_ms"] - data[b]["p50_ms"]
        out.append(
            (
                f"{label}: router over bare relay, p50 (ms)",
                "",
                "",
                "",
                _f(over_bare),
                f"<= {target_p50:g}: {_check(over_bare <= target_p50)}",
            )
        )
        for q, bound in (("p50", 3.0), ("p99", 8.0)):
            added_b = data[b][f"{q}_ms"] - data[d][f"{q}_ms"]
            added_r = data[r][f"{q}_ms"] - data[d][f"{q}_ms"]
            note = f"<= {bound:g}: {_check(added_r <= bound)}" if data is lat else ""
            out.append((f"{label}: added over direct, {q} (ms)", "", _f(added_b), "", _f(added_r), note))
    out += _throughput_rows("Non-streaming requests/s, c=32", thr, "requests_per_s")
    out += _throughput_rows("Relayed chunks/s, 64-token streams, c=32", st, "chunks_per_s")
    for q in ("p50", "p99"):
        key = f"{q}_ms"
        note = f"<= 10: {_check(cancel[r][key] <= 10)}" if q == "p99" else ""
        out.append(
            (
                f"Cancel: client close to vendor close, {q} (ms)",
                _f(cancel[d][key]),
                _f(cancel[b][key]),
                "",
                _f(cancel[r][key]),
                note,
            )
        )
    billed = cancel[r]["billed_equals_delivered"]
    out.append(
        (
            "Cancel: billed tokens == delivered tokens",
            "",
            "",
            "",
            f"{billed}/{cancel[r]['n']}",
            _check(billed == cancel[r]["n"]),
        )
    )
    out += _api_rows(results.get("apis"))
    for o in results["open_streams"]:
        ok = o["all_keepalive"] and (o["streams"] < 5000 or o["rss_per_stream_kb"] <= 30)
        note = f"{o['with_keepalive']}/{o['streams']} got keepalives" + (" (<= 30 KB)" if o["streams"] >= 5000 else "")
        out.append(
            (
                f"{o['streams']:,} open streams: RSS per stream (KB)",
                "",
                "",
                "",
                _f(o["rss_per_stream_kb"], 1),
                f"{note}: {_check(ok)}",
            )
        )
    return out


def _throughput_rows(label: str, data: dict[str, Any], figure: str) -> list[Row]:
    """The figure per target, as shares of the direct path and of the bare relay, and the CPU time
    each server spent per request. The target (issue #16): 80% of the recorded relay's figure."""
    names = ("direct", "bare", "recorded", "router")
    direct, bare, recorded, router = (data[name][figure] for name in names)

    def share(value: float, whole: float) -> str:
        return f"{value / whole:.0%}" if whole else "n/a"

    ratio = router / recorded if recorded else float("nan")
    note = f"{ratio:.0%} of recorded (>= 80%): {_check(ratio >= 0.8)}"
    out = [
        (label, _f(direct, 0), _f(bare, 0), _f(recorded, 0), _f(router, 0), note),
        ("  ... as a share of direct", "100%", share(bare, direct), share(recorded, direct), share(router, direct), ""),
        ("  ... as a share of the bare relay", "", "100%", share(recorded, bare), share(router, bare), ""),
    ]
    cpu = [data[name].get("cpu_us_per_request") for name in names]
    if all(c is not None for c in cpu):
        d, b, r, t = (_f(c, 0) for c in cpu)
        out.append(("  ... CPU time per request of the serving process (us)", d, b, r, t, ""))
    return out


# The other client APIs' streams against chat completions' in the same phase (issue #15: within 10%).
_APIS = (("router-messages", "Messages"), ("router-responses", "Responses"))


def _api_rows(apis: dict[str, Any] | None) -> list[Row]:
    """Each API's time to first token (p50) and relayed events/s beside chat completions', measured together."""
    if not apis:
        return []
    ttft, streaming = apis["ttft_c1"], apis["streaming"]
    chat_ttft, chat_chunks = ttft["router"]["p50_ms"], streaming["router"]["chunks_per_s"]
    out: list[Row] = [
        ("Chat completions stream (API phase): time to first token, c=1, p50 (ms)", "", "", "", _f(chat_ttft), ""),
        ("Chat completions stream (API phase): relayed chunks/s, c=32", "", "", "", _f(chat_chunks, 0), ""),
    ]
    for name, label in _APIS:
        first, chunks = ttft[name]["p50_ms"], streaming[name]["chunks_per_s"]
        slower = first / chat_ttft - 1 if chat_ttft else float("nan")
        share = chunks / chat_chunks if chat_chunks else float("nan")
        out.append(
            (
                f"{label} stream: time to first token, c=1, p50 (ms)",
                "",
                "",
                "",
                _f(first),
                f"{slower:+.0%} vs chat (<= +10%): {_check(slower <= 0.10)}",
            )
        )
        out.append(
            (
                f"{label} stream: relayed events/s, c=32",
                "",
                "",
                "",
                _f(chunks, 0),
                f"{share:.0%} of chat (>= 90%): {_check(share >= 0.90)}",
            )
        )
    return out


def table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    server = "`python -m siraya_site.serve` (one worker)" if meta["server"] == "serve" else meta["server"]
    head = (
        f"Server: {server}, SQLite; {meta['cpus']} x {meta['cpu_model']}, Python {meta['python']}; "
        f"{meta['date']}; profile {meta['profile']}; load average (1/5/15 min) {meta['load_average_before']} "
        f"before, {meta['load_average_after']} after\n\n"
    )
    lines = [
        "| Measure | Direct | Bare relay | Recorded relay | Router | Router vs target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in rows(results)]
    return head + "\n".join(lines)
