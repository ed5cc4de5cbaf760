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
