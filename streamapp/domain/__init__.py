"""Pure decisions of streamapp: no faust, no aiohttp, no I/O. Most tests live here."""
