from django.apps import AppConfig


class TransfersConfig(AppConfig):
    name = "transfers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events.metrics import register_scrape_collector

        from . import handlers  # noqa: F401  (registers the consumers' handlers)
        from .metrics import OverdueCollector

        register_scrape_collector(OverdueCollector())
