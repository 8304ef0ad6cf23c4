from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Loupe"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in workers: services send them by
        # name (services.dispatch.enqueue_after_commit), so the web process must know them too.
        from . import tasks  # noqa: F401, PLC0415

        # The cached copy of a user (annotate/cached_auth.py) goes when the row changes, whoever
        # changes it (admin, a password change, a management command): a signal, not every writer.
        from django.contrib.auth import get_user_model  # noqa: PLC0415
        from django.db.models.signals import post_delete, post_save  # noqa: PLC0415

        from .cached_auth import user_forget  # noqa: PLC0415

        post_save.connect(user_forget, sender=get_user_model(), dispatch_uid="loupe.user_forget.save")
        post_delete.connect(user_forget, sender=get_user_model(), dispatch_uid="loupe.user_forget.delete")
