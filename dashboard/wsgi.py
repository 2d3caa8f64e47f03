import os

from django.core.wsgi import get_wsgi_application
from django.urls import reverse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
application = get_wsgi_application()

# Load the URLconf now, and with it every view, serializer and DRF setting, instead of in each
# worker's first requests: gunicorn preloads this module once (gunicorn.conf.py) and forks its
# workers, and the workers it starts again every max_requests, from that warm process.
reverse("livez")
