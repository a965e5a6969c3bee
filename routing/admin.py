from django.contrib import admin

from routing.models import Deployment, RouterModel, Vendor


class DeploymentInline(admin.TabularInline):
    model = Deployment
    extra = 0


@admin.register(Vendor)
class VendorAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "base_url", "enabled"]
    exclude = ["credentials_encrypted"]


@admin.register(RouterModel)
class RouterModelAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "input_price", "output_price", "context_length"]
    inlines = [DeploymentInline]
