"""Bridges from storage systems that push events over HTTP (dCache's SSE) to raw topics."""
