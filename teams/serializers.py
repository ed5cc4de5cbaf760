"""Input and output shapes of the teams API. Input serializers check types only; the
services own the rules (and their messages)."""

from __future__ import annotations

from rest_framework import serializers

from kernel.names import NameField, ShortNameField

from .models import POSITION_ERROR, Player, Position, Team


# Names are cleaned by kernel.names (NFC, no control characters) with the services' messages.
class PlayerInputSerializer(serializers.Serializer):
    name = NameField(label="Player name")
    position = serializers.ChoiceField(choices=Position.choices, error_messages={"invalid_choice": POSITION_ERROR})


SHORT_NAME_HELP = (
    "2 to 5 letters or digits (any script, no space), stored upper-cased (\"red\" is stored as RED); not unique. Left out on create, it is "
    "derived from the name (kernel/names.py: one word gives its first three characters, more the initials of "
    "the first three words, e.g. Reds -> RED, Queens Park Rangers -> QPR, Real Madrid -> RMA)."
)


class TeamCreateInputSerializer(serializers.Serializer):
    name = NameField(label="Team name")
    short_name = ShortNameField(required=False, help_text=SHORT_NAME_HELP)
    players = PlayerInputSerializer(many=True, required=False)


class TeamUpdateInputSerializer(serializers.Serializer):
    name = NameField(label="Team name")
    short_name = ShortNameField(
        required=False,
        help_text=(
            "2 to 5 letters or digits (any script, no space), stored upper-cased. Left out while the name changes, a short name derived from "
            "the old name is derived again from the new one; one someone chose is kept."
        ),
    )


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
        fields = ["id", "name", "short_name", "sequence", "players", "created_at"]
        extra_kwargs = {"short_name": {"help_text": "2 to 5 letters or digits, upper-cased; not unique."}}


class TeamExportItemSerializer(TeamSerializer):
    class Meta(TeamSerializer.Meta):
        fields = ["id", "name", "short_name", "sequence", "players"]

