"""Web views served by every worker (faust's built-in web server)."""
