"""Command-line tools (installed as rfsdk.cli)."""
