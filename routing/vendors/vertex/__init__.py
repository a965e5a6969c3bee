"""Google Vertex AI (kind ``vertex``): Gemini and Anthropic Claude behind one adapter."""

from __future__ import annotations

from routing.vendors.vertex.adapter import VertexAdapter

__all__ = ["VertexAdapter"]
