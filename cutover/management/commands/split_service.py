"""``manage.py split_service NAME --database-url URL``: move a service out of the running
monolith (cutover/split.py); ``--dry-run`` prints the plan and the row counts; ``--rollback``
undoes an unfinished run; ``--cleanup NAME`` removes the monolith's leftovers afterwards."""

from __future__ import annotations

import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cutover import deployment, split, supervisor
from cutover.supervisor import Supervisor


class Command(BaseCommand):
    help = "Move one service from the running monolith to a database of its own, under live traffic."

    def add_arguments(self, parser):
        parser.add_argument("service", nargs="?", help=f"the service to move: one of {', '.join(settings.SERVICES)}")
        parser.add_argument("--database-url", help="the new database (postgres://… or sqlite:////path)")
        parser.add_argument("--dry-run", action="store_true", help="print the plan and the row counts; change nothing")
        parser.add_argument("--rollback", action="store_true", help="undo a run that stopped before the switch")
        parser.add_argument("--back", action="store_true", help="bring a moved service back into the monolith")
        parser.add_argument(
            "--cleanup", metavar="SERVICE", help="drop a moved service's leftover tables in the monolith"
        )
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to wait for each step's processes (default 120)"
        )
        parser.add_argument(
            "--drain-timeout",
            type=float,
            default=60.0,
            help="seconds to wait for the monolith's relay to publish the service's last events (default 60)",
        )
        parser.add_argument(
            "--supervisor",
            choices=("runstack", "compose"),
            default="runstack",
            help="who runs the processes: a running `manage.py runstack` (default) or docker compose's monolith "
            "profile, driven from this host (docs/MIGRATION.md, 'In docker compose')",
        )
        parser.add_argument(
            "--compose",
            metavar="COMMAND",
            help="with --supervisor compose: the compose command the stack was started with, without --profile "
            "(e.g. 'docker compose -p league -f docker-compose.yml'); default `docker compose` (or docker-compose) "
            "in the current directory",
        )

    def handle(
        self,
        *args,
        service,
        database_url,
        dry_run,
        rollback,
        back,
        cleanup,
        yes,
        timeout,
        drain_timeout,
        supervisor,
        compose,
        **options,
    ):
        if compose and supervisor != "compose":
            raise CommandError("--compose goes with --supervisor compose")
        if back and supervisor != "runstack":
            raise CommandError("--back works with runstack only (docs/MIGRATION.md, 'In docker compose')")
        try:
            if cleanup:
                return self.cleanup(cleanup, yes)
            if not service:
                raise CommandError(
                    f"name the service to move: split_service NAME (one of {', '.join(settings.SERVICES)})"
                )
            if service not in settings.SERVICES:
                raise CommandError(f"unknown service {service!r}: choose one of {', '.join(settings.SERVICES)}")
            if rollback:
                return self.rollback(service, self.supervisor(supervisor, compose, timeout))
            if back:
                if not yes and not self.confirm(f"Bring {service} back into the monolith now?"):
                    raise CommandError("not confirmed: nothing changed (pass --yes to skip the question)")
                placed = deployment.placement(settings.DATA_DIR, service) or {}
                run = split.Split(
                    service, placed.get("database_url", ""), self.stdout, timeout=timeout, drain_timeout=drain_timeout
                )
                run.back()
                return None
            if not database_url:
                previous = deployment.placement(settings.DATA_DIR, service)
                if not previous:
                    raise CommandError("--database-url is required: the database the service moves to")
                database_url = previous["database_url"]
            split.database_config(database_url)  # a bad URL fails here, before anything changes
            if dry_run:
                for line in split.plan(service, database_url):
                    self.stdout.write(line)
                return None
            if not yes and not self.confirm(f"Move {service} to {split.mask(database_url)} now?"):
                raise CommandError("not confirmed: nothing changed (pass --yes to skip the question)")
            run = split.Split(
                service,
                database_url,
                self.stdout,
                timeout=timeout,
                drain_timeout=drain_timeout,
                progress=self.bar,
                supervisor=self.supervisor(supervisor, compose, timeout),
            )
            run.run()
        except split.SplitError as exc:
            raise CommandError(str(exc)) from exc
        return None

    def supervisor(self, name: str, compose: str | None, timeout: float) -> Supervisor:
        say = self.say
        if name == "compose":
            return supervisor.ComposeSupervisor(
                supervisor.compose_command(compose), settings.DATA_DIR, timeout=timeout, say=say
            )
        return supervisor.RunstackSupervisor(settings.DATA_DIR, timeout=timeout, say=say)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def bar(self, total: int, done: int):
        from tqdm import tqdm

        # A bar on a terminal; in a log (no tty) the step lines and the table say enough.
        return tqdm(
            total=total,
            initial=done,
            unit="row",
            file=sys.stdout,
            leave=False,
            dynamic_ncols=True,
            disable=not sys.stdout.isatty(),
        )

    def confirm(self, question: str) -> bool:
        if not sys.stdin.isatty():
            return False
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")

    def rollback(self, service: str, sup: Supervisor) -> None:
        placed = deployment.placement(settings.DATA_DIR, service)
        if not placed:
            self.stdout.write(f"{service} has no unfinished move: nothing to roll back.")
            return
        run = split.Split(service, placed["database_url"], self.stdout, supervisor=sup)
        run.rollback(placed)
        self.stdout.write(f"rolled back: {service} runs in the monolith as before.")

    def cleanup(self, service: str, yes: bool) -> None:
        if not yes and not self.confirm(f"Drop {service}'s leftover tables from the monolith's database?"):
            raise CommandError("not confirmed: nothing changed (pass --yes to skip the question)")
        split.cleanup(service, self.stdout)
        self.stdout.write(f"removed the leftovers of {service} from the monolith's database.")
