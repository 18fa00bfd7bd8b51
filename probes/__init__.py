"""Probe families and the plugin API (``probes.api``) that built-in and third-party probes share."""
