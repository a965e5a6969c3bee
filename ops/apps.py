from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health and readiness, metrics, structured logs."""

    name = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing.shared_redis import redis_failure_hook_add
        from lib import metrics

        redis_failure_hook_add(metrics.redis_failed)
