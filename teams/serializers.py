"""Input and output shapes of the teams API. Input serializers check types only; the
services own the rules (and their messages)."""

from __future__ import annotations

from rest_framework import serializers

from kernel.names import NameField

from .models import POSITION_ERROR, Player, Position, Team


# Names are cleaned by kernel.names (NFC, no control characters) with the services' messages.
class PlayerInputSerializer(serializers.Serializer):
    name = NameField(label="Player name")
    position = serializers.ChoiceField(choices=Position.choices, error_messages={"invalid_choice": POSITION_ERROR})


class TeamCreateInputSerializer(serializers.Serializer):
    name = NameField(label="Team name")
    players = PlayerInputSerializer(many=True, required=False)


class TeamUpdateInputSerializer(serializers.Serializer):
    name = NameField(label="Team name")


class PlayerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Player
        fields = ["id", "name", "position"]


class TeamSerializer(serializers.ModelSerializer):
    """A team as the export and the detail give it; ``sequence`` comes from the selector."""

    sequence = serializers.IntegerField(read_only=True)
    players = PlayerSerializer(many=True, read_only=True)

    class Meta:
        model = Team
        fields = ["id", "name", "sequence", "players", "created_at"]


class TeamExportItemSerializer(TeamSerializer):
    class Meta(TeamSerializer.Meta):
        fields = ["id", "name", "sequence", "players"]

