"""The bundle validator by section (``bundles.validate`` is the entry point)."""
