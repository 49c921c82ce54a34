"""Operators close the loop: alert transitions, dispositions, threshold proposals, the labelled set, maintenance.

Library code for the ``linewatch alerts``, ``disposition``, ``dispositions``, ``thresholds`` and
``maintenance`` commands and the dispositions agent; :mod:`.thresholds` is pure (no database).
"""
