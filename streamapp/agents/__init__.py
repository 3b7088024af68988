"""Faust agents: they move data between topics and call into ``streamapp.domain`` for decisions."""
