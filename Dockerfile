# One image for every perpsim service; the command picks the service (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY exchange ./exchange
COPY services ./services
RUN pip install --no-cache-dir .
VOLUME /state
ENTRYPOINT ["perpsim"]
CMD ["--help"]
