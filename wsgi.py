"""WSGI entry point: ``waitress-serve --listen=127.0.0.1:8000 wsgi:app``; the ``flask`` command finds it too."""
from eventsapp import create_app

app = create_app()
