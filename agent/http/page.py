"""``GET /``: a tiny read-only status page for a phone's browser: plain HTML, no scripts.

The browser authenticates with HTTP Basic (any user name, the token as password), which it
prompts for natively; the page refreshes itself every 10 s with a meta tag.
"""

from __future__ import annotations

from html import escape
from typing import Any

from aiohttp import web

from agent.http import validate as v
from agent.http.auth import CTX_KEY
from agent.http.views import status_doc
from agent.store.space import describe_state
from agent.sync.liveness import when

_STYLE = (
    "body{font-family:sans-serif;margin:1em;max-width:40em}"
    "table{border-collapse:collapse;width:100%}"
    "td,th{border-bottom:1px solid #ccc;padding:.3em;text-align:left}"
    ".bad{color:#b00}.ok{color:#070}"
)


def _when(ts: Any) -> str:
    return when(ts if isinstance(ts, int | float) else None)


def _hub(hub: dict[str, Any]) -> tuple[str, str]:
    """The hub row: what it says and its class. Online means the hub itself answered."""
    if not hub["configured"]:
        return "not configured", ""
    if hub["online"]:
        return f"online (last answer {_when(hub['last_contact'])})", "ok"
    return f"unreachable since {_when(hub.get('unreachable_since'))}", "bad"


def _row(key: str, value: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr><th>{escape(key)}</th><td{attr}>{escape(str(value))}</td></tr>"


def render(doc: dict[str, Any]) -> str:
    link, link_cls = _hub(doc["hub"])
    desired = doc.get("desired") or {}
    last = doc.get("last_reconcile") or {}
    disk = doc.get("disk") or {}
    rows = [
        _row("Device", doc["device_id"]),
        _row("Agent", doc["agent_version"]),
        _row("Uptime", f"{int(doc['uptime_seconds'])} s"),
        _row("Hub", link, link_cls),
        _row("Disk", describe_state(doc.get("disk")), "bad" if disk.get("full") else ""),
        _row("Running", doc.get("running_bundle") or "nothing"),
        _row(
            "Desired",
            f"generation {desired.get('generation')} from {desired.get('source')}"
            f" ({desired.get('bundle_ref') or 'no bundle'})"
            if desired
            else "none",
        ),
        _row(
            "Last reconcile",
            f"{last.get('result') or 'running'} at {_when(last.get('finished_at'))}"
            if last
            else "never",
            "bad" if last.get("result") == "failed" else "",
        ),
    ]
    if doc.get("stuck"):
        rows.append(_row("Stuck", doc["stuck"], "bad"))
    if doc.get("tls_fingerprint"):
        rows.append(_row("TLS fingerprint", doc["tls_fingerprint"]))
    containers = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(str(c.get(k, '')))}</td>" for k in ("name", "service", "state", "health")
        )
        + "</tr>"
        for c in doc.get("containers", [])
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        '<meta http-equiv=refresh content="10">'
        f"<title>{escape(doc['device_id'])} - SignalBeam agent</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{escape(doc['device_id'])}</h1><table>{''.join(rows)}</table>"
        "<h2>Containers</h2><table><tr><th>Name</th><th>Service</th><th>State</th>"
        f"<th>Health</th></tr>{containers}</table></body></html>"
    )


async def get_page(request: web.Request) -> web.Response:
    v.only(request.query, ())
    html = render(await status_doc(request.app[CTX_KEY]))
    return web.Response(
        text=html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )
