"""Loupe's pages and JSON API (WebSocket routes are in ``routing.py``)."""
from django.urls import path, re_path

from . import api, image_urls, views, views_dashboard, views_review

urlpatterns = [
    # Labeling loop: project list, labeling page, item images, labeling API (views.py, api.py).
    path("", views.project_list, name="project_list"),
    path("projects/<int:project_id>/label/", views.label_page, name="label"),
    path("items/<int:item_id>/image", views.item_image, name="item_image"),
    # Signed, short-lived image URLs; the ASGI app answers them before Django (image_urls.py).
    re_path(r"^images/", image_urls.image_view, name="signed_image"),
    path("api/projects/<int:project_id>/status", api.status, name="api_status"),
    path("api/projects/<int:project_id>/lease", api.lease, name="api_lease"),
    path("api/projects/<int:project_id>/label", api.label, name="api_label"),
    path("api/projects/<int:project_id>/skip", api.skip, name="api_skip"),
    path("api/projects/<int:project_id>/undo", api.undo, name="api_undo"),
    path("api/projects/<int:project_id>/release", api.release, name="api_release"),
    # Dashboard: statistics, exports, jobs and their downloads (views_dashboard.py).
    path("projects/<int:project_id>/", views_dashboard.dashboard, name="dashboard"),
    path("api/projects/<int:project_id>/stats", views_dashboard.stats, name="api_stats"),
    path("api/projects/<int:project_id>/exports", views_dashboard.export_create, name="api_export_create"),
    path("api/jobs/<uuid:job_id>", views_dashboard.job_status, name="api_job"),
    path("jobs/<uuid:job_id>/download", views_dashboard.job_download, name="job_download"),
    # Review: everyone's labels and corrections (views_review.py).
    path("projects/<int:project_id>/review/", views_review.review_page, name="review"),
    path("api/projects/<int:project_id>/review/items", views_review.review_items, name="api_review_items"),
    path("api/projects/<int:project_id>/review/correct", views_review.review_correct, name="api_review_correct"),
    # Anything else under api/ (a mistyped path, a project id that is not a number) answers JSON, not
    # the HTML 404 page a script cannot read.
    re_path(r"^api/", api.not_found, name="api_not_found"),
]
