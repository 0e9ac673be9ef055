"""Errors the API answers with, all as JSON: ``{"code", "status", "message", "errors"?}``.

flask-smorest's own machinery carries them: ``EventsApi.ERROR_SCHEMA`` documents the body and
``EventsApi.handle_http_exception`` writes it for every ``HTTPException``; ``document_errors`` is the
one way a view documents its error answers. ``Retry-After`` is set here for 503s, and by the rate
limiter for 429s; no other answer carries it.
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Callable, Mapping, NoReturn

import sqlalchemy as sa
from flask import Flask, jsonify
from flask_smorest import Api, Blueprint
from marshmallow import RAISE, Schema, fields
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

from .database import SchemaNotReady

log = logging.getLogger(__name__)

# Retry-After of each 503, as README's "When things go wrong" states them.
DATABASE_RETRY_AFTER_SECONDS = 5
SCHEMA_RETRY_AFTER_SECONDS = 30
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
}


class ErrorResponseSchema(Schema):
    """Every error answer: the HTTP status, a message for people, and field errors where there are any."""

    code = fields.Integer(required=True)
    status = fields.String(required=True)
    message = fields.String(required=True)
    errors = fields.Dict(
        metadata={"description": 'Errors by location and field, e.g. {"json": {"3": {"occurred_at": ["..."]}}}.'}
    )


class ApiError(Exception):
    """An error with an HTTP status, a message for people, and optionally errors by field."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.errors = errors
        self.headers = headers or {}


def error_response(status_code: int, message: str, errors: Any = None, headers: Mapping[str, str] | None = None):
    body: dict[str, Any] = {"code": status_code, "status": HTTPStatus(status_code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status_code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class EventsApi(Api):
    """flask-smorest's Api with our error body: documented by ERROR_SCHEMA, written by its handler."""

    ERROR_SCHEMA = ErrorResponseSchema

    def handle_http_exception(self, error: HTTPException):
        # Keep Werkzeug's headers (Allow on 405, ...), which flask-smorest's handler drops, and
        # always say something in `message`.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        data = getattr(error, "data", None) or {}
        headers.update(data.get("headers") or {})
        message = data.get("message") or error.description or HTTPStatus(error.code or 500).phrase
        errors = data.get("errors") or data.get("messages")
        return error_response(error.code or 500, message, errors, headers)


def document_errors(blp: Blueprint, errors: Mapping[int, str]) -> Callable:
    """Decorator documenting a view's error answers: status -> when it happens (ERROR_SCHEMA body).

    429 and 503 also document their Retry-After header.
    """

    def decorate(view: Callable) -> Callable:
        for status, description in errors.items():
            headers = RETRY_AFTER_HEADER if status in (429, 503) else None
            view = blp.alt_response(
                status, schema=EventsApi.ERROR_SCHEMA, description=description, headers=headers
            )(view)
        return view

    return decorate


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        return error_response(error.status_code, error.message, error.errors, error.headers)

    @app.errorhandler(SchemaNotReady)
    def handle_schema_not_ready(error: SchemaNotReady):
        return error_response(
            503, f"Not accepting requests yet: {error}", headers={"Retry-After": str(SCHEMA_RETRY_AFTER_SECONDS)}
        )

    @app.errorhandler(sa.exc.OperationalError)
    @app.errorhandler(sa.exc.InterfaceError)
    def handle_database_unavailable(error: sa.exc.DBAPIError):
        log.warning("database unavailable: %s", type(error.orig).__name__ if error.orig else error)
        return error_response(
            503,
            "Database unavailable; nothing from this request was stored. Retry later.",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )


# --- query parameters -------------------------------------------------------------------------------


class _QueryParser(FlaskParser):
    """Bad query parameters are the client's mistake: 400 naming each parameter, unknown ones included."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def handle_error(self, error, req, schema, *, error_status_code, error_headers) -> NoReturn:
        names = sorted(name for location in error.messages.values() if isinstance(location, dict)
                       for name in location)
        raise ApiError(f"Invalid query parameter(s): {', '.join(names)}.", status_code=400,
                       errors=error.messages)

    def load_querystring(self, req, schema):
        # `from=…&from=…` would silently use the first: ambiguous, so refused (only lists may repeat).
        single = {field.data_key or name for name, field in schema.fields.items()
                  if not isinstance(field, fields.List)}
        repeated = sorted(key for key in req.args if key in single and len(req.args.getlist(key)) > 1)
        if repeated:
            raise ApiError(f"Invalid query parameter(s): {', '.join(repeated)}.", status_code=400,
                           errors={"query": {key: ["Given more than once."] for key in repeated}})
        return super().load_querystring(req, schema)


class QueryBlueprint(Blueprint):
    """A blueprint whose query-parameter errors are 400s naming each parameter (unknown and repeated ones too)."""

    ARGUMENTS_PARSER = _QueryParser()
