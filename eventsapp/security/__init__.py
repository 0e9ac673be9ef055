"""API keys with scopes, the auth hook, rate limits, and their OpenAPI description.

``authenticate(raw_key, scope)`` is the one function that checks a key; the request hook calls it
for header keys, and the SDK endpoints call it with the key their payloads carry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .keys import ANONYMOUS, KeyIdentity

if TYPE_CHECKING:
    from flask import Flask
    from flask_smorest import Api

    from .auth import authenticate, key_from_headers

__all__ = ["ANONYMOUS", "KeyIdentity", "authenticate", "init_app", "key_from_headers"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `flask keys` (a CLI plugin) imports this package but needs none of
    # the request machinery (Flask-SQLAlchemy, Flask-Migrate, flask-smorest), ~0.5 s of imports.
    if name in ("authenticate", "key_from_headers"):
        from . import auth

        return getattr(auth, name)
    raise AttributeError(name)


def init_app(app: Flask, api: Api) -> None:
    """Wire auth, rate limits, the OpenAPI security schemes and ``flask keys`` into ``app``.

    Call after ``api.init_app`` and before blueprints are registered (the OpenAPI plugin documents
    operations as they are registered).
    """
    from .auth import init_auth
    from .cli import keys_cli
    from .limits import init_limits
    from .openapi import init_openapi

    init_auth(app)
    init_limits(app)
    init_openapi(api)
    app.cli.add_command(keys_cli)
