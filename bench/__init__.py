"""``make bench``: the router against the fake vendor called directly and a bare relay, in one run."""
