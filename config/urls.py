from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path

from annotate.admin_accounts import LoginForm

urlpatterns = [
    # Browsers ask for /favicon.ico on pages without an icon link (admin, downloads): no 404 in the log.
    path("favicon.ico", lambda request: redirect(static("favicon.svg"))),
    path("admin/", admin.site.urls),
    # The login page says when failed logins are throttled (annotate/throttle.py).
    path("accounts/login/", auth_views.LoginView.as_view(authentication_form=LoginForm), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    # Pages and JSON API: labeling, dashboard, review, jobs (annotate/urls.py).
    path("", include("annotate.urls")),
]
