# One image for every platform process; the compose file picks the command per service.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY index ./index
COPY budget ./budget
COPY ingest ./ingest
COPY adserver ./adserver
COPY archive ./archive
COPY adplatform ./adplatform
COPY devstack ./devstack
COPY bench ./bench
COPY loadtest ./loadtest
RUN pip install --no-cache-dir -c constraints.txt .
CMD ["adplatform", "--help"]
