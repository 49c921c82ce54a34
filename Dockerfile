# The linewatch image: the worker by default, and every other `linewatch` command (migrate, train,
# simulate) with another command line. Built by docker-compose.yml as linewatch:<version>.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# What the wheel needs: the package, and sql/ + dashboards/ which hatch force-includes as package data.
WORKDIR /build
COPY pyproject.toml README.md ./
COPY linewatch ./linewatch
COPY sql ./sql
COPY dashboards ./dashboards
RUN pip install . && rm -rf /build
WORKDIR /

# An unprivileged user owning the data directory; the models and serve-spool directories exist in
# the image so named volumes mounted there start out owned by that user (Docker copies ownership on
# first use).
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/linewatch --no-create-home linewatch \
    && mkdir -p /var/lib/linewatch/models /var/lib/linewatch/serve-spool \
    && chown -R linewatch:linewatch /var/lib/linewatch

USER linewatch
WORKDIR /var/lib/linewatch
ENV LINEWATCH_DATA_DIR=/var/lib/linewatch

CMD ["linewatch", "worker"]
