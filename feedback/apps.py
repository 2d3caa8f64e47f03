from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"
    verbose_name = "Feedback and quality"

    def ready(self) -> None:
        from registry.services.probes import replica_consistency_changed

        from .replica_alerts import alert_on_replica_consistency

        # replica probes fire alerts without registry importing feedback (STYLE R2)
        replica_consistency_changed.connect(
            alert_on_replica_consistency, dispatch_uid="feedback.replica_alerts"
        )
