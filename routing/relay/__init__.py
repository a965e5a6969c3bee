"""The relay: an API request from the client's bytes to a settled usage record.

In the order a request meets them: ``entry`` (the ASGI application: path to dialect),
``channel`` (the client's connection, the one owner of cancellation), ``request`` (the story,
top-down), ``attempts`` (deployments in turn), ``delivery`` (a vendor's events rendered and
sent), ``meter`` and ``limits`` (what was delivered, checkpoints, the ``max_tokens`` cut).
"""
