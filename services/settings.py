"""The one settings object, read from ``SHELFSIGHT_*`` environment variables.

Build it once at the edge (the CLI, a service's ``main``) and pass it down;
nothing else reads the environment.
"""

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.errors import UserError

MIN_SECRET_CHARS = 16  # API keys, publishable keys, the shopper-token and state secrets


def _default_cache() -> Path:
    return Path.home() / ".cache" / "shelfsight"


class Settings(BaseSettings):
    """Everything configurable in Shelfsight. Each field is documented in the README."""

    model_config = SettingsConfigDict(env_prefix="SHELFSIGHT_", frozen=True, extra="ignore")

    cache_dir: Path = Field(
        default_factory=_default_cache,
        description="Where downloaded assets live (Kafka jars); shared by every clone.",
    )
    state_dir: Path | None = Field(
        default=None,
        description="Local stack data, logs and pid files. Default: `<cache_dir>/stack`.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers. The local stack listens on this host:port.",
    )
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535, description="KRaft controller port of the local broker.")
    kafka_version: str = Field(default="3.9.1", pattern=r"^3\.9\.\d+$", description="Apache Kafka version the stack runs.")
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[mg]$", description="JVM heap of the local broker.")
    kafka_start_timeout_s: float = Field(default=120.0, gt=0, description="How long `stack up` waits for the broker.")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL. The local stack listens here.")
    qdrant_url: str | None = Field(
        default=None,
        description="Qdrant server URL (`:memory:` for qdrant-client's in-process mode). Unset: embedded Qdrant Edge.",
    )
    qdrant_path: Path | None = Field(
        default=None,
        description="Folder of the embedded Qdrant Edge shard. Default: `<cache_dir>/qdrant/<collection>`.",
    )
    qdrant_indexing_threshold_kb: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Embedded shard, set when it is created: vectors (KB per segment) above which a segment gets an HNSW index. Unset: Qdrant's default.",
    )
    qdrant_quantization: Literal["none", "int8"] = Field(
        default="int8",
        description="Embedded shard, set when it is created: `int8` keeps a scalar-quantised copy of each vector in memory, which searches of its HNSW-indexed segments walk, the originals rescoring the best (`SHELFSIGHT_QDRANT_OVERSAMPLING`): the index builds in under half the time and searches find more of the exact answer (docs/benchmarks.md); `none`: float32 vectors alone. An existing shard keeps its own: `shelfsight reindex` (or `reembed`, where it manages the catalogue) to change it.",
    )
    qdrant_oversampling: float = Field(
        default=1.5,
        ge=1.0,
        le=8.0,
        description="A quantised shard's searches take this many times the limit by the int8 vectors, then rescore them with the originals.",
    )
    qdrant_search_ef: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Embedded shard: the HNSW beam of a search; larger finds more of the exact neighbours and takes longer. Unset: Qdrant's default (docs/benchmarks.md).",
    )
    qdrant_search_threads: int = Field(
        default=1,
        ge=0,
        le=1024,
        description="Embedded shard: threads a search runs on, set each time the shard is opened. 0: one per core (Qdrant's default); 1 keeps a request's search on its own thread, which holds latency's tail on a small machine (docs/benchmarks.md).",
    )
    vector_cache_s: float = Field(
        default=60.0,
        ge=0.0,
        le=86_400.0,
        description="With a Qdrant server: how long `serve` keeps a product's vectors in memory instead of asking the server again (0: never). Its own embedder's writes replace them at once; an embedder in another process is seen after this long.",
    )
    vector_cache_items: int = Field(
        default=50_000,
        ge=0,
        le=10_000_000,
        description="With a Qdrant server: products whose vectors `serve` keeps in memory (about 2 KB each at 256 dimensions; least recently used go first).",
    )
    index_rebuild_after: int = Field(
        default=5_000,
        ge=0,
        le=10_000_000,
        description="Embedded shard: rebuild its vector index off-process once this many products were written since the last build (0: only when `serve` starts).",
    )
    index_quiet_s: float = Field(default=10.0, ge=0, le=3_600, description="… once writes have paused this long (a burst is over) …")
    index_max_wait_s: float = Field(
        default=300.0, ge=0, le=86_400, description="… or once the oldest unindexed write is this old, paused or not."
    )
    qdrant_collection: str = Field(default="products", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Qdrant collection of the products.")
    model_dir: Path | None = Field(
        default=None,
        description="Checkpoint the services load. Default: `<cache_dir>/checkpoints/fashion-mnist` (`make model`).",
    )
    device: str | None = Field(default=None, description="Torch device for the model; default CUDA when present.")
    mirror_average: bool | None = Field(
        default=None,
        description="See each picture together with its mirror image and average the two (`make model`'s checkpoint: "
        "+0.23 points on Fashion-MNIST, a quarter of the embedder's rate). Default: the checkpoint's choice, made on its "
        "validation photos when it was trained.",
    )
    embedder_batch_size: int = Field(default=32, ge=1, le=1024, description="Most products per Predictor call.")
    embedder_max_wait_ms: int = Field(default=100, ge=1, le=60_000, description="How long a batch waits to fill before it runs.")
    embedder_delivery_timeout_s: float = Field(
        default=30.0,
        ge=1.0,
        le=600.0,
        description="How long the embedder waits for Kafka to take a batch's output before it stops (the batch is redone after a restart).",
    )
    embedder_decode_threads: int = Field(default=4, ge=1, le=64, description="Threads that fetch and decode images.")
    embedder_processes: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Processes that run the model on a CPU, one torch thread each (about 500 MB of memory each). Default: one per "
        "core, at most 4; 1: the model runs in the embedder's own process. With a GPU the model always runs in-process.",
    )
    catalogue_poll_s: float = Field(
        default=5.0,
        ge=0.1,
        le=600.0,
        description="How often `serve` and `shelfsight embedder` look whether `shelfsight reembed` switched the live model version.",
    )
    experiments_poll_s: float = Field(
        default=5.0,
        ge=0.1,
        le=600.0,
        description="How often `serve` reads the experiments (`shelfsight experiments`) and which copy each saved-learners name holds: a new or stopped experiment, or a new copy, takes effect within this time.",
    )
    attribution_window_s: float = Field(
        default=1800.0,
        ge=1.0,
        le=1800.0,
        description="A click, add-to-cart or purchase of a recommended product this soon after the list that showed it counts for that list's experiment variant (at most the 30 minutes served lists are kept).",
    )
    store_head: bool = Field(
        default=True,
        description="Learn the store's own categories from listings that carry `category_hint` and classify listings without one into them (false: the product model's classes).",
    )
    store_head_unsure_below: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Below this probability the store head files a listing under `Uncategorised` instead of guessing.",
    )
    store_head_max_examples: int = Field(
        default=20_000, ge=10, le=1_000_000, description="Labelled listings the store head learns from (the latest per product)."
    )
    embedder_metrics_port: int = Field(default=9108, ge=0, le=65535, description="Port of the embedder's /metrics and /healthz (0: off).")
    metrics_host: str = Field(
        default="127.0.0.1", description="Address the services' /metrics and /healthz listen on (0.0.0.0 in containers)."
    )
    redis_prefix: str = Field(
        default="shelfsight:", pattern=r"^[A-Za-z0-9:._-]*$", description="Put in front of every Redis key Shelfsight writes."
    )
    redis_cluster: bool = Field(
        default=False,
        description="`SHELFSIGHT_REDIS_URL` names a node of a Redis Cluster: clients follow the cluster's slots (set `SHELFSIGHT_REDIS_SHARDS` too).",
    )
    redis_shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Key groups the profile state is split into (hash tags `{0}`, `{1}` …), to spread it over a Redis Cluster's nodes. Fixed once state is written.",
    )
    profiles_batch_size: int = Field(default=500, ge=1, le=10_000, description="Most click events per Redis transaction.")
    profiles_batch_wait_ms: int = Field(default=20, ge=1, le=5_000, description="How long a click batch waits to fill.")
    profiles_park_s: float = Field(
        default=600.0,
        ge=0.0,
        le=7 * 24 * 3600.0,
        description="A click whose product is not indexed yet waits (parked in Redis) this long before it is dead-lettered.",
    )
    profiles_park_max: int = Field(
        default=10_000, ge=0, le=1_000_000, description="Most clicks parked per partition; more are dead-lettered at once."
    )
    profiles_park_retry_s: float = Field(
        default=5.0, gt=0.0, le=600.0, description="How often parked clicks are looked at again when no new click comes."
    )
    consumer_session_timeout_s: float = Field(
        default=10.0,
        ge=6.0,
        le=600.0,
        description="How long the embedder's and the responder's groups wait for a process that stopped answering "
        "(a crash) before its partitions move to the others or to its restarted self.",
    )
    profiles_session_timeout_s: float = Field(
        default=30.0,
        ge=6.0,
        le=600.0,
        description="How long the profiles group waits for a worker that stopped answering before its partitions move to the others.",
    )
    profiles_stall_s: float = Field(
        default=120.0,
        gt=0.0,
        le=3600.0,
        description="The profiles worker reports unhealthy (/healthz 503) when clicks are waiting and none was consumed for this long.",
    )
    profiles_metrics_port: int = Field(
        default=9109, ge=0, le=65535, description="Port of the profiles worker's /metrics and /healthz (0: off)."
    )
    learners_checkpoint_s: float = Field(default=30.0, gt=0, description="How often the River learners are checkpointed to Redis.")
    learners_max_shoppers: int = Field(
        default=100_000,
        ge=1,
        description="Shoppers the River factorisation remembers; the least recently active are forgotten first (bounds memory and the checkpoint).",
    )
    learners_max_items: int = Field(
        default=100_000,
        ge=1,
        description="Products the River factorisation remembers; the least recently active are forgotten first.",
    )
    item_model_items: int = Field(
        default=2_000,
        ge=0,
        le=20_000,
        description="Up to this many products the item-to-item model (EASE over whole shopper histories) is exact, from the "
        "co-occurrence counts each worker keeps of that many products (memory grows with the square, a fit with the cube: "
        "2,000: 16 MB and about 1.5 s; 5,000: 100 MB and 8 s, per process, on two cores); past it, see "
        "`SHELFSIGHT_ITEM_MODEL_RANK`. 0: off.",
    )
    item_model_rank: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Past `SHELFSIGHT_ITEM_MODEL_ITEMS` products, the item-to-item model is EASE on a view of this rank of the "
        "shoppers' histories, covering every product in them: memory is products × rank floats (100,000 products at 64: 26 MB).",
    )
    item_model_refit_s: float = Field(
        default=60.0,
        ge=0,
        description="How often `serve` fits the item-to-item model again from the workers' newest counts.",
    )
    state_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs learner checkpoints in Redis. Unset: a random one kept in `<cache_dir>/state-secret`.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on (0.0.0.0 in containers).")
    api_port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="Port of the HTTP API, the storefront, and (unless `SHELFSIGHT_API_OPS_PORT` is set) /metrics and /docs.",
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""), description="Comma-separated secret keys that may post any event to `POST /v1/events`. Empty: none."
    )
    publishable_keys: str = Field(
        default="",
        description="Comma-separated keys safe to put in a web page: they may post click events only, never a purchase (the widget). Set, `serve` needs `SHELFSIGHT_SHOPPER_TOKEN_SECRET` too.",
    )
    shopper_token_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs shopper tokens. Set: a shopper's recommendations, live stream and widget clicks need a token for that shopper (or a secret API key).",
    )
    shopper_token_max_ttl_s: float = Field(
        default=24 * 3600.0, ge=60.0, le=30 * 24 * 3600.0, description="Shopper tokens that expire later than this from now are refused."
    )
    api_client_events_per_s: float = Field(
        default=50.0,
        gt=0.0,
        le=100_000.0,
        description="Events per second one client address may post with a publishable key (bursts of 4x); more get 429, and one batch larger than the burst 413.",
    )
    api_key_events_per_s: float = Field(
        default=2_000.0,
        gt=0.0,
        le=1_000_000.0,
        description="Events per second one publishable key may post from all addresses together (bursts of 4x); more get 429.",
    )
    api_client_streams: int = Field(
        default=8, ge=1, le=10_000, description="Live recommendation streams (SSE) one client address may hold open at once."
    )
    api_user_streams: int = Field(
        default=4,
        ge=1,
        le=1_000,
        description="Live recommendation streams (SSE) open at once for one shopper, from all addresses together.",
    )
    api_client_requests_per_s: float = Field(
        default=20.0,
        gt=0.0,
        le=100_000.0,
        description="Requests per second one client address may make to the GET routes (recommendations, similar products, images, stream connects; bursts of 4x); more get 429. Secret keys are not limited.",
    )
    served_log_per_s: float = Field(
        default=100.0,
        ge=0.0,
        le=100_000.0,
        description="Served lists per second `serve` logs to `recommendations.served` for learning (about 40 KB each; bursts of one second's worth); more are not logged and are counted in `shelfsight_served_unlogged_total`. 0: none.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or CIDRs of your reverse proxies. Only a request from one of them has its `X-Forwarded-For` believed: its client is the right-most address there that is not itself a proxy. Empty: the connection's peer is the client.",
    )
    api_ops_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port (on `SHELFSIGHT_METRICS_HOST`) of /metrics, /docs, /openapi.json and the full /healthz report; set, the API port no longer serves them (its /healthz says only healthy or not). 0: all on the API port.",
    )
    cors_origins: str = Field(
        default="", description="Comma-separated origins browsers may call the API from (the storefront's). Empty: same origin only."
    )
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request body the API reads.")
    api_head_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=300.0,
        description="A connection whose request head (line and headers) is not complete this long after it opened, or after its previous response, is closed.",
    )
    api_body_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="A request body not complete this long after its head gets 408.",
    )
    ranking: Literal["learned", "prior"] = Field(
        default="learned",
        description="`learned`: the pairwise ranker learned from served lists and the choices that followed, once it has `RANKING_WARMUP_PAIRS`; `prior`: hand-set weights only.",
    )
    ranking_warmup_pairs: int = Field(
        default=500, ge=0, description="Ranking examples (chosen vs skipped pairs) the learned ranker needs before it ranks."
    )
    covisit_neighbours: int = Field(
        default=500,
        ge=10,
        le=5000,
        description="Products kept per product in each co-visitation set (session and history). 500 costs about 50 KB of Redis per well-connected product and set; 128 about 4 KB.",
    )
    covisit_max_pairs: int = Field(
        default=50_000_000,
        ge=1_000,
        le=2_000_000_000,
        description="Members kept in all co-visitation and history sets together (split evenly among Redis key groups); beyond it the sets that grew longest ago are dropped. About 100 bytes each in full sets: 50,000,000 is at most about 5 GB.",
    )
    explore_slots: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Places per list (at most a quarter of it) for new products nobody has clicked yet that look like the shopper's taste.",
    )
    exploration: Literal["fixed", "bandit"] = Field(
        default="fixed",
        description="How new products get places: `fixed`, the `SHELFSIGHT_EXPLORE_SLOTS` places for those nobody has clicked; "
        "`bandit`, up to half a list, won by Thompson sampling on each new product's click-through (from the widget's impressions; without any, the fixed places).",
    )
    explore_margin: float = Field(
        default=0.05,
        ge=0.0,
        le=2.0,
        description="How much closer to the shopper's taste (cosine) than the average candidate a new product must be to be explored.",
    )
    mmr_lambda: float = Field(
        default=0.75, ge=0.0, le=1.0, description="Relevance against diversity in the final list (1: relevance only)."
    )
    new_product_hours: float = Field(
        default=72.0, ge=0.0, description="How long after listing a product is announced as new in its reason."
    )
    learners_refresh_s: float = Field(
        default=10.0, gt=0, description="How often the recommender reloads the River learners' checkpoint from Redis."
    )
    image_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Largest image accepted, inline or fetched.")
    image_max_pixels: int = Field(default=24_000_000, ge=1, description="Largest image in pixels (bomb guard).")
    image_allowed_hosts: str = Field(default="", description="Comma-separated hosts image URLs may point at; empty: any public host.")
    image_allow_http: bool = Field(default=False, description="Allow http:// image URLs (https only by default).")
    image_allow_private: bool = Field(default=False, description="Allow image URLs that resolve to private or loopback addresses.")
    image_file_root: Path | None = Field(default=None, description="Enables file:// image URLs, inside this folder only.")
    image_fetch_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Tries for an image URL that fails in a way that may pass (no answer, HTTP 5xx/429), with backoff, before the product is indexed from its text.",
    )
    image_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Connect and read timeout of image fetches; a whole fetch, retries and redirects included, ends after six times this.",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Put in front of every topic name, to share one cluster.",
    )
    reply_topic_prefix: str = Field(
        default="recommendations.responses.",
        min_length=1,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Reply topics a recommendation request may name besides `recommendations.responses` start with this (before TOPIC_PREFIX).",
    )
    request_max_age_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="A recommendation request on the request topic older than this (by its `requested_at`) is answered with an `expired` error instead of being computed: its asker has given up.",
    )
    topic_partitions: int = Field(default=3, ge=1, le=1000, description="Partitions of each topic `topics create` makes.")
    topic_replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replicas of each topic `topics create` makes (3 on a production cluster)."
    )
    topic_min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="`min.insync.replicas` of the topics `topics create` makes (2 with 3 replicas). Unset: the broker's default.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client connects (producers, consumers, admin, the Faust worker)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="SASL mechanism, with SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="CA certificates (PEM) that sign the brokers' certificates, with SSL or SASL_SSL. Unset: the system's."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="`text` for people, `json` for log shippers.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("shopper_token_secret", "state_secret")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # `SHELFSIGHT_SHOPPER_TOKEN_SECRET=` must not turn tokens on with an empty key anyone can sign with.
        return None if value is not None and not value.get_secret_value() else value

    @field_validator("api_keys", "publishable_keys", "shopper_token_secret", "state_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | str | None, info: ValidationInfo) -> SecretStr | str | None:
        # Short secrets can be guessed; the value itself never goes into the message.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        items = comma_list(text or "") if info.field_name in {"api_keys", "publishable_keys"} else (text or "",)
        if text and any(len(item) < MIN_SECRET_CHARS for item in items):
            raise ValueError(
                f"too short: each key or secret needs at least {MIN_SECRET_CHARS} characters; make one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in comma_list(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @property
    def stack_dir(self) -> Path:
        return self.state_dir or self.cache_dir / "stack"

    @property
    def checkpoint(self) -> Path:
        return self.model_dir or self.cache_dir / "checkpoints" / "fashion-mnist"

    def topic(self, name: str) -> str:
        """The real topic name of a logical one (see ``schemas.topics``)."""
        return f"{self.topic_prefix}{name}"

    def group(self, name: str) -> str:
        """The real consumer group of a service: prefixed like topics, so deployments sharing a cluster never mix."""
        return f"{self.topic_prefix}{name}"

    @cached_property
    def kafka_address(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server: where the local broker listens."""
        host, _, port = self.kafka_bootstrap.split(",")[0].strip().rpartition(":")
        return host.strip("[]"), int(port)

    @cached_property
    def redis_address(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url)
        return parts.hostname or "127.0.0.1", parts.port or 6379


def comma_list(text: str) -> tuple[str, ...]:
    """The items of a comma-separated setting, trimmed, empty ones left out.

    >>> comma_list(" a, b,,c ")
    ('a', 'b', 'c')
    """
    return tuple(item.strip() for item in text.split(",") if item.strip())


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with a one-line error when a value is wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"SHELFSIGHT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors(include_url=False))
        raise UserError(f"invalid settings: {problems}") from None
