from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from events import topology


class Command(BaseCommand):
    help = "Create the SNS topics, SQS queues, DLQs, policies and subscriptions of the bus (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Only report drift; exit 1 if any.")
        parser.add_argument("--service", action="append", help="Limit to these services' queues (repeatable).")
        parser.add_argument(
            "--format",
            choices=["cloudformation"],
            help="Make nothing: print what setup_bus makes, and each process's IAM role, as a template.",
        )

    def handle(self, *args, check: bool, service: list[str] | None, format: str | None = None, **options):
        if format == "cloudformation":
            from events import cloudformation

            self.stdout.write(cloudformation.render())
            return
        try:
            if check:
                unverified: list[str] = []
                drift = topology.check(service, unverified)
                for line in drift:
                    self.stdout.write(f"DRIFT       {line}")
                for line in unverified:
                    self.stdout.write(f"UNVERIFIED  {line}")
                if drift:
                    raise CommandError(
                        f"{len(drift)} difference(s) from the wanted topology. Run `manage.py setup_bus`."
                    )
                if unverified:
                    raise CommandError(
                        f"{len(unverified)} part(s) could not be verified with these credentials: "
                        "check with the setup role (`manage.py iam_policy all --role setup`)."
                    )
                self.stdout.write(self.style.SUCCESS("The bus topology matches."))
                return
            report = topology.ensure(service)
        except CommandError:
            raise
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:
            raise CommandError(f"Could not reach SNS/SQS ({exc}). Is AWS_ENDPOINT_URL right and moto running?") from exc
        for name in report.created:
            self.stdout.write(f"created  {name}")
        for name in report.updated:
            self.stdout.write(f"ok       {name}")
        self.stdout.write(self.style.SUCCESS("Bus ready."))
