"""Extensions, created unbound here and bound to the app in ``create_app``."""
from __future__ import annotations

from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from prometheus_flask_exporter import PrometheusMetrics

from .models import metadata

db = SQLAlchemy(metadata=metadata)
migrate = Migrate(compare_type=True)
api = Api()
metrics = PrometheusMetrics.for_app_factory(group_by="endpoint", default_labels={})
