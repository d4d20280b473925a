# The platform's images. The default (last) stage, `server`, holds what the ad server, the Ad Manager, the
# served-writer and the budget processes need: the base dependencies of pyproject.toml, no Spark, no load
# tools, no dev stack; the compose file picks the command per service. `docker build --target archive .`
# adds the Spark archive (pyspark + a JRE) for `adplatform archive run`.
FROM python:3.11-slim AS sources
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY index ./index
COPY budget ./budget
COPY ingest ./ingest
COPY adserver ./adserver
COPY adplatform ./adplatform

FROM sources AS archive
RUN apt-get update && apt-get install -y --no-install-recommends default-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY archive ./archive
RUN pip install --no-cache-dir -c constraints.txt '.[archive]'
CMD ["adplatform", "archive", "run"]

FROM sources AS server
RUN pip install --no-cache-dir -c constraints.txt .
CMD ["adplatform", "--help"]
