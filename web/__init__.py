"""The clinicians' web app (FastAPI): therapist session panel, supervisor fidelity view, login, audit.

``app`` builds it over the store; ``server`` runs it with uvicorn (``homework-monitor web``). See
docs/SURFACES.md.
"""
