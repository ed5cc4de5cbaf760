from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from kernel.names import TextField
from kernel.replica import ReplicatedTeamSerializer

from .models import PlayerReplica, Transfer


class PlayerReplicaSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="player_id")

    class Meta:
        model = PlayerReplica
        fields = ["id", "name", "position"]


class TeamReplicaSerializer(ReplicatedTeamSerializer):
    """The shape of a replicated team in every service (kernel/replica.py: ``id`` is the
    team's id, as in the teams API), plus this replica's players and last sync."""

    players = PlayerReplicaSerializer(source="squad", many=True, read_only=True)
    synced_at = serializers.DateTimeField(allow_null=True)


class TransferSerializer(serializers.ModelSerializer):
    overdue = serializers.BooleanField(
        read_only=True, help_text="In flight (requested or cancelling) past its deadline `expires_at`."
    )

    class Meta:
        model = Transfer
        fields = [
            "id",
            "player_id",
            "player_name",
            "from_team_id",
            "to_team_id",
            "fee",
            "state",
            "reason",
            "created_at",
            "updated_at",
            "completed_at",
            "expires_at",
            "overdue",
        ]
        read_only_fields = fields


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        # At least one digit; a sign only on zero ("-0" is zero): what the field accepts.
        "pattern": r"^(?:\d{1,10}(?:\.\d{0,2})?|\d{0,10}\.\d{1,2}|-0{1,10}(?:\.0{0,2})?|-0{0,10}\.0{1,2})$",
    }
)
class FeeField(serializers.DecimalField):
    """A non-negative amount with two decimals, as the events carry it: ``"-0"``,
    ``"-0.00"`` and ``"-0e-1"`` are zero, without the sign the event schema refuses."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        return abs(value) if value == 0 else value


class TransferRequestSerializer(serializers.Serializer):
    """Input of POST /api/transfers/; the business rules live in ``transfer_request``."""

    player_id = serializers.IntegerField(min_value=1)
    from_team_id = serializers.IntegerField(min_value=1)
    to_team_id = serializers.IntegerField(min_value=1)
    fee = FeeField(max_digits=12, decimal_places=2, min_value=0)


class TransferCancelSerializer(serializers.Serializer):
    """Input of POST /api/transfers/{id}/cancel/ (the body may be empty)."""

    reason = TextField(
        label="Reason",
        max_length=500,
        required=False,
        help_text="Why, on one line; recorded on the transfer (default: who cancelled it).",
    )
