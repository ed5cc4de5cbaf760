"""Mounted under ``api/``. ``transfers/teams/`` comes first and ids are ``<int:...>``, so
the replica's list is never read as a transfer id."""

from django.urls import path

from . import views

urlpatterns = [
    path("transfers/teams/", views.TeamReplicaListApi.as_view(), name="transfers-team-list"),
    path("transfers/", views.TransferListApi.as_view(), name="transfer-list"),
    path("transfers/<int:pk>/", views.TransferDetailApi.as_view(), name="transfer-detail"),
    path("transfers/<int:pk>/cancel/", views.TransferCancelApi.as_view(), name="transfer-cancel"),
]
