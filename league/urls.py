"""URLs: only the active services' APIs are mounted (LEAGUE_SERVICE)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from events import metrics, trace
from league import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/auth/", include("rest_framework.urls")),
    # OpenAPI 3 schema of the mounted APIs, and Swagger UI on it.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Operations: probes and Prometheus.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    # Service to service: this service's part of an event trace (token-protected).
    path("internal/trace/<str:correlation_id>/", trace.internal_trace_view, name="internal-trace"),
]

for _service in settings.ACTIVE_SERVICES:
    urlpatterns.append(path("api/", include(f"{_service}.urls")))

# The league page at / (live/urls.py).
urlpatterns.append(path("", include("live.urls")))
