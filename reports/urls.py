from django.urls import path

from reports import overview_views, performance_views, views

app_name = "reports"

urlpatterns = [
    path("", views.usage_report, name="usage"),
    path("overview/", overview_views.usage_overview, name="overview"),
    path("performance/", performance_views.performance_report, name="performance"),
    path("export.csv", views.usage_csv, name="csv"),
    path("export.json", views.usage_json, name="json"),
    path("generations/<str:generation_id>/", views.generation_detail, name="generation"),
]
