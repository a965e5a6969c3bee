from django.contrib import admin

from billing.models import ApiKey, UsageRecord


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "owner", "credit_limit", "revoked_at", "last_used_at"]
    readonly_fields = ["prefix", "key_hash", "last_used_at"]


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = [
        "generation_id",
        "api_key",
        "model_name",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "created_at",
    ]
    list_select_related = ["api_key"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
