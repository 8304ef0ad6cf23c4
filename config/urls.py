from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # Labeling loop: project list, labeling page, labeling API, item images (annotate/urls.py).
    path("", include("annotate.urls")),
    # Data in and out, dashboard, jobs (annotate/urls_data.py).
    path("", include("annotate.urls_data")),
]
