"""``python -m learnforget`` runs the command line."""

from learnforget.cli import app

app()
