# The platform's images. The default (last) stage, `server`, holds what the ad server, the Ad Manager, the
# served-writer and the budget processes need: the base dependencies of pyproject.toml, no Spark, no load
# tools, no dev stack; the compose file picks the command per service. `docker build --target archive .`
# adds the Spark archive (pyspark + a JRE + the Kafka connector jars) for `adplatform archive run`.
# Both images run as the unprivileged user `adplatform` (uid 10001); only the build steps run as root.
FROM python:3.11-slim AS sources
ENV PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/adplatform adplatform
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
# The Kafka connector matching pyspark, resolved once at build time so the job starts offline, as on the
# local stack: the same jars `adplatform stack fetch` puts under .stack/jars/spark (the connector and what
# pyspark does not ship), Ivy's "group_artifact-version.jar" names cut back to "artifact-version.jar".
ENV ADP_STACK_DIR=/opt/adplatform ADP_ARCHIVE_DIR=/var/lib/adplatform/archive
RUN python -c "from importlib.metadata import version; from pyspark.sql import SparkSession; \
from archive.submit import connector_package; \
SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false') \
.config('spark.jars.packages', connector_package(version('pyspark'))) \
.config('spark.jars.ivy', '/tmp/ivy').getOrCreate().stop()" \
    && mkdir -p "$ADP_STACK_DIR/jars/spark" \
    && for jar in /tmp/ivy/jars/*.jar; do name="${jar##*/}"; name="${name#*_}"; \
        case "$name" in spark-sql-kafka-*|spark-token-provider-kafka-*|kafka-clients-*|commons-pool2-*) \
            cp "$jar" "$ADP_STACK_DIR/jars/spark/$name";; esac; done \
    && rm -rf /tmp/ivy \
    && ls "$ADP_STACK_DIR/jars/spark" | grep -q '^spark-sql-kafka-0-10' \
    && mkdir -p "$ADP_ARCHIVE_DIR" && chown -R adplatform:adplatform /var/lib/adplatform
# docker-compose.yml mounts the archive volume on ADP_ARCHIVE_DIR: a new named volume takes the owner of the
# directory it covers, so the unprivileged user can write there.
USER adplatform
CMD ["adplatform", "archive", "run"]

FROM sources AS server
RUN pip install --no-cache-dir -c constraints.txt .
USER adplatform
CMD ["adplatform", "--help"]
