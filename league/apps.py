from django.apps import AppConfig


class LeagueConfig(AppConfig):
    name = "league"
    verbose_name = "League Manager"

    def ready(self) -> None:
        # Spans leave the process only when OTEL_EXPORTER_OTLP_ENDPOINT is set (league/telemetry.py).
        from . import telemetry

        telemetry.setup()
        # Failed password logins count towards the login lock (league/throttling.py).
        from . import throttling

        throttling.connect_signals()
