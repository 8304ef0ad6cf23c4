from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # Pages and JSON API: labeling, dashboard, review, jobs (annotate/urls.py).
    path("", include("annotate.urls")),
]
