"""Transcript replay and load generation into the ``utterances`` topic."""
