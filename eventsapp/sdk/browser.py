"""What the browser SDKs fetch before they send: answered so they run quietly with no features on.

posthog-js (``api_host`` = us) loads ``/array/<token>/config.js`` as a script (else ``/array/<token>/config``
as JSON) and then asks ``/flags/?v=2``; older versions ask ``/decide/``. analytics.js (``cdnURL`` = us)
loads ``/v1/projects/<writeKey>/settings`` and sends nothing at all unless it names a "Segment.io"
integration. None of these answers depends on the key or touches the database: they hold nothing
secret, so they are open (and cost no lookup a scanner could use as an oracle).
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, request
from flask_smorest import Blueprint

blp = Blueprint(
    "sdk_browser",
    __name__,
    description="Configuration the browser SDKs (posthog-js, analytics.js) load before sending.",
)

MAX_TOKEN_CHARS = 256

# Compression posthog-js may use: with it the SDK sends gzip as text/plain (a simple request, no
# preflight); without it JSON with a preflight, and its unload beacon as a base64 form.
SUPPORTED_COMPRESSION = ["gzip", "gzip-js"]
# analytics.js batching: up to this many events or this many ms, whichever comes first.
BATCHING = {"size": 50, "timeout": 1000}


def posthog_remote_config(token: str) -> dict[str, Any]:
    """posthog-js's remote config with every optional feature off.

    ``surveys`` is left out on purpose: any value (even false) makes the SDK fetch a surveys bundle.
    """
    return {
        "token": token,
        "supportedCompression": SUPPORTED_COMPRESSION,
        "hasFeatureFlags": False,
        "sessionRecording": False,
        "heatmaps": False,
        "captureDeadClicks": False,
        "capturePerformance": False,
        "autocaptureExceptions": False,
        "siteApps": [],
    }


def segment_settings(write_key: str, host: str, scheme: str) -> dict[str, Any]:
    """analytics.js's CDN settings naming only our own integration, pointed back at this server."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": False,
                # Batches to /v1/b, flushed with a keepalive fetch on pagehide: without it analytics.js
                # sends one request per event and loses those fired right before a navigation.
                "deliveryStrategy": {"strategy": "batching", "config": BATCHING},
            }
        },
        "plan": {},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "remotePlugins": [],
        # Without it analytics.js posts its own metrics to Segment's host every ~30 s.
        "metrics": {"sampleRate": 0},
    }


def _script_literal(value: Any) -> str:
    # JSON is valid JavaScript; "<" escaped so no token can close a <script> or open a comment.
    return json.dumps(value).replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@blp.route("/array/<string(maxlength=256):token>/config.js", methods=["GET"])
@blp.doc(responses={200: {"description": "JavaScript setting window._POSTHOG_REMOTE_CONFIG[token]."}})
def posthog_config_js(token: str):
    """Answer posthog-js's remote-config script with no features enabled."""
    config = {"config": posthog_remote_config(token), "siteApps": []}
    script = (
        f"(function(){{var w=window;w._POSTHOG_REMOTE_CONFIG=w._POSTHOG_REMOTE_CONFIG||{{}};"
        f"w._POSTHOG_REMOTE_CONFIG[{_script_literal(token)}]={_script_literal(config)};}})();\n"
    )
    return Response(script, mimetype="application/javascript")


@blp.route("/array/<string(maxlength=256):token>/config", methods=["GET"])
@blp.doc(responses={200: {"description": "posthog-js remote config (JSON) with no features enabled."}})
def posthog_config(token: str):
    """Answer posthog-js's remote-config request with no features enabled."""
    return posthog_remote_config(token)


@blp.route("/flags/", methods=["GET", "POST"], strict_slashes=False, endpoint="posthog_flags")
@blp.route("/decide/", methods=["GET", "POST"], strict_slashes=False, endpoint="posthog_decide")
@blp.doc(
    responses={200: {"description": "No feature flags (both the /flags v2 and the legacy /decide shape)."}}
)
def posthog_flags():
    """Answer posthog-js's feature-flag request: no flags."""
    return {
        "flags": {},
        "featureFlags": {},
        "featureFlagPayloads": {},
        "errorsWhileComputingFlags": False,
        "supportedCompression": SUPPORTED_COMPRESSION,
        "sessionRecording": False,
        "siteApps": [],
    }


@blp.route("/v1/projects/<string(maxlength=256):write_key>/settings", methods=["GET"])
@blp.doc(responses={200: {"description": "analytics.js settings naming only the Segment.io integration."}})
def segment_cdn_settings(write_key: str):
    """Answer analytics.js's settings request (its cdnURL points here)."""
    return segment_settings(write_key, request.host, request.scheme)
