"""What the API and the worker share: settings, store, job helpers, the CLI."""
