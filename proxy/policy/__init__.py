"""Policies: which client may do what on which account. Model, pure evaluation, loading."""
