"""Experiments behind the project's choices (``python -m experiments.<name>``)."""
