"""Console script ``streamapp``: faust's CLI with streamapp's commands."""

from __future__ import annotations

from streamapp.app import app


def main() -> None:
    app.main()


if __name__ == "__main__":
    main()
