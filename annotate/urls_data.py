"""Data in and out: dashboard, review, statistics, jobs and export downloads."""
from django.urls import path

from . import views_data

urlpatterns = [
    path("projects/<int:project_id>/", views_data.dashboard, name="dashboard"),
    path("projects/<int:project_id>/review/", views_data.review_page, name="review"),
    path("api/projects/<int:project_id>/stats", views_data.stats, name="api_stats"),
    path("api/projects/<int:project_id>/review/items", views_data.review_items, name="api_review_items"),
    path("api/projects/<int:project_id>/review/correct", views_data.review_correct, name="api_review_correct"),
    path("api/projects/<int:project_id>/exports", views_data.export_create, name="api_export_create"),
    path("api/jobs/<uuid:job_id>", views_data.job_status, name="api_job"),
    path("jobs/<uuid:job_id>/download", views_data.job_download, name="job_download"),
]
