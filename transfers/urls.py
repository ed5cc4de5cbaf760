"""Mounted under ``api/``. ``transfers/teams/`` comes first and ids are ``<int:...>``, so
the replica's list is never read as a transfer id."""

from django.urls import path

from . import views

urlpatterns = [
    path("transfers/teams/", views.TeamReplicaListView.as_view(), name="transfers-team-list"),
    path("transfers/", views.TransferListCreateView.as_view(), name="transfer-list"),
    path("transfers/<int:pk>/", views.TransferDetailView.as_view(), name="transfer-detail"),
    path("transfers/<int:pk>/cancel/", views.TransferCancelView.as_view(), name="transfer-cancel"),
]
