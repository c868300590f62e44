"""The web UI: writes configs and runs the same CLI commands; it owns no ML logic."""
