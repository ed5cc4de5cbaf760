from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from kernel.api import object_or_404
from kernel.openapi import errors

from . import selectors, services
from .models import Transfer, TransferState
from .serializers import (
    TeamReplicaSerializer,
    TransferCancelSerializer,
    TransferRequestSerializer,
    TransferSerializer,
)
from .teams_client import TeamsServiceUnavailable

# The transfer the examples of this module show (the shape of TransferSerializer).
TRANSFER_EXAMPLE = {
    "id": 1,
    "player_id": 7,
    "player_name": "Johan Cruijff",
    "from_team_id": 1,
    "to_team_id": 2,
    "fee": "1500000.00",
    "state": "requested",
    "reason": "",
    "created_at": "2026-07-01T12:00:00Z",
    "updated_at": "2026-07-01T12:00:00Z",
    "completed_at": None,
    "expires_at": "2026-07-01T12:15:00Z",
    "overdue": False,
}


class TransferConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The transfer is not in a state that allows this."
    default_code = "conflict"


class TeamsServiceDown(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The teams service is unavailable. Try again later."
    default_code = "teams_service_unavailable"


@extend_schema_view(
    get=extend_schema(
        operation_id="transfers_teams_list",
        examples=[
            OpenApiExample(
                "A replicated team",
                value={
                    "id": 1,
                    "name": "Ajax",
                    "sequence": 2,
                    "deleted": False,
                    "players": [{"id": 7, "name": "Johan Cruijff", "position": "ST"}],
                    "synced_at": "2026-07-01T12:00:00Z",
                    "updated_at": "2026-07-01T12:00:00Z",
                },
                response_only=True,
            )
        ],
    )
)
class TeamReplicaListApi(generics.ListAPIView):
    """The teams this service knows (its replica), with their players. Read-only."""

    serializer_class = TeamReplicaSerializer

    def get_queryset(self):
        return selectors.team_list()


class _Filters(serializers.Serializer):
    state = serializers.ChoiceField(choices=TransferState.choices, required=False)
    player_id = serializers.IntegerField(min_value=1, required=False)
    team_id = serializers.IntegerField(min_value=1, required=False)


@extend_schema_view(
    get=extend_schema(
        operation_id="transfers_list",
        parameters=[_Filters],
        responses={
            200: TransferSerializer(many=True),
            **errors(400, e400={"state": ['"pending" is not a valid choice.']}),
        },
        examples=[
            OpenApiExample(
                "A transfer",
                value=TRANSFER_EXAMPLE,
                response_only=True,
            )
        ],
    ),
    post=extend_schema(
        operation_id="transfers_request",
        request=TransferRequestSerializer,
        responses={
            201: TransferSerializer,
            **errors(
                400,
                401,
                409,
                503,
                e400={"fee": ["Ensure that there are no more than 2 decimal places."]},
                e409={"player_id": ["Player 7 already has a transfer in progress (#3)."]},
            ),
        },
        examples=[
            OpenApiExample(
                "Request a transfer",
                value={"player_id": 7, "from_team_id": 1, "to_team_id": 2, "fee": "1500000.00"},
                request_only=True,
            ),
            OpenApiExample(
                "Requested",
                value=TRANSFER_EXAMPLE,
                response_only=True,
                status_codes=["201"],
            ),
        ],
    ),
)
class TransferListApi(generics.ListCreateAPIView):
    """Transfers, newest first (filters: ``state``, ``player_id``, ``team_id``); POST
    requests one. A request is answered 201 in state ``requested``; the teams service
    completes or rejects it asynchronously."""

    serializer_class = TransferSerializer
    permission_model = Transfer  # POST: transfers.add_transfer (the transfer desk)

    def get_queryset(self):
        # A plain dict: as a QueryDict, an empty ?state= would count as absent.
        filters = _Filters(data=self.request.query_params.dict())
        filters.is_valid(raise_exception=True)
        return selectors.transfer_list(**filters.validated_data)

    def get_serializer_class(self):
        return TransferRequestSerializer if self.request.method == "POST" else TransferSerializer

    def create(self, request: Request, *args, **kwargs) -> Response:
        data = TransferRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            transfer = services.transfer_request(**data.validated_data)
        except TeamsServiceUnavailable as exc:
            raise TeamsServiceDown(str(exc)) from exc
        return Response(TransferSerializer(transfer).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        operation_id="transfers_retrieve",
        responses={200: TransferSerializer, **errors(404, e404={"detail": "Transfer 9 does not exist."})},
        examples=[
            OpenApiExample(
                "Completed",
                value={**TRANSFER_EXAMPLE, "state": "completed", "completed_at": "2026-07-01T12:00:03Z"},
                response_only=True,
            )
        ],
    )
)
class TransferDetailApi(generics.RetrieveAPIView):
    serializer_class = TransferSerializer

    def get_queryset(self):
        return selectors.transfer_list()

    def get_object(self) -> Transfer:
        return object_or_404(self.get_queryset(), "Transfer", self.kwargs["pk"])


@extend_schema_view(
    post=extend_schema(
        operation_id="transfers_cancel",
        request=TransferCancelSerializer,
        responses={
            202: TransferSerializer,
            **errors(
                400,
                401,
                403,
                404,
                409,
                e400={"reason": ["Ensure this field has no more than 500 characters."]},
                e404={"detail": "Transfer 9 does not exist."},
                e409={
                    "detail": "Transfer 1 is already completed; only a transfer in flight (requested or "
                    "cancelling) can be cancelled."
                },
            ),
        },
        examples=[
            OpenApiExample("Cancel", value={"reason": "The clubs called it off."}, request_only=True),
            OpenApiExample(
                "Cancelling",
                value={**TRANSFER_EXAMPLE, "state": "cancelling", "reason": "The clubs called it off."},
                response_only=True,
                status_codes=["202"],
            ),
        ],
    )
)
class TransferCancelApi(generics.GenericAPIView):
    """Ask the teams service to cancel a transfer in flight. Answered 202 in state
    ``cancelling``: teams decides, and the transfer ends ``cancelled`` if the player had not
    moved, ``completed`` if he had. Needs the ``transfers.cancel_transfer`` permission."""

    serializer_class = TransferCancelSerializer
    # kernel/permissions.py: a 403 names the permission and the role (Transfer desk).
    required_permissions = {"POST": ["transfers.cancel_transfer"]}

    def post(self, request: Request, pk: int) -> Response:
        data = TransferCancelSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reason = data.validated_data.get("reason") or f"Cancelled by {request.user.get_username()}."
        try:
            transfer = services.transfer_cancel(transfer_id=pk, reason=reason)
        except services.TransferNotFound as exc:
            raise Http404(str(exc)) from exc
        except services.TransferFinished as exc:
            raise TransferConflict(str(exc)) from exc
        return Response(TransferSerializer(transfer).data, status=status.HTTP_202_ACCEPTED)
