"""The linearizability checker's parts.

:mod:`arendezvous.testing.linearizability` is their public face.
"""
