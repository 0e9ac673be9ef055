"""Errors the API answers with, all as JSON: ``{"code", "status", "message", "errors"?}``."""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from .database import SchemaNotReady

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_SECONDS = 5


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


def error_response(status_code: int, message: str, errors: Any = None, headers: dict[str, str] | None = None):
    body: dict[str, Any] = {"code": status_code, "status": HTTPStatus(status_code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status_code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        return error_response(error.status_code, error.message, error.errors, error.headers)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException):
        # Keep Werkzeug's headers (Allow on 405, ...) but answer in JSON like every other error.
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        data = getattr(error, "data", None) or {}
        message = data.get("message") or error.description or HTTPStatus(error.code or 500).phrase
        errors = data.get("messages") or data.get("errors")
        return error_response(error.code or 500, message, errors, headers)

    @app.errorhandler(SchemaNotReady)
    def handle_schema_not_ready(error: SchemaNotReady):
        return error_response(503, f"Not accepting requests yet: {error}", headers={"Retry-After": "30"})

    @app.errorhandler(sa.exc.OperationalError)
    @app.errorhandler(sa.exc.InterfaceError)
    def handle_database_unavailable(error: sa.exc.DBAPIError):
        log.warning("database unavailable: %s", type(error.orig).__name__ if error.orig else error)
        return error_response(
            503,
            "Database unavailable; nothing from this request was stored. Retry later.",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
