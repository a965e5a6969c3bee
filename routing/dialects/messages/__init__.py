"""Anthropic's Messages API (``POST /v1/messages``) as a client dialect."""
