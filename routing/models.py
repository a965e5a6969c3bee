from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models

from lib import secretbox


class VendorKind(models.TextChoices):
    DEMO = "demo", "Demo (local, no network)"
    OPENAI = "openai", "OpenAI / OpenAI-compatible"
    AZURE = "azure", "Azure OpenAI"
    BEDROCK = "bedrock", "AWS Bedrock"
    VERTEX = "vertex", "Google Vertex AI"
    BYTEPLUS = "byteplus", "BytePlus ModelArk"
    ONEROUTER = "onerouter", "OneRouter"


class ModelMode(models.TextChoices):
    """What a model answers: chat (chat completions, Messages, Responses) or embeddings."""

    CHAT = "chat", "Chat"
    EMBEDDING = "embedding", "Embedding"


class Vendor(models.Model):
    """An upstream account: where to send requests and how to authenticate them."""

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=VendorKind.choices)
    base_url = models.URLField(max_length=500, blank=True)
    # Kind-specific, non-secret options (api_version, region, project, location, ...).
    options = models.JSONField(default=dict, blank=True)
    # Fernet token of a JSON object of secrets (api_key, aws_secret_access_key, ...).
    credentials_encrypted = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    # Seconds; null means the site default.
    connect_timeout = models.FloatField(null=True, blank=True)
    first_byte_timeout = models.FloatField(null=True, blank=True)
    idle_timeout = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def credentials(self) -> dict[str, Any]:
        return secretbox.decrypt_json(settings.SIRAYA_ENCRYPTION_KEY, self.credentials_encrypted)

    def set_credentials(self, values: dict[str, Any]) -> None:
        clean = {k: v for k, v in values.items() if v not in (None, "")}
        self.credentials_encrypted = secretbox.encrypt_json(settings.SIRAYA_ENCRYPTION_KEY, clean) if clean else ""


class RouterModel(models.Model):
    """A model name clients ask for, with its prices; served by one or more deployments."""

    name = models.CharField(max_length=128, unique=True)
    enabled = models.BooleanField(default=True)
    # The APIs that may ask it: an embedding model answers /v1/embeddings only, a chat model the rest.
    mode = models.CharField(max_length=16, choices=ModelMode.choices, default=ModelMode.CHAT)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    # Ceiling on completion tokens when the request names none (also the reservation bound).
    max_output_tokens = models.PositiveIntegerField(default=4096)
    # Tokenizer used when the router has to count tokens itself; blank picks by name.
    encoding = models.CharField(max_length=32, blank=True)
    # USD per million tokens.
    input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    output_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    cached_input_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    reasoning_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    # USD per request, on top of tokens.
    request_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "model"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_price__gte=0) & models.Q(output_price__gte=0) & models.Q(request_price__gte=0),
                name="routermodel_prices_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    """One way to serve a model: a vendor and the vendor's own model id."""

    model = models.ForeignKey(RouterModel, on_delete=models.CASCADE, related_name="deployments")
    vendor = models.ForeignKey(Vendor, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    # Lower is tried first; within a priority, pick by weight.
    priority = models.PositiveIntegerField(default=0)
    weight = models.PositiveIntegerField(default=1)
    enabled = models.BooleanField(default=True)
    # Seconds; null means the vendor's value.
    connect_timeout = models.FloatField(null=True, blank=True)
    first_byte_timeout = models.FloatField(null=True, blank=True)
    idle_timeout = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["model", "vendor", "upstream_model"], name="deployment_unique_target"),
        ]

    def __str__(self) -> str:
        return f"{self.vendor.name}:{self.upstream_model}"


class StoredResponse(models.Model):
    """A Responses API answer kept for the key that asked (``store: true``), until deleted or pruned.

    Its id is the response's: the generation id of the request that made it, the usage record's
    ``generation_id``.
    """

    id = models.CharField(primary_key=True, max_length=40)
    api_key = models.ForeignKey("billing.ApiKey", on_delete=models.CASCADE, related_name="+")
    model_name = models.CharField(max_length=128)
    created_at = models.DateTimeField()
    # JSON text, kept as written (a JSON column would reorder the members, and PostgreSQL's
    # refuses a \u0000 that a vendor's text may hold). The Response object as the client got it
    # (streamed: the one in the last event).
    response = models.TextField()
    # Every input item in OpenAI's full form, oldest first: the previous response's input and
    # output when the request continued one, then the request's own.
    input_items = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="stored_response_created")]

    def __str__(self) -> str:
        return self.id
