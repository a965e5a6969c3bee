from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models


class LimitReset(models.TextChoices):
    NEVER = "never", "Never"
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly (Monday)"
    MONTHLY = "monthly", "Monthly"


class ApiKey(models.Model):
    """A client credential. Only the SHA-256 of the key is stored."""

    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="api_keys"
    )
    # First characters of the key, for people to recognise it ("sk-siraya-AbCd1234").
    prefix = models.CharField(max_length=32, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)  # hex SHA-256
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # USD; null means no limit.
    credit_limit = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    limit_reset = models.CharField(max_length=8, choices=LimitReset.choices, default=LimitReset.NEVER)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    max_concurrent_streams = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class UsageStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"
    ERROR = "error", "Error"
    INTERRUPTED = "interrupted", "Interrupted"  # the router process died mid-request


class UsageSource(models.TextChoices):
    VENDOR = "vendor", "Reported by the vendor"
    ROUTER = "router", "Counted by the router"
    MIXED = "mixed", "Prompt from the vendor, completion counted by the router"
    NONE = "none", "Nothing to count"


class UsageRecord(models.Model):
    """One accepted request: what was asked, what was delivered, what it cost."""

    generation_id = models.CharField(max_length=40, unique=True)
    # No index of its own: usage_key_created (api_key, created_at) serves lookups by key, and a
    # second index on the same column cost SQLite an index entry per admitted request.
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage_records", db_index=False)
    model = models.ForeignKey("routing.RouterModel", null=True, blank=True, on_delete=models.SET_NULL)
    model_name = models.CharField(max_length=128)
    vendor = models.ForeignKey("routing.Vendor", null=True, blank=True, on_delete=models.SET_NULL)
    vendor_name = models.CharField(max_length=64, blank=True)
    deployment = models.ForeignKey("routing.Deployment", null=True, blank=True, on_delete=models.SET_NULL)
    upstream_model = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=UsageStatus.choices, default=UsageStatus.IN_PROGRESS)
    streamed = models.BooleanField(default=False)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)

    # Billed figures.
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    usage_source = models.CharField(max_length=8, choices=UsageSource.choices, default=UsageSource.NONE)
    # What the vendor itself reported, kept beside the billed figures for reconciliation.
    vendor_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    vendor_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # Checkpoint of completion tokens handed to the client while the stream runs.
    tokens_delivered = models.PositiveIntegerField(default=0)
    checkpoint_at = models.DateTimeField(null=True, blank=True)
    # The request's OpenTelemetry trace (32 hex digits) when tracing was on and it was sampled.
    # A default in the database too: a router still running the previous release (a rolling
    # deploy) inserts records without this column.
    trace_id = models.CharField(max_length=32, blank=True, default="", db_default="")
    # The router process serving the request (RouterInstance.id); recovery settles only dead owners' records.
    instance_id = models.CharField(max_length=32, blank=True, default="")

    # Prices in force when the request started, USD per million tokens (per request for request_price).
    input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    output_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    cached_input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    reasoning_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    request_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal("0"))
    # USD, rounded once to 8 decimal places (see billing.cost).
    cost = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal("0"))
    # USD held against the key's credit limit while in progress (the worst case); zero once
    # settled. A hold stops counting at reserved_until, so a process killed mid-request
    # cannot block its key for longer than SIRAYA_RESERVATION_SECONDS.
    reserved_cost = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal("0"))
    reserved_until = models.DateTimeField(null=True, blank=True)

    attempts = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(db_index=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["api_key", "created_at"], name="usage_key_created"),
            models.Index(fields=["status", "created_at"], name="usage_status_created"),
            models.Index(fields=["model_name", "created_at"], name="usage_model_created"),
            models.Index(fields=["vendor_name", "created_at"], name="usage_vendor_created"),
            # The usage report's error code filter: few records per code, so the range is read from here.
            models.Index(fields=["error_code", "created_at"], name="usage_error_created"),
            # The holds admission sums: only in-progress records, so the index stays small.
            models.Index(
                fields=["api_key", "reserved_until"],
                condition=models.Q(status="in_progress"),
                name="usage_key_holds",
            ),
        ]

    def __str__(self) -> str:
        return self.generation_id


class KeyUsageDay(models.Model):
    """Settled usage of one key on one UTC day (by the records' ``created_at``).

    Kept in the same transaction that settles each record, so it always equals the sum of
    the key's settled usage records for that day; a period's spend is the sum of its days.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="usage_days")
    day = models.DateField()
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal("0"))  # USD

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "day"], name="key_usage_day_unique")]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.day}"


class RouterInstance(models.Model):
    """One router process, for telling a live process's in-progress records from a dead one's."""

    id = models.CharField(max_length=32, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(db_index=True)
    # Set by a clean shutdown: the instance's remaining records can be settled at once.
    stopped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid} ({self.id})"
