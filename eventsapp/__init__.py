"""eventsapp: product analytics on PostgreSQL."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from flask import Blueprint, Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: read settings, pick the database, bind extensions, register blueprints."""
    from . import config as settings_module
    from . import observability
    from .database import MIGRATIONS_DIR, SchemaGate, resolve_database_url, upgrade_embedded_schema
    from .errors import EventsApi, register_error_handlers
    from .extensions import db, migrate

    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    settings = settings_module.from_env()
    settings.update(config or {})
    app.config.update(settings_module.flask_settings(settings))
    app.config.update(settings)
    observability.configure_logging(
        observability.effective_log_level(app.config["EVENTSAPP_LOG_LEVEL"], serving=False)
    )

    app.config["SQLALCHEMY_DATABASE_URI"] = resolve_database_url(app)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    api = EventsApi(app)
    app.extensions["eventsapp_schema_gate"] = SchemaGate()
    from . import security
    observability.init_app(app)  # request ids first, so every later hook is covered; /metrics
    # Schema gate, API keys, rate limits, OpenAPI security; before blueprints are registered.
    security.init_app(app, api)

    _register_blueprints(app, api)
    from .sdk.cors import init_cors
    init_cors(app)  # after the blueprints: CORS covers the routes policy.py marks browser_ok
    register_error_handlers(app)
    _register_cli(app)

    if app.config.get("EVENTSAPP_EMBEDDED"):
        upgrade_embedded_schema(app)
    from .database import adopt_project_timezone
    adopt_project_timezone(app)  # the database's project timezone wins over EVENTSAPP_TIMEZONE
    if not observability.in_cli_command():
        observability.announce_start(app)  # `flask serve` announces when it starts serving
    return app


def _register_blueprints(app: Flask, api) -> None:
    import flask_swagger_ui

    from .health.routes import blp as health_blp
    from .ingest.routes import blp as ingest_blp

    api.register_blueprint(health_blp)
    api.register_blueprint(ingest_blp)
    from .stats.routes import blp as stats_blp
    api.register_blueprint(stats_blp)
    from .sdk.routes import posthog_blp, segment_blp
    api.register_blueprint(segment_blp)
    api.register_blueprint(posthog_blp)
    from .sdk.browser import blp as sdk_browser_blp
    api.register_blueprint(sdk_browser_blp)
    # Swagger UI's assets come from the installed package, so /docs works with no internet.
    assets = Path(flask_swagger_ui.__file__).resolve().parent / "dist"
    app.register_blueprint(Blueprint("docs_assets", __name__, static_folder=str(assets),
                                     static_url_path="/docs-assets"))
    from .dashboard.routes import bp as dashboard_bp
    app.register_blueprint(dashboard_bp)
    from .people.routes import admin_blp as people_admin_blp, blp as people_blp
    api.register_blueprint(people_blp)
    api.register_blueprint(people_admin_blp)
    from .export.routes import blp as export_blp
    api.register_blueprint(export_blp)


def _register_cli(app: Flask) -> None:
    from .serving import serve_command
    app.cli.add_command(serve_command)
    from .stats.cli import rollups_cli
    app.cli.add_command(rollups_cli)
    from .importer.cli import import_csv_command
    app.cli.add_command(import_csv_command)
    from .people.cli import users_cli
    app.cli.add_command(users_cli)
    from .export.cli import export_events_command
    app.cli.add_command(export_events_command)

