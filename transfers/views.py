from __future__ import annotations

from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response

from . import selectors, services
from .models import TransferState
from .serializers import TeamReplicaSerializer, TransferRequestSerializer, TransferSerializer
from .teams_client import TeamsServiceUnavailable


class TeamsServiceDown(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The teams service is unavailable. Try again later."
    default_code = "teams_service_unavailable"


class TeamReplicaListView(generics.ListAPIView):
    """The teams this service knows (its replica), with their players. Read-only."""

    serializer_class = TeamReplicaSerializer

    def get_queryset(self):
        return selectors.team_list()


class _Filters(serializers.Serializer):
    state = serializers.ChoiceField(choices=TransferState.choices, required=False)
    player_id = serializers.IntegerField(min_value=1, required=False)
    team_id = serializers.IntegerField(min_value=1, required=False)


class TransferListCreateView(generics.ListCreateAPIView):
    """Transfers, newest first (filters: ``state``, ``player_id``, ``team_id``); POST
    requests one. A request is answered 201 in state ``requested``; the teams service
    completes or rejects it asynchronously."""

    serializer_class = TransferSerializer
    permission_classes = [IsAuthenticatedOrReadOnly]

    def get_queryset(self):
        filters = _Filters(data=self.request.query_params)
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


class TransferDetailView(generics.RetrieveAPIView):
    serializer_class = TransferSerializer

    def get_queryset(self):
        return selectors.transfer_list()
