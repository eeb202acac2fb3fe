"""The worker's one settings object: frozen, typed, built from ``STREAMREC_*`` variables.

Nothing else in streamrec reads ``os.environ``. Every field names its variable and its
documented default; ``python -m stream settings`` prints them, and ``docs/configuration.md``
is generated from them. :class:`EnvSettings` is the machinery: the tools' few settings of
their own (the embedded broker's binary, the datasets folder) use it too, in their modules,
so the worker's settings hold only what a worker reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Self, get_args

from stream.errors import ConfigError

PREFIX = "STREAMREC_"
#: Which items a user's list leaves out: those purchased, or every item the user met.
ExcludePolicy = Literal["purchased", "seen"]


def setting(default: Any, doc: str, *, choices: tuple[str, ...] = (), secret: bool = False) -> Any:
    """A settings field: its default, what it means, its allowed values, whether it is secret."""
    return field(
        default=default,
        repr=not secret,
        metadata={"doc": doc, "choices": choices, "secret": secret},
    )


class EnvSettings:
    """Frozen dataclass settings read from ``STREAMREC_<FIELD>`` variables (mixin)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Build settings from ``STREAMREC_*`` variables, validating each one.

        Raises:
            ConfigError: a variable does not parse, or is out of its allowed range.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]  # subclasses are dataclasses
            name = PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, f.type, f.metadata["choices"])
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """These settings as ``STREAMREC_*`` variables (for a worker started by a tool)."""
        return {
            PREFIX + f.name.upper(): str(getattr(self, f.name)).lower()
            if f.type in ("bool", bool)
            else str(getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
        }

    def with_overrides(self, **changes: Any) -> Self:
        """Return a copy with some fields changed, validated like the original."""
        settings = replace(self, **changes)  # type: ignore[type-var]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check ranges that a single field's type cannot express (none by default)."""

    @classmethod
    def table(cls) -> str:
        """Markdown table of every variable, its default and meaning."""
        rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
        for f in fields(cls):  # type: ignore[arg-type]
            default = "" if f.metadata["secret"] else f.default
            doc = f.metadata["doc"]
            if f.metadata["choices"]:
                doc += f" One of: {', '.join(f.metadata['choices'])}."
            rows.append(f"| `{PREFIX}{f.name.upper()}` | `{default}` | {doc} |")
        return "\n".join(rows)


@dataclass(frozen=True)
class Settings(EnvSettings):
    """Every tunable of a worker (and of the tools that drive one); see :meth:`from_env`."""

    # Kafka and topics
    broker: str = setting(
        "kafka://127.0.0.1:9092", "Kafka bootstrap URL(s), `kafka://host:port[;host:port]`."
    )
    app_id: str = setting(
        "streamrec", "Faust app id: the consumer group and the prefix of internal topics."
    )
    events_topic: str = setting("events", "Input topic of user events (key = user id).")
    recommendations_topic: str = setting(
        "recommendations", "Output topic of recommendation lists (key = user id)."
    )
    dlq_topic: str = setting(
        "events.dlq", "Dead-letter topic for events and catalogue records that break the contract."
    )
    catalogue_topic: str = setting(
        "catalogue",
        "Catalogue topic (log-compacted, key = item id): every worker reads all of it and "
        "serves new, changed and removed items without a restart; empty: not followed (the "
        "model's trained items, as exported).",
    )
    topic_partitions: int = setting(
        8, "Partitions of the topics streamrec creates; the ceiling on useful workers."
    )
    topic_replication_factor: int = setting(1, "Replication factor of topics streamrec creates.")
    session_timeout_s: float = setting(
        10.0, "Consumer session timeout. The embedded broker holds each join for half of it."
    )
    heartbeat_interval_s: float = setting(2.0, "Consumer heartbeat interval.")
    commit_interval_s: float = setting(
        2.8,
        "How often handled events' offsets are committed; after a crash, up to this much "
        "traffic is handled again (duplicates carry the same `trigger_event_id`).",
    )
    producer_linger_ms: float = setting(
        5.0,
        "How long the worker's producer gathers lists and changelog writes into one request.",
    )
    producer_request_timeout_s: float = setting(
        30.0,
        "How long the producer tries to deliver a batch of records before it counts as "
        "failed (Faust's default is 20 minutes). A failed delivery is sent again, in order; "
        "nothing after it is acknowledged meanwhile.",
    )
    delivery_timeout_s: float = setting(
        300.0,
        "How long failed deliveries are sent again before the worker gives up and stops "
        "(exit 1), so that the events it did not acknowledge are read again after a restart.",
    )
    fetch_max_wait_ms: int = setting(
        50, "Longest a fetch waits for data; the embedded broker always waits this long."
    )
    take_fetches: bool = setting(
        True,
        "The agent takes each partition's fetched events as one item (false: one message at "
        "a time, Faust's own path, several times the CPU per event; for diagnosis).",
    )
    # Kafka security (passed through to the Faust/aiokafka clients)
    security_protocol: str = setting(
        "PLAINTEXT",
        "Kafka security protocol.",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    )
    sasl_mechanism: str = setting(
        "PLAIN", "SASL mechanism.", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    )
    sasl_username: str = setting("", "SASL user name.")
    sasl_password: str = setting("", "SASL password (never logged).", secret=True)
    ssl_cafile: str = setting("", "CA bundle that signs the brokers' certificates.")
    ssl_certfile: str = setting("", "Client certificate for mutual TLS.")
    ssl_keyfile: str = setting("", "Client private key for mutual TLS.")
    # Model and scoring
    model_dir: str = setting(
        "models/current", "Model directory (`manifest.json` and the ONNX files it names)."
    )
    provider: str = setting(
        "auto",
        "ONNX Runtime execution provider: CUDA when available, else CPU.",
        choices=("auto", "cpu", "cuda"),
    )
    intra_op_threads: int = setting(0, "ONNX Runtime intra-op threads; 0 lets it choose.")
    top_k: int = setting(20, "Items per recommendation list.")
    query_cache_size: int = setting(10000, "Distinct search queries whose vectors are cached.")
    query_precision: str = setting(
        "auto",
        "Query encoder weights: `auto` takes the model's int8 encoder where queries are encoded "
        "on CPU and the model has one, fp32 otherwise.",
        choices=("auto", "fp32", "int8"),
    )
    model_reload_s: float = setting(
        10.0,
        "How often the worker checks the model directory for a new model version and switches "
        "to it without a restart; 0 turns the check off.",
    )
    experiment: str = setting(
        "",
        "Experiment file (JSON: name, salt, arms with model_dir and share): users are split "
        "between the arms' models by a stable hash and each list names its arm; empty: no "
        "experiment, `STREAMREC_MODEL_DIR` serves everyone. See docs/experiments.md.",
    )
    attribution_window_s: float = setting(
        1800.0,
        "A click or purchase of an item on the user's latest list counts for that list's arm "
        "when it happens within this many seconds (event time) of the list's trigger event.",
    )
    diversity: float = setting(
        0.0,
        "Diversity re-ranking weight λ in [0, 1] (maximal marginal relevance over the model's "
        "item vectors); 0 is off, higher trades relevance for variety within a list.",
    )
    new_item_feedback: bool = setting(
        True,
        "Items added to the catalogue after the model's export get a score bias fit from "
        "their clicks: log((clicks + a) / (clicks the model expected + a)). See "
        "docs/model.md#click-feedback-for-new-items.",
    )
    new_item_prior_clicks: float = setting(
        1.0,
        "Pseudo-clicks `a` of the new-item feedback: how many clicks it takes before an "
        "item's own clicks outweigh the model's score for it.",
    )
    new_item_half_life_s: float = setting(
        604800.0,
        "Half-life (event time) of the clicks and expected clicks behind the new-item "
        "feedback; 0 keeps them forever.",
    )
    exclude: ExcludePolicy = setting(
        "purchased",
        "Items kept out of a user's list: those purchased, or every item the user met "
        "(the event window and `STREAMREC_MAX_SEEN` items).",
        choices=get_args(ExcludePolicy),
    )
    # Context and batching
    context_events: int = setting(50, "Most recent events kept per user (N).")
    max_purchased: int = setting(500, "Most recent purchased items remembered per user.")
    max_seen: int = setting(
        1000,
        "Most recent distinct items remembered per user beyond the event window, kept only "
        "under `STREAMREC_EXCLUDE=seen`.",
    )
    context_cache_users: int = setting(
        4096,
        "Users whose context the worker also keeps decoded (the newest written): a read whose "
        "stored bytes are the ones written skips decoding them; 0: none.",
    )
    batch_max_users: int = setting(128, "A batch flushes when this many users are pending (B).")
    batch_max_wait_ms: float = setting(
        10.0, "A batch flushes this long after its first pending user (T)."
    )
    batch_max_events: int = setting(
        4096, "A batch also flushes when this many events are waiting in it."
    )
    max_inflight_batches: int = setting(
        2, "Batches scored or being published at once; more blocks consumption (backpressure)."
    )
    # Input limits
    max_event_bytes: int = setting(65536, "Largest accepted event message, in bytes.")
    max_id_chars: int = setting(256, "Longest accepted user, item or event id.")
    max_query_chars: int = setting(1024, "Longest accepted search query.")
    # Process
    store: str = setting(
        "memory://",
        "Faust table store: `memory://`, or `rocksdb://` (RocksDB through rocksdict) to keep "
        "user tables on disk under `STREAMREC_DATA_DIR`, so a restart replays only the "
        "changelog written since.",
        choices=("memory://", "rocksdb://"),
    )
    standby_replicas: int = setting(
        1,
        "Standby copies of each table partition kept by other workers, so a rebalance "
        "takes over a warm table instead of replaying the changelog.",
    )
    data_dir: str = setting("streamrec-data", "Faust data directory (local table state).")
    web_enabled: bool = setting(True, "Serve the worker's web endpoint (stats, context).")
    web_host: str = setting("127.0.0.1", "Address the web endpoint binds; 0.0.0.0 in containers.")
    web_port: int = setting(6066, "Port of the web endpoint.")
    web_token: str = setting(
        "",
        "Bearer token the per-user endpoints (`/context/`, `/recommendations/`) require "
        "(`Authorization: Bearer <token>`); needed to bind any address but loopback. "
        "Probes and `/metrics` stay open.",
        secret=True,
    )
    context_view: bool = setting(
        False,
        "Serve `/context/<user_id>/` (a user's recent items and raw search queries); off by "
        "default.",
    )
    log_level: str = setting(
        "info",
        "Level of streamrec's own log lines; also Faust's under `python -m stream worker` "
        "unless `-l` is given.",
        choices=("debug", "info", "warning", "error"),
    )

    def validate(self) -> None:
        """Check ranges that a single field's type cannot express.

        Raises:
            ConfigError: naming the offending variable and value.
        """
        positive = (
            "topic_partitions",
            "topic_replication_factor",
            "top_k",
            "context_events",
            "max_purchased",
            "max_seen",
            "batch_max_users",
            "batch_max_events",
            "max_inflight_batches",
            "max_event_bytes",
            "max_id_chars",
            "max_query_chars",
        )
        for name in positive:
            if getattr(self, name) < 1:
                msg = f"{PREFIX}{name.upper()} must be >= 1, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        strictly_positive = (
            "batch_max_wait_ms",
            "session_timeout_s",
            "commit_interval_s",
            "producer_request_timeout_s",
            "delivery_timeout_s",
            "attribution_window_s",
            "new_item_prior_clicks",
        )
        for name in strictly_positive:
            if getattr(self, name) <= 0:
                msg = f"{PREFIX}{name.upper()} must be > 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        for name in ("model_reload_s", "new_item_half_life_s"):
            if getattr(self, name) < 0:
                msg = f"{PREFIX}{name.upper()} must be >= 0, got {getattr(self, name)!r}"
                raise ConfigError(msg)
        if not 0.0 <= self.diversity <= 1.0:
            msg = f"STREAMREC_DIVERSITY must be between 0 and 1, got {self.diversity!r}"
            raise ConfigError(msg)
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            msg = (
                f"STREAMREC_SECURITY_PROTOCOL={self.security_protocol} needs "
                "STREAMREC_SASL_USERNAME and STREAMREC_SASL_PASSWORD"
            )
            raise ConfigError(msg)
        if not self.broker.startswith("kafka://"):
            msg = f"STREAMREC_BROKER must look like kafka://host:port, got {self.broker!r}"
            raise ConfigError(msg)

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as a plain ``host:port[,host:port]`` list for Kafka clients."""
        return self.broker.removeprefix("kafka://").replace(";", ",")


def _parse(name: str, raw: str, kind: Any, choices: tuple[str, ...]) -> Any:
    # annotations are strings here; a named choice type (a Literal alias) parses as a string
    kind = {"int": int, "float": float, "bool": bool}.get(kind, str)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        value = kind(raw.strip())
    except ValueError as exc:
        msg = f"{name}={raw!r} is not a valid {kind.__name__}"
        raise ConfigError(msg) from exc
    if choices:
        canon = {c.lower(): c for c in choices}
        if str(value).lower() not in canon:
            msg = f"{name}={raw!r} must be one of {', '.join(choices)}"
            raise ConfigError(msg)
        value = canon[str(value).lower()]
    return value


def settings_table() -> str:
    """Markdown table of every worker variable, its default and meaning."""
    return Settings.table()


def load_settings() -> Settings:
    """The worker's settings, or exit with one line naming the bad variable.

    For module-level code that Faust's command line imports (``faust -A stream.app``), where a
    :class:`ConfigError` would otherwise print a traceback before its message.
    """
    try:
        return Settings.from_env()
    except ConfigError as exc:
        msg = f"streamrec: {exc}"
        raise SystemExit(msg) from None
