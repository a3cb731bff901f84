"""The ``tlsfleet`` command line."""

from __future__ import annotations

import typer

from fleet import scan_cli

app = typer.Typer(
    name="tlsfleet",
    help="Scan mail and web endpoints for old TLS, weak suites, bad certificates and "
    "passwords before TLS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

scan_cli.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
