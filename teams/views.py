"""The teams REST API: thin views that parse input, call a service or a selector, and
shape the answer. Errors: service ``ValidationError`` -> 400 (league.api), unknown id -> 404."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from . import selectors, services
from .models import Player, Team
from .serializers import (
    PlayerInputSerializer,
    PlayerSerializer,
    TeamCreateInputSerializer,
    TeamExportSerializer,
    TeamSerializer,
    TeamUpdateInputSerializer,
)


def _team_or_404(team_id: int) -> Team:
    team = selectors.team_get(team_id=team_id)
    if team is None:
        raise Http404(f"Team {team_id} does not exist.")
    return team


def _player_or_404(team: Team, player_id: int) -> Player:
    player = selectors.player_get(team=team, player_id=player_id)
    if player is None:
        raise Http404(f"Player {player_id} is not in team {team.id}.")
    return player


class TeamListApi(ListAPIView):
    serializer_class = TeamSerializer

    def get_queryset(self):
        return selectors.team_list()

    @extend_schema(operation_id="teams_list")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="teams_create", request=TeamCreateInputSerializer, responses={201: TeamSerializer})
    def post(self, request: Request) -> Response:
        data = _valid(TeamCreateInputSerializer, request)
        team = services.team_create(name=data["name"], players=data.get("players"))
        return Response(TeamSerializer(_team_or_404(team.id)).data, status=status.HTTP_201_CREATED)


class TeamExportApi(GenericAPIView):
    serializer_class = TeamExportSerializer
    pagination_class = None

    @extend_schema(operation_id="teams_export")
    def get(self, request: Request) -> Response:
        """Every team with its players and sequence, in one unpaginated answer (the
        snapshot the transfers replica loads)."""
        return Response(TeamExportSerializer({"teams": selectors.team_export()}).data)


class TeamDetailApi(GenericAPIView):
    serializer_class = TeamSerializer

    @extend_schema(operation_id="teams_retrieve")
    def get(self, request: Request, team_id: int) -> Response:
        return Response(TeamSerializer(_team_or_404(team_id)).data)

    @extend_schema(operation_id="teams_rename", request=TeamUpdateInputSerializer, responses={200: TeamSerializer})
    def patch(self, request: Request, team_id: int) -> Response:
        team = _team_or_404(team_id)
        data = _valid(TeamUpdateInputSerializer, request)
        services.team_rename(team=team, name=data["name"])
        return Response(TeamSerializer(_team_or_404(team_id)).data)

    @extend_schema(operation_id="teams_delete", responses={204: None})
    def delete(self, request: Request, team_id: int) -> Response:
        services.team_delete(team=_team_or_404(team_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PlayerListApi(GenericAPIView):
    serializer_class = PlayerSerializer
    pagination_class = None  # a squad is bounded by SQUAD_LIMIT

    @extend_schema(operation_id="teams_players_list", responses=PlayerSerializer(many=True))
    def get(self, request: Request, team_id: int) -> Response:
        team = _team_or_404(team_id)
        return Response(PlayerSerializer(selectors.player_list(team=team), many=True).data)

    @extend_schema(operation_id="teams_players_add", request=PlayerInputSerializer, responses={201: PlayerSerializer})
    def post(self, request: Request, team_id: int) -> Response:
        team = _team_or_404(team_id)
        data = _valid(PlayerInputSerializer, request)
        player = services.player_add(team=team, name=data["name"], position=data["position"])
        return Response(PlayerSerializer(player).data, status=status.HTTP_201_CREATED)


class PlayerDetailApi(GenericAPIView):
    serializer_class = PlayerSerializer

    @extend_schema(operation_id="teams_players_retrieve")
    def get(self, request: Request, team_id: int, player_id: int) -> Response:
        return Response(PlayerSerializer(_player_or_404(_team_or_404(team_id), player_id)).data)

    @extend_schema(operation_id="teams_players_remove", responses={204: None})
    def delete(self, request: Request, team_id: int, player_id: int) -> Response:
        services.player_remove(player=_player_or_404(_team_or_404(team_id), player_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _valid(serializer_class: type, request: Request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
