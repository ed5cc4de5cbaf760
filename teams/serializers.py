"""Input and output shapes of the teams API. Input serializers check types only; the
services own the rules (and their messages)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from .models import POSITION_ERROR, Player, Position, Team


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# Blank values pass here so the service answers with its own message ("Team name cannot be empty.").
class PlayerInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100, allow_blank=True)
    position = serializers.ChoiceField(choices=Position.choices, error_messages={"invalid_choice": POSITION_ERROR})


class TeamCreateInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100, allow_blank=True)
    players = PlayerInputSerializer(many=True, required=False)


class TeamUpdateInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100, allow_blank=True)


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


class TeamExportSerializer(serializers.Serializer):
    teams = TeamExportItemSerializer(many=True)
