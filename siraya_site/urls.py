from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path

from billing import views as billing_views
from ops import views as ops_views
from routing import views as routing_views


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("v1/models", routing_views.models_list, name="models-list"),
    path("v1/generation", billing_views.generation_detail, name="generation-detail"),
    path("v1/openapi.json", routing_views.openapi_document, name="openapi"),
    path("healthz", healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]

# OpenAI-shaped JSON for /v1/... paths, Django's pages elsewhere.
handler400 = "routing.api.bad_request"
handler403 = "routing.api.permission_denied"
handler404 = "routing.api.not_found"
handler500 = "routing.api.server_error"
