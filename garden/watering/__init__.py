"""Watering science, pure: FAO-56 soil and crop values, bed profiles, drydown
forecasts, watering detection and the watering-need state of a bed.

No I/O, no clock: time comes in as arguments. docs/watering.md explains the
science and cites its sources.
"""
