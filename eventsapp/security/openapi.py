"""OpenAPI: the key schemes (for Swagger UI's Authorize button) and 401/403/429 on protected operations."""

from __future__ import annotations

from apispec import BasePlugin
from flask_smorest import Api

from ..errors import RETRY_AFTER_HEADER
from .policy import BLUEPRINTS, UNMAPPED

SECURITY = [{"bearerAuth": []}, {"apiKeyHeader": []}]


class SecurityPlugin(BasePlugin):
    """Marks each operation with what it needs, using the same tables the request hooks enforce."""

    def init_spec(self, spec) -> None:
        self.spec = spec

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        blueprint = rule.endpoint.rpartition(".")[0]
        access = BLUEPRINTS.get(blueprint, UNMAPPED)
        scope, limited = access.scope, access.budget is not None
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if scope is not None:
                operation.setdefault("security", SECURITY)
                self._add(responses, "401", "UNAUTHORIZED", "API key missing, unknown or revoked.")
                self._add(responses, "403", "FORBIDDEN", f"API key lacks the '{scope}' scope.")
            if limited:
                self._add(
                    responses,
                    "429",
                    "TOO_MANY_REQUESTS",
                    "Rate limit for this key (or client IP) exceeded; honour Retry-After.",
                    RETRY_AFTER_HEADER,
                )

    def _add(self, responses: dict, status: str, component: str, description: str, headers=None) -> None:
        if status in responses:
            return
        # flask-smorest registers one lazy response component per HTTP status; get_ref emits it.
        ref = self.spec.components.get_ref("response", component)
        responses[status] = {"description": description, "content": dict(_content(self.spec, ref))}
        if headers:
            responses[status]["headers"] = headers


def _content(spec, ref) -> dict:
    response = spec.components.responses.get(ref["$ref"].rsplit("/", 1)[-1], {})
    return response.get("content", {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}})


def init_openapi(api: Api) -> None:
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"}
    )
    api.spec.components.security_scheme(
        "apiKeyHeader", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    api.spec.plugins.append(SecurityPlugin())
    api.spec.plugins[-1].init_spec(api.spec)
