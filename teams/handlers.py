"""Event handlers of this service (registered in AppConfig.ready)."""
