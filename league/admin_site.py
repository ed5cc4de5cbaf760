"""The project's admin site: Django's, plus the event-bus overview page.

Installed in place of ``django.contrib.admin`` (``INSTALLED_APPS``:
``league.admin_site.LeagueAdminConfig``), the documented way to replace the default site,
so every ``@admin.register`` keeps working. This module imports no model: it is loaded
while the app registry is still being filled. The page itself is ``events.admin.bus_overview``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.urls import path, reverse

BUS_PAGE_NAME = "Event bus overview"
TRACE_PAGE_NAME = "Event trace"


class LeagueAdminSite(admin.AdminSite):
    site_header = "League Manager administration"
    site_title = "League Manager"

    def get_urls(self) -> list[Any]:
        from events.admin import bus_overview
        from events.trace import trace_view

        return [
            path("events/bus/", self.admin_view(bus_overview), name="events_bus"),
            path("events/trace/", self.admin_view(trace_view), name="events_trace_search"),
            path("events/trace/<str:correlation_id>/", self.admin_view(trace_view), name="events_trace"),
        ] + super().get_urls()

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        """The bus page and the trace search appear as rows of the "Event bus" app, on the index and in the
        sidebar, for users who may view the outbox."""
        app_list = super().get_app_list(request, app_label)
        if not request.user.has_perm("events.view_outboxmessage"):
            return app_list
        for app in app_list:
            if app["app_label"] == "events":
                app["models"].insert(
                    0,
                    {
                        "model": None,
                        "name": BUS_PAGE_NAME,
                        "object_name": "EventBus",
                        "perms": {"view": True},
                        "admin_url": reverse("admin:events_bus", current_app=self.name),
                        "add_url": None,
                        "view_only": True,
                    },
                )
                app["models"].insert(
                    1,
                    {
                        "model": None,
                        "name": TRACE_PAGE_NAME,
                        "object_name": "EventTrace",
                        "perms": {"view": True},
                        "admin_url": reverse("admin:events_trace_search", current_app=self.name),
                        "add_url": None,
                        "view_only": True,
                    },
                )
        return app_list


class LeagueAdminConfig(AdminConfig):
    default_site = "league.admin_site.LeagueAdminSite"
