"""URLs: only the active services' APIs are mounted (LEAGUE_SERVICE)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/", include("rest_framework.urls")),
]

for _service in settings.ACTIVE_SERVICES:
    urlpatterns.append(path("api/", include(f"{_service}.urls")))
