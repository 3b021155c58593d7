# Data for the hosts in the `devices` group (see docs/deploy.md for every variable).
import os

signalbeam_engine = "podman"  # or "docker"
# Only for sandboxes with hybrid cgroups (like CI); real Pis run Podman's defaults.
signalbeam_podman_dropin = False

# Where devices enroll: the hub's NATS client port.
signalbeam_hub = "hub.example.com:4222"
# Secrets come from the operator's environment and are never written to disk by the deploy:
# the registration token (`signalbeam token create --tenant T --uses 2`) and the password of
# the hub's `enroll` bootstrap user (in the enroll URL `signalbeam-hub init` printed).
signalbeam_enroll_token = os.environ.get("SB_ENROLL_TOKEN")
signalbeam_enroll_password = os.environ.get("SB_ENROLL_PASSWORD")

# The local HTTP API for field technicians: loopback only unless set to a LAN address.
signalbeam_http_bind = "127.0.0.1"
