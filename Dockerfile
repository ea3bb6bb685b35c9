# ctmirror: a change-tracking mirror of ClinicalTrials.gov.
#   docker build -t ctmirror .
#   docker run -v ctmirror-data:/data ctmirror sync NCT03039062
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CTMIRROR_DATABASE__URL=sqlite:////data/ctmirror.db \
    CTMIRROR_CONFIG=/app/config/ctmirror.toml

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY mirror ./mirror
COPY alembic ./alembic
COPY config ./config
RUN pip install ".[postgres]" \
    && useradd --create-home --uid 10001 ctmirror \
    && mkdir /data && chown ctmirror /data

USER ctmirror
VOLUME ["/data"]
ENTRYPOINT ["ctmirror"]
CMD ["--help"]
