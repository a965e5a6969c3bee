from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

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
    path("usage/", include("reports.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
