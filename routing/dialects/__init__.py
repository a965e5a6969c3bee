"""Client dialects: each parses its wire format into the canonical request."""
