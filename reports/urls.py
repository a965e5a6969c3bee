from django.urls import path

from reports import overview_views, views

app_name = "reports"

urlpatterns = [
    path("", views.usage_report, name="usage"),
    path("overview/", overview_views.usage_overview, name="overview"),
    path("export.csv", views.usage_csv, name="csv"),
    path("generations/<str:generation_id>/", views.generation_detail, name="generation"),
]
