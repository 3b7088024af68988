"""Console script ``streamapp``: faust's CLI with streamapp's commands."""

from __future__ import annotations


def main() -> None:
    from streamapp.app import app

    app.main()


if __name__ == "__main__":
    main()
