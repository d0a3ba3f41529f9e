"""Simulated sensor nodes on virtual serial ports (``garden simulate``).

``physics`` models a bed (pure), ``node`` turns it into protocol lines with
injectable faults (pure, seeded), ``pty_runner`` puts nodes on pty pairs.
"""
