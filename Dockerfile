# Image for Shelfsight's own services in docker-compose.yml (not used by tests or CI).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY models ./models
COPY state ./state
COPY services ./services
RUN pip install --no-cache-dir .
ENTRYPOINT []
