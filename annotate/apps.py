from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Loupe"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in workers: services send them by
        # name (services.dispatch.enqueue_after_commit), so the web process must know them too.
        from . import tasks  # noqa: F401, PLC0415
