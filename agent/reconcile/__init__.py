"""Reconciling the device with its desired state: pure rules (precedence, lifecycle, plan,
health) and the loop, executor, monitor and probes that do the I/O around them."""
