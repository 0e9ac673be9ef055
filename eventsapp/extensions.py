"""Extensions, created unbound here and bound to the app in ``create_app``.

The API (flask-smorest) and the metrics are made per app in ``create_app`` instead: each holds that
app's OpenAPI spec / Prometheus registry, which two apps in one process must not share.
"""
from __future__ import annotations

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from .models import metadata

db = SQLAlchemy(metadata=metadata)
migrate = Migrate(compare_type=True)
