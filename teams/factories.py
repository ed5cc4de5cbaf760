"""factory_boy factories for tests. They write rows directly, without events: use them to
set up state, and the services to test behaviour."""

from __future__ import annotations

import factory

from .models import Player, Position, Team


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")


class PlayerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Player

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Player {n}")
    position = factory.Iterator(Position.values)
