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


class UsageApi(models.TextChoices):
    """The client API a request came through (each client dialect names its own)."""

    CHAT_COMPLETIONS = "chat_completions", "Chat completions"
    MESSAGES = "messages", "Messages"
    RESPONSES = "responses", "Responses"
    EMBEDDINGS = "embeddings", "Embeddings"


class UsageRecord(models.Model):
    """One accepted request: what was asked, what was delivered, what it cost."""

    generation_id = models.CharField(max_length=40, unique=True)
    # No index of its own: usage_key_created (api_key, created_at) serves lookups by key, and a
    # second index on the same column cost SQLite an index entry per admitted request.
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage_records", db_index=False)
    model = models.ForeignKey("routing.RouterModel", null=True, blank=True, on_delete=models.SET_NULL)
    # Records from before the column were all chat completions; a default in the database too,
    # for a router still running the previous release (a rolling deploy).
    api = models.CharField(
        "client API",
        max_length=16,
        choices=UsageApi.choices,
        default=UsageApi.CHAT_COMPLETIONS,
        db_default="chat_completions",
    )
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
            # The rollup job finds the hours to redo from the records settled since its last run.
            models.Index(fields=["finished_at"], name="usage_finished"),
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


# Latency histogram of the rollups: bucket i holds values in [LATENCY_BOUNDS_MS[i], LATENCY_BOUNDS_MS[i + 1]),
# the last one everything from its bound up. Each bucket is at most half as wide as its lower bound (10 ms
# for the first), so a percentile read from the buckets is within half the exact value plus 10 ms of it
# (reports.sources.percentile; README "Reports at scale").
LATENCY_BOUNDS_MS = (
    0, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800,
    1_000, 1_250, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_500, 15_000,
    20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000, 125_000, 150_000, 200_000,
    300_000, 450_000,
)  # fmt: skip
LATENCY_METRICS = ("first_token_ms", "duration_ms")


def latency_bucket_fields(metric: str) -> tuple[str, ...]:
    """The rollup columns counting ``metric``'s values per bucket of LATENCY_BOUNDS_MS."""
    return tuple(f"{metric}_b{i:02d}" for i in range(len(LATENCY_BOUNDS_MS)))


# The rollups' grouping, the same names as UsageRecord's fields (api_key as its column).
ROLLUP_DIMENSIONS = (
    "api_key_id",
    "api",
    "model_name",
    "vendor_name",
    "deployment_id",
    "upstream_model",
    "status",
    "error_code",
)


class UsageRollup(models.Model):
    """Sums of the usage records of one period and one combination of ROLLUP_DIMENSIONS.

    Written only by ``billing.rollups`` (recomputed whole from the records), read by the reports.
    """

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+", db_index=False)
    api = models.CharField(max_length=16, choices=UsageApi.choices, default=UsageApi.CHAT_COMPLETIONS)
    model_name = models.CharField(max_length=128)
    vendor_name = models.CharField(max_length=64, blank=True)
    # The records' deployment id as it was (no foreign key: a deleted deployment keeps its history).
    deployment_id = models.IntegerField(null=True, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=12, choices=UsageStatus.choices)
    error_code = models.CharField(max_length=64, blank=True)

    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=18, decimal_places=8, default=Decimal("0"))  # USD
    # Requests whose attempts list holds more than one attempt.
    fallbacks = models.PositiveIntegerField(default=0)
    # Completed streamed requests with both timings: completion tokens and ms from first token to end.
    stream_tokens = models.PositiveBigIntegerField(default=0)
    stream_ms = models.BigIntegerField(default=0)
    # Requests with each timing, and the timings' sums (ms), for averages.
    first_token_count = models.PositiveIntegerField(default=0)
    first_token_ms_sum = models.PositiveBigIntegerField(default=0)
    duration_count = models.PositiveIntegerField(default=0)
    duration_ms_sum = models.PositiveBigIntegerField(default=0)

    class Meta:
        abstract = True


for _metric in LATENCY_METRICS:
    for _name in latency_bucket_fields(_metric):
        UsageRollup.add_to_class(_name, models.PositiveIntegerField(default=0))


# What the usage and overview reports group, filter and sum: their rollup reads need nothing else.
REPORT_COLUMNS = [
    "api_key",
    "api",
    "model_name",
    "vendor_name",
    "status",
    "error_code",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "first_token_count",
]


class UsageHour(UsageRollup):
    """The usage records created in one UTC hour (``hour`` is its start)."""

    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "hour", *ROLLUP_DIMENSIONS[1:]], name="usage_hour_unique")
        ]
        indexes = [
            # The reports' ranges; on PostgreSQL it also carries what their grouped reads take, so they read
            # the index alone rather than the rows, two thirds of whose width are the latency histograms.
            models.Index(fields=["hour"], include=REPORT_COLUMNS, name="usage_hour_hour_sums"),
            # A key's spend over a period (budgets, the admin's key list), read from the index alone.
            models.Index(fields=["api_key", "hour", "cost"], name="usage_hour_key_cost"),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.api_key_id} {self.model_name} {self.status}"


class UsageDay(UsageRollup):
    """The usage records created on one UTC day: the sum of that day's UsageHour rows."""

    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "day", *ROLLUP_DIMENSIONS[1:]], name="usage_day_unique")
        ]
        indexes = [
            models.Index(fields=["day"], include=REPORT_COLUMNS, name="usage_day_day_sums"),  # as UsageHour's
            # A key's spend over a period (budgets, the admin's key list), read from the index alone.
            models.Index(fields=["api_key", "day", "cost"], name="usage_day_key_cost"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.api_key_id} {self.model_name} {self.status}"


class UsageRollupState(models.Model):
    """Where the rollups stand (one row): every UTC hour before ``covered_until`` is rolled up."""

    covered_until = models.DateTimeField(null=True, blank=True)
    # The last refresh's time: records settled after it (less a margin) have their hours redone.
    refreshed_at = models.DateTimeField(null=True, blank=True)
    # Raw records before this hour were pruned: those hours are never recomputed (their rollups stay).
    pruned_before = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rolled up until {self.covered_until}"
