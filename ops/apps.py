from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health and readiness, metrics, structured logs."""

    name = "ops"
    default_auto_field = "django.db.models.BigAutoField"
