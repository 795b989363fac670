"""The service layer: one implementation behind the SDK, the CLI and the HTTP API."""
