"""Example pyinfra inventory: one hub and two Raspberry Pi devices.

Copy to deploy/inventory.py (same directory, so deploy/group_data/*.py applies: all.py to
every host, hubs.py and devices.py to those groups), replace the names, then:

    pyinfra deploy/inventory.py deploy/hub.py --limit hubs
    SB_ENROLL_TOKEN=sbt_... SB_ENROLL_PASSWORD=... \\
        pyinfra deploy/inventory.py deploy/agent.py --limit devices

Per-host data (the dicts) wins over group data. Every variable: docs/deploy.md.
"""

hubs = [
    (
        "hub.example.com",
        {
            "ssh_user": "root",
            # What devices and operators dial; defaults to the inventory name above.
            "signalbeam_hub_public_host": "hub.example.com",
        },
    ),
]

# A hub NATS cluster instead (docs/deploy.md "A hub NATS cluster"): three machines in hubs,
# the same node addresses on each and each its node index; node 0 runs the hub, nodes 1 and
# 2 nats-server, all laid out by one `pyinfra deploy/inventory.py deploy/hub.py --limit hubs`.
#
# CLUSTER = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
# hubs = [
#     (f"hub-{c}.example.com", {"ssh_user": "root", "signalbeam_hub_cluster_hosts": CLUSTER,
#                                "signalbeam_hub_cluster_node": i})
#     for i, c in enumerate("abc")
# ]

devices = [
    (
        "pi-kitchen.lan",
        {
            "ssh_user": "pi",
            "_sudo": True,
            "signalbeam_device_id": "pi-kitchen",
            "signalbeam_tags": ["rpi", "prod", "warehouse-a"],
        },
    ),
    (
        "pi-lab.lan",
        {
            "ssh_user": "pi",
            "_sudo": True,
            "signalbeam_device_id": "pi-lab",
            "signalbeam_tags": ["rpi", "lab"],
        },
    ),
]
