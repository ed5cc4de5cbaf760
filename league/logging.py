"""Structured logs: structlog for new code, and the stdlib ``logging`` calls that exist
everywhere (``logging.getLogger(__name__)``) rendered by the same processors.

Every line carries the ``correlation_id`` and ``causation_id`` bound by
``events.context.bound`` (a request's ``X-Request-ID``, or the event being handled), so
one id follows a request through the outbox, the bus and every consumer's log.

JSON, one object a line, when DEBUG is off (or ``LOG_JSON=1``); a readable console
rendering when it is on. ``settings.py`` calls ``configure_structlog`` and uses
``logging_config`` as ``LOGGING``.
"""

from __future__ import annotations

import sys
from typing import Any

import structlog

_IDS = ("correlation_id", "causation_id")


def drop_unset_ids(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Leave ``correlation_id``/``causation_id`` out of a line when nothing is bound."""
    for key in _IDS:
        if key in event_dict and event_dict[key] is None:
            del event_dict[key]
    return event_dict


def shared_processors() -> list[Any]:
    """What both structlog and stdlib records go through before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        drop_unset_ids,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def renderer(json: bool) -> Any:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def formatter(json: bool) -> structlog.stdlib.ProcessorFormatter:
    """The ``logging.Formatter`` that renders every record (tests attach it to a handler)."""
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final += [structlog.processors.format_exc_info, structlog.processors.StackInfoRenderer()]
    final.append(renderer(json))
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared_processors(), processors=final)


def configure_structlog() -> None:
    """structlog loggers hand their event dict to stdlib logging, where the formatter
    above renders it: one pipeline, one output, whichever API wrote the line."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(*, level: str, json: bool) -> dict[str, Any]:
    """The ``LOGGING`` dict: one console handler with the structlog formatter."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": "league.logging.formatter",
                "json": json,
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "botocore": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
            "celery": {"level": "WARNING"},
        },
    }
