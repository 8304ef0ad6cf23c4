"""Labeling loop URLs: project list, labeling page, labeling API, item images."""
from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.project_list, name="project_list"),
    path("projects/<int:project_id>/label/", views.label_page, name="label"),
    path("items/<int:item_id>/image", views.item_image, name="item_image"),
    path("api/projects/<int:project_id>/status", api.status, name="api_status"),
    path("api/projects/<int:project_id>/lease", api.lease, name="api_lease"),
    path("api/projects/<int:project_id>/label", api.label, name="api_label"),
    path("api/projects/<int:project_id>/skip", api.skip, name="api_skip"),
    path("api/projects/<int:project_id>/undo", api.undo, name="api_undo"),
    path("api/projects/<int:project_id>/release", api.release, name="api_release"),
]
