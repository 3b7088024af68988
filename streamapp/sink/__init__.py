"""Parts of the invocation sink (``streamapp.agents.invoke``): tenant lanes and the store of
success records that makes a replay skip what already ran."""
