from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from feedback.models import Alert
        from registry.models import AuditEvent

        from . import logging as _logging  # noqa: F401  Celery request-id signal handlers
        from . import status_cache
        from .webhooks import on_alert_saved, on_audit_event

        # registry and feedback never import this app (STYLE R2): their rows are the events
        post_save.connect(
            on_audit_event, sender=AuditEvent, dispatch_uid="dashboard.webhooks.audit"
        )
        post_save.connect(on_alert_saved, sender=Alert, dispatch_uid="dashboard.webhooks.alert")
        # every ORM write to what the status endpoint shows moves the application's generation
        status_cache.connect()
