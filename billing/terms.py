"""What billing needs to know of a model and of the deployment that answers.

Routing owns models and deployments (``routing.selectors``); billing sees a model through
its terms (prices, tokenizer, completion ceiling) and an answering deployment through the
names a usage record keeps. ``routing.selectors.ModelRoute`` is a ``ModelTerms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.cost import Prices


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelTerms:
    model_id: int
    name: str
    encoding: str  # the tokenizer the router counts this model's tokens with
    max_output_tokens: int
    prices: Prices
    # False when a deployment's vendor does not count reasoning against ``max_tokens`` (the
    # credit hold then adds the model's ceiling for it: ``billing.credit.completion_ceiling``).
    max_tokens_bounds_reasoning: bool = True


@dataclass(frozen=True, slots=True)
class Answerer:
    """The deployment that answers a request, as its usage record names it."""

    deployment_id: int
    vendor_id: int
    vendor_name: str
    upstream_model: str
