from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events import retention
        from events.metrics import register_scrape_collector
        from kernel import roles

        # Registers the consumers' handlers and what the service answers to the pages.
        from . import handlers, queries, services  # noqa: F401
        from .metrics import OverdueCollector
        from .roles import ROLES

        register_scrape_collector(OverdueCollector())
        roles.register(self.label, ROLES)
        retention.register_purge("transfer sequences", services.transfer_sequences_purge)

    def check_serving(self) -> None:
        """Before a web process serves (``league/wsgi.py``, ``league/asgi.py``): transfers
        reads teams on a replica miss, so it needs ``TEAMS_SERVICE_URL``; without it the
        process stops here, naming the setting (``transfers/teams_client.py``)."""
        from django.core.exceptions import ImproperlyConfigured

        from .teams_client import TeamsServiceNotConfigured, base_url

        try:
            base_url()
        except TeamsServiceNotConfigured as exc:
            raise ImproperlyConfigured(str(exc)) from None
