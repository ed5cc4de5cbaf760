from __future__ import annotations

from decimal import Decimal

import factory
from django.utils import timezone

from .models import PlayerReplica, TeamReplica, Transfer, TransferState


class TeamReplicaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TeamReplica
        django_get_or_create = ["team_id"]

    team_id = factory.Sequence(lambda n: 1000 + n)
    name = factory.Sequence(lambda n: f"Team {n}")
    sequence = 1
    name_sequence = factory.SelfAttribute("sequence")

    class Params:
        deleted = factory.Trait(deleted_at=factory.LazyFunction(timezone.now))


class PlayerReplicaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlayerReplica

    team = factory.SubFactory(TeamReplicaFactory)
    player_id = factory.Sequence(lambda n: 5000 + n)
    name = factory.Sequence(lambda n: f"Player {n}")
    position = "MID"
    present = True
    sequence = factory.SelfAttribute("team.sequence")


class TransferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Transfer

    player_id = factory.Sequence(lambda n: 9000 + n)
    player_name = factory.Sequence(lambda n: f"Player {n}")
    from_team_id = 1
    to_team_id = 2
    fee = Decimal("1000.00")
    state = TransferState.REQUESTED
