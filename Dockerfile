# eventsapp served by waitress as a non-root user. Use with DATABASE_URL (see docker-compose.yml);
# without it the app would start an embedded PostgreSQL inside the container's /data volume.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    EVENTSAPP_DATA_DIR=/data/pgdata

WORKDIR /app
COPY setup.cfg pyproject.toml README.md ./
COPY eventsapp ./eventsapp
COPY migrations ./migrations
# Editable install: the app finds migrations/ beside its package, as in a clone.
RUN pip install -e .
COPY wsgi.py ./
COPY data/sample_events.csv ./data/sample_events.csv

RUN useradd --create-home --uid 10001 eventsapp && mkdir -p /data && chown eventsapp /data
USER eventsapp
VOLUME ["/data"]
EXPOSE 8000

# Apply migrations (a no-op when at head), then serve with waitress (`flask serve`: graceful stop).
# exec replaces the shell so SIGTERM from `docker stop` reaches the server.
CMD ["sh", "-c", "flask db upgrade && exec flask serve --host 0.0.0.0 --port 8000"]
