from django.apps import AppConfig


class TeamsConfig(AppConfig):
    name = "teams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events import retention
        from kernel import roles

        # Registers the consumers' handlers and what the service answers to the pages.
        from . import handlers, queries, services  # noqa: F401
        from .roles import ROLES

        roles.register(self.label, ROLES)
        retention.register_purge("moves", services.moves_purge)
