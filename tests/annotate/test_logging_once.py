"""Each record of Django's request logger is printed once (found by QA: "Not Found" and every
traceback appeared twice in the `make run` output, from Django's default console handler and ours)."""
import logging


def _handlers_on_the_way_up(name: str) -> list[logging.Handler]:
    out, logger = [], logging.getLogger(name)
    while logger is not None:
        out += logger.handlers
        logger = logger.parent if logger.propagate else None
    return out


def test_a_django_request_record_reaches_one_console_handler(settings):
    settings.DEBUG = True  # Django's default console handler only printed under DEBUG, as in `make run`
    # handlers from LOGGING/Django's DEFAULT_LOGGING are named ("console"); pytest's capture handlers are not
    handlers = [h for h in _handlers_on_the_way_up("django.request") if h.get_name() == "console"]
    assert len(handlers) == 1, handlers
