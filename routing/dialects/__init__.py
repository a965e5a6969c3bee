"""Client APIs as dialects: each parses its wire format into the canonical request and renders
canonical events back in its own format (``routing.dialects.base``)."""
