"""Notifications that reach people: ntfy, a generic JSON webhook and email.

Each channel is an adapter to one outside service. The dispatcher gives every
channel its own queue and worker, so a channel that is down never delays the
others or the hub's ingest.
"""
