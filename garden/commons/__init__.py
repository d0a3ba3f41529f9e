"""The commons: members, the watering rota and claims, harvests and their shares, contributions.

Pure rules live in ``quantity``, ``rota``, ``shares`` and ``scrub``; the hub's
single writer that applies volunteers' requests is ``service`` (with its
SQLite ``store``). The design is in docs/commons.md.
"""
