# Data for the hosts in the `hubs` group (see docs/deploy.md for every variable).
import os

signalbeam_hub_client_port = 4222
signalbeam_hub_leafnode_port = 7422
signalbeam_hub_http_port = 8080

# Replicate the fleet DB off the machine; credentials from the operator's environment, never
# committed. Leave both unset for a file replica under the data dir.
signalbeam_hub_replica_url = os.environ.get("SB_REPLICA_URL")  # e.g. "s3://my-bucket/hub"
signalbeam_hub_replica_env = {
    name: os.environ[name]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    if name in os.environ
}
