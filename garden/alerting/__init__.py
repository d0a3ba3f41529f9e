"""Alerts, pure: the rules that notice trouble (rules.py), an alert's life from
raised to resolved (lifecycle.py), who is told (routing.py) and in what words
(wording.py). The service that runs them is garden/watch.py.
"""
