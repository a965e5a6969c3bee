from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import path

from billing import views as billing_views
from routing import views as routing_views


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("v1/models", routing_views.models_list, name="models-list"),
    path("v1/generation", billing_views.generation_detail, name="generation-detail"),
    path("v1/key", billing_views.key_detail, name="key-detail"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
