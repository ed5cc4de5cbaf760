from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "teams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the consumers' handlers and what the service answers to the pages.
        from . import handlers, queries  # noqa: F401
