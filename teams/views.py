"""The teams REST API: thin views that parse input, call a service or a selector, and
shape the answer. Errors: a body that does not match the schema -> 400, a service's
``ValidationError`` -> 409 (a name taken, a full squad) or 422 (kernel.api), unknown id -> 404,
also when the service finds the team or player gone inside its transaction (a request that
lost a race: ``TeamNotFound`` / ``PlayerNotFound``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView, ListAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from events import antientropy
from kernel.api import MAX_LIMIT, bounded_int
from kernel.openapi import errors

from . import selectors, services
from .models import Player, Team
from .serializers import (
    PlayerInputSerializer,
    PlayerSerializer,
    TeamCreateInputSerializer,
    TeamExportItemSerializer,
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


@contextmanager
def _gone_is_404() -> Iterator[None]:
    try:
        yield
    except (services.TeamNotFound, services.PlayerNotFound) as exc:
        raise Http404(str(exc)) from exc


# The team every example of this module shows (the shape of TeamSerializer).
TEAM_EXAMPLE = {
    "id": 1,
    "name": "Ajax",
    "short_name": "AJA",
    "sequence": 2,
    "players": [{"id": 1, "name": "Johan Cruijff", "position": "ST"}],
    "created_at": "2026-07-01T12:00:00Z",
}


class TeamListApi(ListAPIView):
    permission_model = Team  # writes need teams.<add|change|delete>_team (kernel/permissions.py)
    serializer_class = TeamSerializer

    def get_queryset(self):
        return selectors.team_list()

    @extend_schema(
        operation_id="teams_list",
        examples=[OpenApiExample("A team", value=TEAM_EXAMPLE, response_only=True)],
        responses={200: TeamSerializer(many=True)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="teams_create",
        request=TeamCreateInputSerializer,
        responses={
            201: TeamSerializer,
            **errors(
                400,
                401,
                409,
                422,
                e422={"players": ["A squad has at most 25 players; got 26."]},
            ),
        },
        examples=[
            OpenApiExample(
                "With a player",
                value={"name": "Ajax", "players": [{"name": "Johan Cruijff", "position": "ST"}]},
                request_only=True,
            ),
            OpenApiExample("With a short name", value={"name": "Ajax", "short_name": "AJX"}, request_only=True),
            OpenApiExample(
                "Created",
                value=TEAM_EXAMPLE,
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        data = _valid(TeamCreateInputSerializer, request)
        team = services.team_create(name=data["name"], players=data.get("players"), short_name=data.get("short_name"))
        return Response(TeamSerializer(_team_or_404(team.id)).data, status=status.HTTP_201_CREATED)


BAD_CURSOR = "No page at this cursor: follow the `next` link of the previous page."


class ExportPagination(CursorPagination):
    """Pages by team id (stable while teams are created and deleted: each team that
    exists throughout the read is on exactly one page), ``limit`` per page: 1 to 1000 like
    every list of the API, anything else a 400."""

    ordering = "id"
    page_size = 500
    page_size_query_param = "limit"
    max_page_size = MAX_LIMIT

    def get_page_size(self, request: Request) -> int:
        return bounded_int(request, "limit", default=self.page_size, minimum=1, maximum=MAX_LIMIT)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            *(
                {
                    "name": name,
                    "required": False,
                    "in": "query",
                    "description": f"Only teams whose id is {what} (a digest bucket's bounds).",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                }
                for name, what in (("id_after", "greater than this"), ("id_upto", "at most this"))
            ),
            {
                "name": "cursor",
                "required": False,
                "in": "query",
                "description": "Where the page starts: take it from the previous page's `next` link.",
                "schema": {"type": "string"},
            },
            {
                "name": "limit",
                "required": False,
                "in": "query",
                "description": f"Teams per page (1 to {MAX_LIMIT}, default {self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
            },
        ]

    def decode_cursor(self, request: Request):
        """DRF's cursor, refused (404: any string matches the schema; one the export did not
        issue names no page) unless it decodes and its position is a team id as
        ``next`` links carry it: DRF answers 404 to an undecodable cursor and lets any
        position through to the query (``p=abc``: a ``ValueError``, a 500)."""
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = False
        if cursor is False or (cursor is not None and not _is_team_id(cursor.position)):
            raise NotFound(BAD_CURSOR) from None
        return cursor


def _is_team_id(position: str | None) -> bool:
    """A position as ``next`` links carry it: none, or a team id (decimal digits, in range)."""
    if position is None:
        return True
    return _ID.fullmatch(position) is not None and int(position) <= MAX_ID


_ID = re.compile(r"[0-9]{1,19}")
MAX_ID = 2**63 - 1


class TeamExportApi(ListAPIView):
    """Service to service: needs a token with ``teams.export_team`` (the role Service
    accounts; ``manage.py service_account``)."""

    serializer_class = TeamExportItemSerializer
    pagination_class = ExportPagination
    read_permissions = ["teams.export_team"]

    def get_queryset(self):
        return selectors.team_export(
            id_after=_optional_id(self.request, "id_after"), id_upto=_optional_id(self.request, "id_upto")
        )

    @extend_schema(
        operation_id="teams_export",
        responses={
            200: TeamExportItemSerializer(many=True),
            **errors(400, 401, 403, 404, e400={"limit": ["Must be a whole number from 1 to 1000."]}, e404={"detail": BAD_CURSOR}),
        },
        examples=[
            OpenApiExample(
                "Snapshot",
                value={
                    "next": "http://teams.example/api/teams/export/?cursor=cD01MDA%3D",
                    "previous": None,
                    "results": [{k: v for k, v in TEAM_EXAMPLE.items() if k != "created_at"}],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        """Every team with its players and sequence, a page at a time (cursor by id; follow
        ``next`` until it is null): the snapshot the transfers replica loads."""
        return super().get(request, *args, **kwargs)


MAX_ID = 2**63 - 1


def _optional_id(request: Request, name: str) -> int | None:
    if request.query_params.get(name) is None:
        return None
    return bounded_int(request, name, default=0, minimum=0, maximum=MAX_ID)


class TeamDigestApi(GenericAPIView):
    """Service to service, like the export (``teams.export_team``): the export's digest for
    anti-entropy (events/antientropy.py), so that a replica reads in full only the buckets
    where it differs."""

    read_permissions = ["teams.export_team"]
    pagination_class = None

    @extend_schema(
        operation_id="teams_export_digest",
        parameters=[
            OpenApiParameter(
                "bucket",
                int,
                description=f"Teams per bucket (1 to {MAX_LIMIT}, default {antientropy.DEFAULT_BUCKET}).",
            ),
            OpenApiParameter(
                "content",
                str,
                enum=list(antientropy.CONTENTS),
                description="What the hash covers: `full` (id, sequence, name, players; the default) or "
                "`names` (id and name: a replica that keeps names only).",
            ),
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            **errors(400, 401, 403, e400={"bucket": [f"Must be a whole number from 1 to {MAX_LIMIT}."]}),
        },
        examples=[
            OpenApiExample(
                "Digest",
                value={
                    "bucket": 500,
                    "buckets": [{"after": 0, "last": None, "count": 1, "max_sequence": 2, "hash": "9f86d08…"}],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        """Per bucket of consecutive team ids (``(after, last]``, the last open above): how many
        teams, their highest sequence and a hash of their ids, sequences, names and players.
        Read a bucket in full with the export's ``id_after`` / ``id_upto``."""
        size = bounded_int(request, "bucket", default=antientropy.DEFAULT_BUCKET, minimum=1, maximum=MAX_LIMIT)
        content = request.query_params.get("content", antientropy.FULL)
        if content not in antientropy.CONTENTS:
            raise ValidationError({"content": [f"Must be one of {', '.join(antientropy.CONTENTS)}."]})
        buckets = selectors.team_digest(size=size, content=content)
        return Response({"bucket": size, "content": content, "buckets": [b.as_dict() for b in buckets]})


class TeamDetailApi(GenericAPIView):
    permission_model = Team  # writes need teams.<add|change|delete>_team (kernel/permissions.py)
    serializer_class = TeamSerializer

    @extend_schema(
        operation_id="teams_retrieve",
        responses={200: TeamSerializer, **errors(404, e404={"detail": "Team 9 does not exist."})},
        examples=[OpenApiExample("A team", value=TEAM_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, team_id: int) -> Response:
        return Response(TeamSerializer(_team_or_404(team_id)).data)

    @extend_schema(
        operation_id="teams_rename",
        request=TeamUpdateInputSerializer,
        responses={200: TeamSerializer, **errors(400, 401, 404, 409)},
        examples=[
            OpenApiExample("Rename", value={"name": "AFC Ajax"}, request_only=True),
            OpenApiExample("A new short name", value={"short_name": "AJX"}, request_only=True),
            OpenApiExample(
                "Renamed",
                value={**TEAM_EXAMPLE, "name": "AFC Ajax", "short_name": "AA", "sequence": 3},
                response_only=True,
            ),
        ],
    )
    def patch(self, request: Request, team_id: int) -> Response:
        team = _team_or_404(team_id)
        # A partial update, as documented: without a name or a short name there is nothing to change.
        data = _valid(TeamUpdateInputSerializer, request, partial=True)
        if "name" in data or "short_name" in data:
            with _gone_is_404():
                services.team_rename(team=team, name=data.get("name"), short_name=data.get("short_name"))
        return Response(TeamSerializer(_team_or_404(team_id)).data)

    @extend_schema(operation_id="teams_delete", responses={204: None, **errors(401, 404)})
    def delete(self, request: Request, team_id: int) -> Response:
        with _gone_is_404():
            services.team_delete(team=_team_or_404(team_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PlayerListApi(GenericAPIView):
    permission_model = Player  # writes need teams.<add|change|delete>_player (kernel/permissions.py)
    serializer_class = PlayerSerializer
    pagination_class = None  # a squad is bounded by SQUAD_LIMIT

    @extend_schema(
        operation_id="teams_players_list",
        responses={200: PlayerSerializer(many=True), **errors(404)},
        examples=[
            OpenApiExample("Squad", value=[{"id": 1, "name": "Johan Cruijff", "position": "ST"}], response_only=True)
        ],
    )
    def get(self, request: Request, team_id: int) -> Response:
        team = _team_or_404(team_id)
        return Response(PlayerSerializer(selectors.player_list(team=team), many=True).data)

    @extend_schema(
        operation_id="teams_players_add",
        request=PlayerInputSerializer,
        responses={
            201: PlayerSerializer,
            **errors(
                400,
                401,
                404,
                409,
                e400={"position": ["Position must be one of GK, DEF, MID, ST."]},
                e409={"name": ["Team Ajax already has a player named Edwin van der Sar."]},
            ),
        },
        examples=[
            OpenApiExample("Add a keeper", value={"name": "Edwin van der Sar", "position": "GK"}, request_only=True),
            OpenApiExample(
                "Added",
                value={"id": 2, "name": "Edwin van der Sar", "position": "GK"},
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request: Request, team_id: int) -> Response:
        team = _team_or_404(team_id)
        data = _valid(PlayerInputSerializer, request)
        with _gone_is_404():
            player = services.player_add(team=team, name=data["name"], position=data["position"])
        return Response(PlayerSerializer(player).data, status=status.HTTP_201_CREATED)


class PlayerDetailApi(GenericAPIView):
    permission_model = Player  # writes need teams.<add|change|delete>_player (kernel/permissions.py)
    serializer_class = PlayerSerializer

    @extend_schema(
        operation_id="teams_players_retrieve",
        responses={200: PlayerSerializer, **errors(404, e404={"detail": "Player 9 is not in team 1."})},
        examples=[
            OpenApiExample("A player", value={"id": 1, "name": "Johan Cruijff", "position": "ST"}, response_only=True)
        ],
    )
    def get(self, request: Request, team_id: int, player_id: int) -> Response:
        return Response(PlayerSerializer(_player_or_404(_team_or_404(team_id), player_id)).data)

    @extend_schema(operation_id="teams_players_remove", responses={204: None, **errors(401, 404)})
    def delete(self, request: Request, team_id: int, player_id: int) -> Response:
        # The service locks and re-reads team and player: one loaded here could have moved
        # to another team (the transfer saga) before the delete.
        with _gone_is_404():
            services.player_remove(team_id=team_id, player_id=player_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _valid(serializer_class: type, request: Request, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
