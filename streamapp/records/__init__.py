"""faust.Record models of what travels on streamapp's topics (and nothing else)."""
