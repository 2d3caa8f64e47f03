"""`manage.py invalidate_caches` makes a write that bypassed the application visible at once."""

import io

from django.core.management import call_command
from django.db import connection
from django.urls import reverse


def _desired(client):
    url = reverse("application-status", kwargs={"slug": "home-feed"})
    return client.get(url).json()["deployments"][0]["replicas"]["expected"]


def test_a_write_behind_the_applications_back_shows_after_invalidate_caches(api_client, serving):
    app, dep, _, _ = serving
    _desired(api_client)
    assert _desired(api_client) == 4  # served from the cache now
    with connection.cursor() as cursor:  # as psql would: no signal, no bump
        cursor.execute(
            "UPDATE registry_deployment SET desired_replicas = 9 WHERE id = %s", [dep.pk]
        )
    assert _desired(api_client) == 4  # the cache cannot know

    call_command("invalidate_caches", stdout=io.StringIO())

    assert _desired(api_client) == 9
