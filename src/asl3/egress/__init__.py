"""Egress bandwidth controls: units, budget maths, token buckets, detection, the proxy, kernel rules."""
