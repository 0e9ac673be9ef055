"""``GET /users/{user_id}``, ``GET /users/{user_id}/events``, ``DELETE /users/{user_id}``."""
from __future__ import annotations

from typing import Any

from flask import current_app, g

from ..errors import ApiError, document_errors
from ..extensions import db
from . import service
from .params import LocalRange, QueryBlueprint, check_timezone
from .schemas import DeletionSchema, TimelineArgs, TimelineSchema, UserSchema, check_user_id

blp = QueryBlueprint("people", __name__, url_prefix="/users",
                     description="One user's events, and deletion of everything stored about a user.")

# Deletion is its own blueprint: the access table (security/policy.py) gives scopes per blueprint.
admin_blp = QueryBlueprint("people_admin", __name__, url_prefix="/users",
                           description="Deletion of everything stored about a user (scope admin).")

_NOT_FOUND = {404: "No stored event has this user_id.", 400: "A malformed parameter (errors names it)."}


def _not_found(user_id: str) -> ApiError:
    return ApiError(f"No events of user {user_id!r}.", status_code=404,
                    errors={"path": {"user_id": ["Unknown user."]}})


@blp.route("/<path:user_id>")
@blp.response(200, UserSchema)
@document_errors(blp, _NOT_FOUND)
def get_user(user_id: str):
    """Summarise one user's events."""
    with db.engine.connect() as connection:
        try:
            return service.user_summary(connection, check_user_id(user_id))
        except service.UnknownUser:
            raise _not_found(user_id) from None


@blp.route("/<path:user_id>/events")
@blp.arguments(TimelineArgs, location="query", as_kwargs=True)
@blp.response(200, TimelineSchema)
@document_errors(blp, _NOT_FOUND)
def get_user_events(user_id: str, *, from_, to, tz, **arguments: Any):
    """List one user's events, newest first, a page at a time."""
    tz = check_timezone(db.engine, tz or current_app.config["EVENTSAPP_TIMEZONE"])
    with db.engine.connect() as connection:
        try:
            return service.user_events(connection, check_user_id(user_id), local=LocalRange(from_, to, tz), tz=tz,
                                       **arguments)
        except service.UnknownUser:
            raise _not_found(user_id) from None
        except service.BadCursor:
            raise ApiError("Invalid query parameter(s): cursor.", status_code=400,
                           errors={"query": {"cursor": ["Not a cursor this server handed out."]}}) from None


@admin_blp.route("/<path:user_id>", methods=["DELETE"])
@admin_blp.response(200, DeletionSchema)
@document_errors(admin_blp, {404: "No stored event has this user_id (the request is audited and a tombstone "
                            "kept all the same).", 400: "A malformed user_id."})
def delete_user(user_id: str):
    """Delete every event of one user, keeping every analytics answer exact."""
    with db.engine.begin() as connection:
        [deletion] = service.delete_users(connection, [check_user_id(user_id)], requested_by=_requester(),
                                          project_tz=current_app.config["EVENTSAPP_TIMEZONE"])
    if not deletion.found:
        raise _not_found(user_id)
    return deletion


def _requester() -> str:
    # Set by the auth hook to the key's name; with auth off there is no key.
    return getattr(g, "api_key_name", None) or "anonymous"
