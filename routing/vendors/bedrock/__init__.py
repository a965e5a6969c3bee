"""AWS Bedrock Runtime (``kind = "bedrock"``): request translation, event-stream decoding, the adapter."""

from __future__ import annotations

from routing.vendors.bedrock.adapter import BedrockAdapter

__all__ = ["BedrockAdapter"]
