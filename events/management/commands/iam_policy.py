import json

from django.core.management.base import BaseCommand, CommandError

from events import iam


class Command(BaseCommand):
    help = (
        "Print the least-privilege IAM policy (JSON) of a service's process role, generated from the "
        "bus topology: relay (publish its own events), consumer (its own queue), web, setup."
    )

    def add_arguments(self, parser):
        parser.add_argument("service", help="teams, transfers, fixtures, live, or all (the monolith)")
        parser.add_argument("--role", required=True, choices=iam.ROLES)
        parser.add_argument("--account", default="*", help="AWS account id in the ARNs (default any)")
        parser.add_argument("--region", default=None, help="region in the ARNs (default AWS_REGION)")
        parser.add_argument("--partition", default="aws")

    def handle(self, *args, service: str, role: str, account: str, region: str | None, partition: str, **options):
        from django.conf import settings

        arns = iam.Arns(partition, region or settings.AWS_REGION, account)
        try:
            document = iam.policy(service, role, arns)
        except iam.UnknownService as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(document, indent=2))
