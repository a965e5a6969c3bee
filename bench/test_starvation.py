"""Megabyte prompts on one key starve neither the heartbeat nor anyone's live requests."""

from __future__ import annotations

import pytest

from bench import starvation

# The loaded router beats every 0.25 s; the observer router takes it for dead after 3 s of
# silence. Before counting had a pool of its own (and the heartbeat a thread), this load left
# the heartbeat silent for seconds (5.1 s once) and the observer settled the long stream.
HEARTBEAT, STALE = 0.25, 3.0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_megabyte_prompts_never_get_live_requests_settled_as_interrupted(tmp_path):
    figures = starvation.run(seconds=8, heavy=8, text="words", heartbeat=HEARTBEAT, stale=STALE, workdir=tmp_path)
    summary = figures.summary()
    assert figures.heavy_sent > 0 and set(figures.heavy_statuses) == {"200"}, summary
    assert len(figures.light_ms) > 0 and figures.light_errors == 0, summary
    assert figures.long_streams >= 1, summary  # a live request was in progress throughout
    assert len(figures.heartbeats) >= 2, summary
    # What decides whether another process settles this one's live requests (no latency bound).
    assert max(figures.heartbeat_gaps) < STALE, summary
    assert figures.interrupted == 0, summary
