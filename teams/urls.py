"""Teams API, mounted under ``api/`` by league/urls.py."""

from django.urls import path

from . import views

app_name = "teams"

urlpatterns = [
    path("teams/", views.TeamListApi.as_view(), name="team-list"),
    path("teams/export/", views.TeamExportApi.as_view(), name="team-export"),
    path("teams/export/digest/", views.TeamDigestApi.as_view(), name="team-export-digest"),
    path("teams/<int:team_id>/", views.TeamDetailApi.as_view(), name="team-detail"),
    path("teams/<int:team_id>/players/", views.PlayerListApi.as_view(), name="player-list"),
    path("teams/<int:team_id>/players/<int:player_id>/", views.PlayerDetailApi.as_view(), name="player-detail"),
]
