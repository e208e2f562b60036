# One image for every Cartstream service; compose.yaml picks the `cartstream` subcommand per service.
FROM python:3.11-slim
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/write.txt -r requirements/aggregator.txt \
    -r requirements/connectors.txt -r requirements/read.txt
COPY cart_contract/ cart_contract/
COPY cart_web/ cart_web/
COPY cart_write/ cart_write/
COPY cart_aggregator/ cart_aggregator/
COPY connectors/ connectors/
COPY cart_read/ cart_read/
COPY infra/__init__.py infra/topics.py infra/kafka_acl.py infra/redis_acl.py infra/pg_roles.py \
     infra/compose_exec.py infra/
COPY cartstream/ cartstream/
COPY pyproject.toml ./
# The `cartstream` console script, running the code under /app (dependencies are installed above).
RUN pip install --no-cache-dir --no-deps -e .
ENV PYTHONUNBUFFERED=1
