"""Helpers the Vertex AI tests share: the upstream models, the prompt figures the fake reports, a tool."""

from __future__ import annotations

from conftest import Cast
from fakevendors.vertex.claude import CLAUDE_INPUT_TOKENS
from fakevendors.vertex.gemini import GEMINI_PROMPT_TOKENS

UPSTREAM = {"gemini": "gemini-2.5-flash", "claude": "anthropic/claude-sonnet-4@20250514"}
PROMPT = {"gemini": GEMINI_PROMPT_TOKENS, "claude": CLAUDE_INPUT_TOKENS}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a long story."}]


def warm_up(cast: Cast) -> None:
    """Fetch the vendor's access token now, so that a later failure comes before any keepalive."""
    assert cast.chat(max_tokens=1).status_code == 200
