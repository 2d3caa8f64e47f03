"""The Celery app: configured from Django settings (CELERY_*), tasks found in <app>/tasks.py."""

import gc
import os
from typing import Any

from celery import Celery, signals
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_process_init.connect(weak=False, dispatch_uid="dashboard.celery.gc_freeze")
def freeze_loaded_objects(**kwargs: Any) -> None:
    """A pool process is ready: move what is loaded out of the cycle collector's sight
    (gc.freeze), so collections during a task walk only the task's own objects."""
    gc.freeze()


@signals.task_prerun.connect(weak=False, dispatch_uid="dashboard.celery.db_prerun")
@signals.task_postrun.connect(weak=False, dispatch_uid="dashboard.celery.db_postrun")
def reuse_healthy_connections(sender: Any = None, **kwargs: Any) -> None:
    """Around each task, what Django does around each request: keep the connection unless it
    is broken or older than CONN_MAX_AGE (settings.CELERY_DB_REUSE_MAX says why).

    Not around an eager task: it runs inside its caller, maybe inside a transaction, whose
    connection is not the task's to close (Celery's fixup skips those too).
    """
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()
