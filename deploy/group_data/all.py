# Data for every host of an inventory in deploy/ (see inventory.example.py, docs/deploy.md).

# What to install: a pip requirement (pin a version to upgrade: "signalbeam-edge==0.2.0"),
# or a wheel built from this repository, uploaded by the deploy:
#   .venv/bin/pip wheel --no-deps -w dist .
signalbeam_pip_spec = "signalbeam-edge"
# signalbeam_wheel = "dist/signalbeam_edge-0.1.0-py3-none-any.whl"
