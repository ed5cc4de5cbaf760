"""What an API accepts always fits the event it ends in.

For each write serializer, hypothesis feeds it values (typical, odd and hostile); every
value the serializer accepts goes on to the service behind it, which either refuses it with
a ``ValidationError`` (a 400 with field messages) or records an event whose data satisfies
the event's schema in ``events/catalogue.py``. ``events.publish`` refusing the payload
(``InvalidEventData``, a 500 at the API) fails the property: that is how ``fee="-0"`` got
through once. Each example runs in a savepoint that is rolled back.
"""

from __future__ import annotations

import jsonschema
import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import catalogue
from events.models import OutboxMessage

pytestmark = pytest.mark.django_db

PROPERTY = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

# Any JSON scalar, for fields given the wrong type.
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
names = st.one_of(st.text(max_size=120), st.sampled_from(["", " ", "Ajax", "\u200b", "Café", "x" * 100]), scalars)
positions = st.one_of(st.sampled_from(["GK", "DEF", "MID", "ST", "gk", ""]), scalars)
ids = st.one_of(st.integers(min_value=-5, max_value=2**63), st.sampled_from([1, 2, 11]), scalars)
decimals_as_text = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"-?[0-9]{0,14}(\.[0-9]{0,3})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
    st.sampled_from(["-0", "-0.00", "-0e-1", "0E+2", "-0E-10", "1e40", "NaN", "-Infinity", " 1.00 "]),
)
fees = st.one_of(
    st.sampled_from(["-0", "-0.00", "-0e-1", "0.001", "-0.004"]),
    decimals_as_text,
    st.integers(min_value=-10, max_value=10**12),
    st.floats(),
    scalars,
)
goals = st.one_of(st.integers(min_value=-2, max_value=120), scalars)


def ends_in_valid_events(call) -> None:
    """Run ``call`` in a rolled-back savepoint: refused (``ValidationError``), or every
    event it recorded satisfies its schema."""
    with transaction.atomic():
        seen = OutboxMessage.objects.count()
        try:
            call()
        except DjangoValidationError:
            pass
        else:
            for message in OutboxMessage.objects.order_by("id")[seen:]:
                jsonschema.validate(message.envelope["data"], catalogue.get(message.type).schema)
        transaction.set_rollback(True)


def accepted(serializer_class, data, **kwargs):
    serializer = serializer_class(data=data, **kwargs)
    return serializer.validated_data if serializer.is_valid() else None


# --- teams ------------------------------------------------------------------------------
@given(
    name=names,
    players=st.one_of(st.none(), st.lists(st.fixed_dictionaries({"name": names, "position": positions}), max_size=3)),
)
@PROPERTY
def test_team_create_accepts_only_what_team_created_carries(name, players):
    from teams import services
    from teams.serializers import TeamCreateInputSerializer

    data = {"name": name} if players is None else {"name": name, "players": players}
    valid = accepted(TeamCreateInputSerializer, data)
    if valid is not None:
        ends_in_valid_events(lambda: services.team_create(name=valid["name"], players=valid.get("players")))


@given(name=names)
@PROPERTY
def test_team_rename_accepts_only_what_team_renamed_carries(name):
    from teams import services
    from teams.factories import TeamFactory
    from teams.serializers import TeamUpdateInputSerializer

    valid = accepted(TeamUpdateInputSerializer, {"name": name}, partial=True)
    if valid is not None and "name" in valid:
        ends_in_valid_events(lambda: services.team_rename(team=TeamFactory(name="Original"), name=valid["name"]))


@given(name=names, position=positions)
@PROPERTY
def test_player_add_accepts_only_what_player_added_carries(name, position):
    from teams import services
    from teams.factories import TeamFactory
    from teams.serializers import PlayerInputSerializer

    valid = accepted(PlayerInputSerializer, {"name": name, "position": position})
    if valid is not None:
        ends_in_valid_events(lambda: services.player_add(team=TeamFactory(), **valid))


# --- transfers --------------------------------------------------------------------------
# Mostly the one player and team the replica has, so that most examples reach the service.
# Transactional: the service opens a durable transaction of its own (no savepoint around it).
@pytest.mark.django_db(transaction=True)
@given(fee=fees, player_id=st.one_of(st.just(11), ids), to_team_id=st.one_of(st.just(2), ids))
@example(fee="-0", player_id=11, to_team_id=2)
@example(fee="-0.00", player_id=11, to_team_id=2)
@example(fee="-0e-1", player_id=11, to_team_id=2)
@PROPERTY
def test_transfer_request_accepts_only_what_transfer_requested_carries(fee, player_id, to_team_id):
    from transfers import services
    from transfers.factories import PlayerReplicaFactory, TeamReplicaFactory
    from transfers.models import Transfer
    from transfers.serializers import TransferRequestSerializer

    data = {"player_id": player_id, "from_team_id": 1, "to_team_id": to_team_id, "fee": fee}
    valid = accepted(TransferRequestSerializer, data)
    # Only ids the replica has: another would be fetched from a teams service (none runs here).
    if valid is None or valid["to_team_id"] not in (1, 2) or valid["player_id"] != 11:
        return
    reds = TeamReplicaFactory(team_id=1, name="Reds")
    TeamReplicaFactory(team_id=2, name="Blues")
    if not reds.players.filter(player_id=11).exists():
        PlayerReplicaFactory(team=reds, player_id=11, name="Ann", position="GK")
    try:
        services.transfer_request(**valid)
    except DjangoValidationError:
        pass
    for message in OutboxMessage.objects.all():
        jsonschema.validate(message.envelope["data"], catalogue.get(message.type).schema)
    OutboxMessage.objects.all().delete()
    Transfer.objects.all().delete()


def test_the_fee_property_covers_negative_zero():
    """The values that broke the fee once are accepted and normalized, not refused."""
    from transfers.serializers import TransferRequestSerializer

    for fee in ("-0", "-0.00", "-0e-1"):
        valid = accepted(TransferRequestSerializer, {"player_id": 11, "from_team_id": 1, "to_team_id": 2, "fee": fee})
        assert valid is not None and str(valid["fee"]) == "0.00", fee
        jsonschema.validate(f"{valid['fee']:.2f}", catalogue.get("transfer.requested").schema["properties"]["fee"])


# --- fixtures ---------------------------------------------------------------------------
@given(
    name=names,
    starts_on=st.one_of(st.dates().map(str), scalars),
    team_ids=st.one_of(st.lists(ids, max_size=5), scalars),
)
@PROPERTY
def test_season_schedule_accepts_only_what_season_scheduled_carries(name, starts_on, team_ids):
    from fixtures import services
    from fixtures.factories import TeamReplicaFactory
    from fixtures.serializers import SeasonScheduleInputSerializer

    valid = accepted(SeasonScheduleInputSerializer, {"name": name, "starts_on": starts_on, "team_ids": team_ids})
    if valid is None:
        return

    def schedule():
        for team_id in (1, 2, 11):
            TeamReplicaFactory(team_id=team_id)
        services.season_schedule(**valid)

    ends_in_valid_events(schedule)


@given(home_goals=goals, away_goals=goals, correction=st.one_of(st.booleans(), scalars))
@PROPERTY
def test_fixture_result_accepts_only_what_fixture_completed_carries(home_goals, away_goals, correction):
    from fixtures import services
    from fixtures.factories import FixtureFactory
    from fixtures.serializers import FixtureResultInputSerializer

    valid = accepted(
        FixtureResultInputSerializer, {"home_goals": home_goals, "away_goals": away_goals, "correction": correction}
    )
    if valid is not None:
        ends_in_valid_events(lambda: services.fixture_record_result(fixture=FixtureFactory(), **valid))
