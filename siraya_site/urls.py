from typing import cast

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponseRedirect, JsonResponse
from django.templatetags.static import static
from django.urls import include, path, reverse_lazy

from ops import views as ops_views
from reports import views as reports_views
from routing import key_views
from routing import views as routing_views
from routing.dialects.messages import views as messages_views
from routing.dialects.responses import views as responses_views

# The admin's "View site" link: the reports are the site (resolved when the admin renders).
admin.site.site_url = cast(str, reverse_lazy("reports:usage"))


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask /favicon.ico of pages that link none (the admin's): send them to the static one."""
    return HttpResponseRedirect(static("favicon.ico"))


# One name across the admin, the reports and both login pages.
admin.site.site_header = admin.site.site_title = "Siraya Model Router"
LOGIN_CONTEXT = {"site_header": admin.site.site_header, "site_title": admin.site.site_title, "title": "Log in"}


urlpatterns = [
    path("", reports_views.home, name="home"),
    path("v1/models", routing_views.models_list, name="models-list"),
    path("v1/messages/count_tokens", messages_views.count_tokens, name="messages-count-tokens"),
    path("v1/responses/<str:response_id>", responses_views.response_detail, name="responses-detail"),
    path("v1/responses/<str:response_id>/input_items", responses_views.input_items, name="responses-input-items"),
    path("v1/generation", key_views.generation_detail, name="generation-detail"),
    path("v1/key", key_views.key_detail, name="key-detail"),
    path("v1/openapi.json", routing_views.openapi_document, name="openapi"),
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", favicon, name="favicon"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("usage/", include("reports.urls")),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, extra_context=LOGIN_CONTEXT),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]

# OpenAI-shaped JSON for /v1/... paths, Django's pages elsewhere.
handler400 = "routing.api.bad_request"
handler403 = "routing.api.permission_denied"
handler404 = "routing.api.not_found"
handler500 = "routing.api.server_error"
