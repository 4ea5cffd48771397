"""The history recorder's parts; :mod:`arendezvous.testing.history` is their public face."""
