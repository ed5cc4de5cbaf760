"""The league page, mounted at the root by league/urls.py."""

from django.urls import path

from . import views

app_name = "live"

urlpatterns = [
    path("", views.index, name="index"),
    path("live/league", views.league, name="league"),
    path("live/events", views.events, name="events"),
]
