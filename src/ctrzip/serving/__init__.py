"""Scoring raw rows with a saved artifact: the row encoder, ``predict`` on files and frames, HTTP."""
