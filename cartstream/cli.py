"""The `cartstream` command: one subcommand per job, each a thin call into its package.

Every subcommand reads its settings from the environment (each package's `Config.from_env()`);
tests pass a ready Config instead as the click context object (`CliRunner().invoke(app, args,
obj=config)`). Heavy imports (bytewax, granian, Kafka clients) happen inside the subcommand that
needs them, so `--help` and the cheap commands start fast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer

from cart_contract.settings import format_settings_error

# Exit statuses shared by every subcommand (bad usage is click's 2 as well).
EXIT_OK, EXIT_BAD_ROWS, EXIT_FAILED = 0, 1, 2
C = TypeVar("C")

app = typer.Typer(
    help="Cartstream: event-sourced shopping carts on Apache Kafka. Every subcommand reads its "
         "settings from environment variables (infra/defaults.env lists the local stack's); "
         "`cartstream COMMAND --help` tells which.",
    no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False,
    add_completion=False, context_settings={"help_option_names": ["-h", "--help"]},
)
serve_app = typer.Typer(help="Serve one of the HTTP APIs under granian until SIGTERM/SIGINT.",
                        no_args_is_help=True, rich_markup_mode=None)
sink_app = typer.Typer(help="Run one sink (a Kafka consumer that stores records) until "
                            "SIGTERM/SIGINT.", no_args_is_help=True, rich_markup_mode=None)
catalog_app = typer.Typer(help="The product catalog: validate and load catalog files.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(serve_app, name="serve")
app.add_typer(sink_app, name="sink")
app.add_typer(catalog_app, name="catalog")


def main() -> None:
    """Console-script entry point (`[project.scripts] cartstream`)."""
    app(prog_name="cartstream")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one line on stderr and exit with `code`."""
    typer.echo(f"cartstream: {message}", err=True)
    raise typer.Exit(code)


def _config(ctx: typer.Context, kind: type[C]) -> C:
    """The settings passed as the context object, else `kind.from_env()`."""
    if isinstance(ctx.obj, kind):
        return ctx.obj
    try:
        return kind.from_env()  # type: ignore[attr-defined]
    except ValueError as exc:  # a malformed variable: name it, no traceback
        fail(format_settings_error(exc))


def _one_line(exc: BaseException) -> str:
    # Validation errors (pydantic's among them) span lines; a log wants one.
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


@contextlib.contextmanager
def _failures(prefix: str, *kinds: type[BaseException]) -> Iterator[None]:
    """Turn the expected failures `kinds` into one line and exit status 2."""
    try:
        yield
    except kinds as exc:
        fail(f"{prefix}: {_one_line(exc)}")


def _env(module: str) -> str:
    """The environment variables a service's settings class reads, for its --help."""
    import importlib

    from cart_contract.settings import variables

    config = importlib.import_module(module).Config
    return ", ".join(v for field in config.model_fields.values() for v in variables(field))


# ---------------------------------------------------------------- serve

ENV_WRITE = _env("cart_write.config")
ENV_READ = _env("cart_read.config")


@serve_app.command("write", help=f"""Serve the write API (commands in, `cart-events` out).

Granian runs WRITE_WORKERS processes of WRITE_THREADS threads on WRITE_HOST:WRITE_PORT until
SIGTERM/SIGINT, then stops gracefully.

Environment: {ENV_WRITE}.

Exit status: 0 stopped; 2 a setting is malformed.""")
def serve_write(ctx: typer.Context) -> None:
    from cart_write.config import Config

    cfg = _config(ctx, Config)
    from cart_write.server import serve

    serve(cfg)


@serve_app.command("read", help=f"""Serve the read API (carts and products from Redis and
PostgreSQL).

Granian runs READ_WORKERS processes (one event loop each, ASGI) on READ_HOST:READ_PORT until
SIGTERM/SIGINT, then stops gracefully (READ_SHUTDOWN_TIMEOUT_S).

Environment: {ENV_READ}.

Exit status: 0 stopped; 2 a setting is malformed.""")
def serve_read(ctx: typer.Context) -> None:
    from cart_read.config import Config

    cfg = _config(ctx, Config)
    from cart_read.server import serve

    serve(cfg)


# ---------------------------------------------------------------- aggregate

ENV_AGG = _env("cart_aggregator.config")


@app.command(help=f"""Run the aggregator: `cart-events` + `product-details-events` folded into
`cart-details-event`, with recovery on and Prometheus metrics.

\b
    cartstream aggregate                            # one process, AGG_WORKERS threads
    cartstream aggregate -p 2                       # a two-process cluster on this machine
    cartstream aggregate -i 0 -a "h0:2101;h1:2101"  # process 0 of a cluster of machines
    cartstream aggregate --init-recovery 8 -r DIR   # only create 8 recovery partitions

Creates the recovery partitions under $RUN_DIR/aggregator/recovery when missing (a cluster of
machines must be given its share, see cart_aggregator/README.md), serves metrics on
AGG_METRICS_PORT (+ process index) and runs until SIGTERM/SIGINT; recovery makes any stop safe.
Flags override the environment.

Environment: {ENV_AGG}.

Exit status: 0 stopped; non-zero a cluster member or the flow failed, the recovery directory
cannot be used, or a setting is malformed (2).""")
def aggregate(
    ctx: typer.Context,
    workers_per_process: Annotated[int | None, typer.Option(
        "-w", "--workers-per-process", help="worker threads [AGG_WORKERS]")] = None,
    process_id: Annotated[int | None, typer.Option(
        "-i", "--process-id", help="this process's index [AGG_PROCESS_ID]")] = None,
    addresses: Annotated[list[str] | None, typer.Option(
        "-a", "--addresses", metavar="HOST:PORT[;HOST:PORT…]",
        help="host:port of every process, ';'-separated or repeated [AGG_ADDRESSES]")] = None,
    processes: Annotated[int | None, typer.Option(
        "-p", "--processes",
        help="start this many local processes as one cluster [AGG_PROCESSES]")] = None,
    snapshot_interval: Annotated[float | None, typer.Option(
        "-s", "--snapshot-interval",
        help="seconds between snapshots [AGG_SNAPSHOT_INTERVAL_S]")] = None,
    backup_interval: Annotated[float | None, typer.Option(
        "-b", "--backup-interval",
        help="seconds of extra snapshots kept [AGG_BACKUP_INTERVAL_S]")] = None,
    recovery_directory: Annotated[Path | None, typer.Option(
        "-r", "--recovery-directory",
        help="recovery partitions [$RUN_DIR/aggregator/recovery]")] = None,
    no_recovery: Annotated[bool, typer.Option(
        "--no-recovery", help="run without recovery")] = False,
    init_recovery: Annotated[int | None, typer.Option(
        "--init-recovery", metavar="N",
        help="only create N recovery partitions (to share out between machines)")] = None,
) -> None:
    from cart_aggregator.config import Config
    from cart_aggregator.service import apply_flags, run

    try:
        cfg = apply_flags(_config(ctx, Config), workers=workers_per_process,
                          process_id=process_id, addresses=addresses or (), processes=processes,
                          snapshot_interval_s=snapshot_interval,
                          backup_interval_s=backup_interval,
                          recovery_directory=recovery_directory, no_recovery=no_recovery)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # What every member of a local cluster is started with (each also gets -i and -a).
    member_argv = [
        *(["-w", str(workers_per_process)] if workers_per_process else []),
        *(["-s", str(snapshot_interval)] if snapshot_interval else []),
        *(["-b", str(backup_interval)] if backup_interval is not None else []),
        *(["-r", str(recovery_directory)] if recovery_directory else []),
        *(["--no-recovery"] if no_recovery else []),
    ]
    raise typer.Exit(run(cfg, member_argv, init_recovery))


# ---------------------------------------------------------------- sinks

ENV_SINK = _env("connectors.config")
SINK_HELP = {
    "redis": "`cart-details-event` into Redis (`cart:{customerId}`), publishing every change "
             "on CART_UPDATES_CHANNEL.",
    "postgres": "`cart-details-event` into PostgreSQL (`carts`, `cart_lines`); applies the "
                "schema migrations first.",
    "catalog": "`product-details-events` into PostgreSQL (`products`) and Redis "
               "(`product:{productId}`); puts the catalog back into a Redis that restarted "
               "empty; applies the schema migrations first.",
    "reservations": "`product-reservations` (units reserved per product by the aggregator's "
                    "reservation stage) into PostgreSQL (`product_reservations`); applies the "
                    "schema migrations first.",
}


def _sink_command(name: str) -> None:
    def command(ctx: typer.Context) -> None:
        from connectors.config import Config

        cfg = _config(ctx, Config)
        from connectors.service import main as run_sink

        run_sink(name, cfg)

    sink_app.command(name, help=f"""Run the {name} sink: {SINK_HELP[name]}

Consumer group CONSUMER_GROUP_PREFIX-{name}; commits after each stored batch, so a restart
carries on where it stopped; records that break the contract go to TOPIC_DEAD_LETTER; store
outages are retried (backoff up to SINK_RETRY_MAX_S). Stops gracefully on SIGTERM/SIGINT.

Environment: {ENV_SINK}.

Exit status: 0 stopped; 2 a setting is malformed.""")(command)


for _name in SINK_HELP:
    _sink_command(_name)


# ---------------------------------------------------------------- catalog, replay, migrate


@catalog_app.command("load", help="""Validate a catalog file and load it into
`product-details-events`.

\b
FILE holds one product per line, as any of:
  JSON lines   {"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}
  key:json     1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}
               (what kafka-console-producer takes with parse.key=true key.separator=:)
  CSV          a header line `productId,productName,price,stockQty`, then one row per product

Blank lines are skipped. Every row is checked against the contract; bad rows are reported on
stderr as FILE:LINE: REASON: message and skipped, good rows are produced (acks=all, keyed by
productId, in file order, so a later row for the same product wins). Files over 1 MB show their
progress: a bar when stderr is a terminal, else a log line every few seconds and a summary.

Environment: KAFKA_BOOTSTRAP, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD,
KAFKA_SASL_PASSWORD_FILE, TOPIC_PRODUCTS.

\b
Exit status:
  0  every row was good and loaded (or checked, with --dry-run)
  1  some rows were bad (the good ones were loaded all the same, or only checked)
  2  nothing could be done (no such file, broker unreachable, a record not acknowledged)""")
def catalog_load(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="the catalog file",
                                         show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="validate only, produce nothing")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    if not file.is_file():
        fail(f"no such file: {file}")
    from confluent_kafka import KafkaException

    from connectors import catalog
    from connectors.config import Config
    from connectors.consumer import setup_logging

    setup_logging()
    cfg = _config(ctx, Config)
    with _failures("load failed", RuntimeError, KafkaException, OSError):
        loaded, bad = catalog.load(file, cfg, dry_run, show_progress=not quiet)
    for b in bad:
        typer.echo(f"{file}:{b.line}: {b.reason}", err=True)
    if dry_run:
        typer.echo(f"{loaded} products valid (dry run: nothing loaded), {len(bad)} bad rows")
    else:
        typer.echo(f"{loaded} products loaded into {cfg.topic_products}, {len(bad)} bad rows")
    raise typer.Exit(EXIT_BAD_ROWS if bad else EXIT_OK)


@app.command(help="""Rebuild the read models (Redis, PostgreSQL) from the Kafka log.

Stop the sinks first (`make replay` does): Kafka refuses to move the offsets of a consumer
group that has members, and this command checks every chosen group before it touches any. For
each chosen sink it then resets the group to the start of its topic and re-applies every record
up to the end offsets seen at start, with the sink's own code, and ends with a summary. Progress
(records done, records left, rate): a bar when stderr is a terminal, else a log line every few
seconds. Nothing is truncated: the version guards make records already stored a no-op and fill
in whatever is missing or older. When it returns, the groups' offsets are at the end again and
the sinks carry on from there. SIGINT/SIGTERM stop it between batches.

--from events re-folds the whole of `cart-events` from scratch and rebuilds the cart read
models from that (what to run after fixing a rule of the fold; `make replay FROM=events`).
Stop the aggregator too (make down SVC=aggregator); this command refuses while one is running
on its recovery directory. It deletes that directory ($RUN_DIR/aggregator/recovery, or
$AGG_RECOVERY_DIR), starts `cartstream aggregate` on a fresh state (its log:
$RUN_DIR/logs/aggregator-replay.log) and runs the redis and postgres sinks here from the end of
`cart-details-event`, showing events/s, the lag of each stage and the ETA. It returns once every
event of `cart-events` up to its end at start has its record (or dead letter) from the new fold
and both sinks have stored and committed `cart-details-event` up to where it stood then; the
aggregator is then stopped and resumes from its snapshot when started again. --from-events is
the same as --from events.

Environment: as `cartstream sink` (KAFKA_BOOTSTRAP, REDIS_URL, DATABASE_URL, TOPIC_*,
CONSUMER_GROUP_PREFIX, REDIS_KEY_PREFIX, SINK_*), RUN_DIR, AGG_RECOVERY_DIR, and with
--from events those of `cartstream aggregate` (AGG_*).

\b
Exit status:
  0  done
  2  refused (a group has members, the aggregator runs), failed, or bad --sinks/--from""")
def replay(
    ctx: typer.Context,
    sinks: Annotated[str, typer.Option(
        help="comma-separated sinks to replay, '' for none")] = "redis,postgres,catalog",
    source: Annotated[str, typer.Option(
        "--from", help="details: re-apply cart-details-event; events: re-fold cart-events "
                       "with a fresh aggregator (stop it first)")] = "details",
    from_events: Annotated[bool, typer.Option(
        "--from-events", help="the same as --from events")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    from confluent_kafka import KafkaException

    from connectors import replay as replaying
    from connectors.config import SINKS, Config
    from connectors.consumer import Stopper, setup_logging, tune_gc

    chosen = [s.strip() for s in sinks.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SINKS))
    if unknown:
        raise typer.BadParameter(f"unknown sinks: {', '.join(unknown)} "
                                 f"(choose from {', '.join(SINKS)})", param_hint="--sinks")
    if source not in replaying.SOURCES:
        raise typer.BadParameter(f"{source!r} is not one of {', '.join(replaying.SOURCES)}",
                                 param_hint="--from")
    setup_logging()
    cfg = _config(ctx, Config)
    tune_gc()
    stopper = Stopper().install()
    try:
        with _failures("replay refused", replaying.Refused, KafkaException), \
                _failures("replay failed", replaying.Failed):
            results = replaying.replay(cfg, chosen, from_events or source == "events",
                                       show_progress=not quiet, stopper=stopper,
                                       say=typer.echo)
    finally:
        stopper.uninstall()
    typer.echo("replay summary:")
    for r in results:
        typer.echo("  " + r.summary())


@app.command(help="""Create Cartstream's Kafka topics, or converge them, idempotently.

Waits for the broker (for KAFKA_REPLICATION_FACTOR brokers), then creates the missing topics
(cart-events, product-details-events, cart-details-event, cartstream-dead-letter, …) with
explicit configs and that replication factor, grows topics that have fewer partitions than
asked and sets the configs of existing ones. Prints what it changed.

Environment: KAFKA_BOOTSTRAP (for --bootstrap), KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_USERNAME,
KAFKA_SASL_PASSWORD, KAFKA_SASL_PASSWORD_FILE, TOPIC_CART_EVENTS, TOPIC_PRODUCTS,
TOPIC_CART_DETAILS, TOPIC_DEAD_LETTER, CART_EVENTS_PARTITIONS, PRODUCTS_PARTITIONS,
CART_DETAILS_PARTITIONS, KAFKA_REPLICATION_FACTOR, KAFKA_MIN_INSYNC_REPLICAS.

Exit status: 0 done (or, with --check-only, the brokers answer); 2 the brokers did not answer
in time or refused a change.""")
def topics(
    bootstrap: Annotated[str, typer.Option(
        envvar="KAFKA_BOOTSTRAP", help="Kafka bootstrap servers")] = "localhost:9092",
    wait: Annotated[float, typer.Option(help="seconds to wait for the broker")] = 60.0,
    check_only: Annotated[bool, typer.Option(
        "--check-only", help="only wait for the broker, change nothing")] = False,
) -> None:
    from confluent_kafka import KafkaException

    from infra.topics import TopicSettings, ensure_topics, topic_specs, wait_for_broker

    try:
        specs = topic_specs()  # settings first: a bad one fails before any waiting
        # The admin principal's credentials when secure (KAFKA_SECURITY_PROTOCOL, …).
        kafka = {**TopicSettings.from_env().kafka_client(), "bootstrap.servers": bootstrap}
    except ValueError as exc:
        fail(format_settings_error(exc))
    with _failures("topics", TimeoutError, KafkaException, ValueError):
        admin = wait_for_broker(kafka, wait, brokers=specs[0].replication_factor)
        if check_only:
            return
        for line in ensure_topics(admin, specs):
            typer.echo(line)


@app.command(help="""Print the consumer lag of every sink group and of the aggregator.

For each consumer group named CONSUMER_GROUP_PREFIX-… with committed offsets (the sinks'), per
topic: its partitions, members, state and lag (high watermarks minus committed offsets, from the
brokers' Admin API). Then the aggregator's lag per topic, read from its metrics port (it commits
no group offsets), or a note that it does not answer. `make status` runs it.

Environment: KAFKA_BOOTSTRAP, CONSUMER_GROUP_PREFIX, AGG_METRICS_PORT.

Exit status: 0 printed; 2 the brokers did not answer.""")
def lag(
    ctx: typer.Context,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each answer")] = 5.0,
    aggregator: Annotated[str | None, typer.Option(
        help="the aggregator's metrics URL [default: http://127.0.0.1:$AGG_METRICS_PORT/metrics]",
        show_default=False)] = None,
) -> None:
    import os

    from confluent_kafka import KafkaException

    from connectors import lag as lags
    from connectors.config import Config

    cfg = _config(ctx, Config)
    url = aggregator or \
        f"http://127.0.0.1:{os.environ.get('AGG_METRICS_PORT') or '9102'}/metrics"
    with _failures("lag", KafkaException):
        rows = lags.group_lags(cfg.kafka_bootstrap, cfg.group_prefix, timeout)
    note = None
    try:
        rows += lags.aggregator_lags(url, timeout)
    except (OSError, ValueError) as exc:
        note = f"aggregator: no metrics at {url} ({exc})"
    typer.echo(lags.table(rows))
    if note:
        typer.echo(note)


@app.command(help="""Apply the pending PostgreSQL schema migrations, then exit.

Runs connectors/migrations/NNNN_name.sql files not yet in `schema_migrations`, all in one
transaction under an advisory lock (the sinks also do this when they start).

Environment: DATABASE_URL.

Exit status: 0 done; 2 the database is unreachable or a migration failed.""")
def migrate(ctx: typer.Context) -> None:
    import psycopg

    from connectors.config import Config
    from connectors.consumer import setup_logging
    from connectors.migrate import migrate_url

    setup_logging()
    cfg = _config(ctx, Config)
    with _failures("migrate failed", psycopg.Error, ValueError):
        applied, current = migrate_url(cfg.database_url)
    typer.echo(f"applied {applied or 'nothing'}; schema version {current}")



# ---------------------------------------------------------------- secrets and tokens


@app.command(help="""Generate the secure profile's secrets that do not exist yet.

Each is a random value in its own file under `$RUN_DIR/secrets/` (directory 0700, files
0600): the APIs' token key, one Redis password per service (infra/redis_acl.py), one
PostgreSQL password per role (infra/pg_roles.py), one Kafka password per principal
(infra/kafka_acl.py). Existing files are kept, so running it
again changes nothing. Prints the paths, never the values. `make up PROFILE=secure` runs it;
compose.yaml mounts the token key as a Docker secret.

Environment: RUN_DIR.

Exit status: 0 done; 2 a file cannot be written.""")
def secrets(ctx: typer.Context) -> None:
    from cart_contract.secrets import JWT_SECRET_NAME, ensure_secret_file, secrets_dir
    from cart_web.settings import AuthSettings
    from infra import kafka_acl, pg_roles, redis_acl

    cfg = _config(ctx, AuthSettings)
    with _failures("secrets failed", OSError, ValueError):
        for name in (JWT_SECRET_NAME,
                     *(redis_acl.secret_name(u) for u in (redis_acl.DEFAULT_USER,
                                                          *redis_acl.USERS)),
                     *(pg_roles.secret_name(k) for k in pg_roles.KINDS),
                     *(kafka_acl.secret_name(p) for p in kafka_acl.PRINCIPALS)):
            path = secrets_dir(cfg.run_dir) / name
            ensure_secret_file(path)
            typer.echo(str(path))


# Not a valid customerId (no "/" in ids), so an admin token never owns a cart.
ADMIN_SUBJECT = "admin/cli"
ENV_TOKEN = "CARTSTREAM_PROFILE, JWT_SECRET, JWT_SECRET_FILE, RUN_DIR, JWT_ISSUER, JWT_AUDIENCE, " \
            "JWT_ADMIN_SCOPE"


@app.command(help=f"""Print a bearer token (JWT, HS256) for the secure profile's APIs.

Signed with the local key: JWT_SECRET, else JWT_SECRET_FILE, else `$RUN_DIR/secrets/jwt-hs256`
(generated, mode 0600, if it does not exist yet). Its `sub` is the customer; --admin adds the
admin scope instead. Not available when the APIs verify an identity provider's tokens
(JWT_JWKS_URL).

Environment: {ENV_TOKEN}.

Exit status: 0 printed; 2 bad usage, or the key cannot be read.""")
def token(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option(help="the customerId the token acts for")] = None,
    admin: Annotated[bool, typer.Option(help="an admin token (cross-customer reads)")] = False,
    ttl: Annotated[int, typer.Option(min=60, help="seconds the token is valid")] = 3600,
) -> None:
    from cart_contract.ids import ID_RE
    from cart_web.auth import issue_token
    from cart_web.settings import AuthSettings

    if (customer is None) == (not admin):
        fail("give exactly one of --customer ID or --admin")
    if customer is not None and not ID_RE.fullmatch(customer):
        fail(f"--customer {customer!r} is not a valid customerId")
    cfg = _config(ctx, AuthSettings)
    with _failures("token failed", OSError, ValueError):
        typer.echo(issue_token(cfg, customer or ADMIN_SUBJECT, admin=admin, ttl_s=ttl))
