"""One function per API verb: validated body in, result and change notices out.

Handlers are synchronous store calls; the service runs them on the store's single worker
thread. They never touch NATS: what changed is returned as ``Change`` values and the service
publishes them on ``sb.fleet.changes.<kind>`` after the transaction committed.

The handlers live by concept in this package (devices, groups, bundles, assignments, events,
access, gates, variables; core holds what they share); the verb -> handler table is here, in
one place, and so are the names other modules import (``Caller``, ``Change``, ``Outcome``,
``Handler``, ``HANDLERS``, ``stale``).
"""

from __future__ import annotations

from hub.api.handlers.access import (
    keys_create,
    keys_list,
    keys_revoke,
    session_whoami,
    tokens_create,
    tokens_list,
    tokens_revoke,
)
from hub.api.handlers.assignments import assign, assignments_list, unassign
from hub.api.handlers.bundles import (
    bundles_get,
    bundles_list,
    bundles_push,
    bundles_sign,
    bundles_versions,
    trust_get,
    trust_push,
)
from hub.api.handlers.core import Caller, Change, Handler, Outcome, stale
from hub.api.handlers.devices import _tagging, devices_decommission, devices_get, devices_list
from hub.api.handlers.events import events_list, metrics_get
from hub.api.handlers.gates import (
    devices_force_update,
    maintenance_list,
    maintenance_set,
    metered_list,
    metered_set,
)
from hub.api.handlers.groups import _membership, groups_create, groups_delete, groups_list
from hub.api.handlers.variables import _setting, _settings_list

__all__ = ["HANDLERS", "Caller", "Change", "Handler", "Outcome", "stale"]

HANDLERS: dict[str, Handler] = {
    "devices.list": devices_list,
    "devices.get": devices_get,
    "devices.tag": _tagging(True),
    "devices.untag": _tagging(False),
    "devices.decommission": devices_decommission,
    "groups.create": groups_create,
    "groups.delete": groups_delete,
    "groups.add": _membership(True),
    "groups.remove": _membership(False),
    "groups.list": groups_list,
    "bundles.push": bundles_push,
    "bundles.sign": bundles_sign,
    "trust.get": trust_get,
    "trust.push": trust_push,
    "bundles.list": bundles_list,
    "bundles.get": bundles_get,
    "bundles.versions": bundles_versions,
    "assign": assign,
    "unassign": unassign,
    "assignments.list": assignments_list,
    "events.list": events_list,
    "metrics.get": metrics_get,
    "tokens.create": tokens_create,
    "tokens.list": tokens_list,
    "tokens.revoke": tokens_revoke,
    "keys.create": keys_create,
    "keys.list": keys_list,
    "keys.revoke": keys_revoke,
    "session.whoami": session_whoami,
    "maintenance.set": maintenance_set,
    "maintenance.list": maintenance_list,
    "metered.set": metered_set,
    "metered.list": metered_list,
    "devices.force_update": devices_force_update,
    "vars.set": _setting("var", False),
    "vars.unset": _setting("var", True),
    "vars.list": _settings_list("var"),
    "secrets.set": _setting("secret", False),
    "secrets.unset": _setting("secret", True),
    "secrets.list": _settings_list("secret"),
}
