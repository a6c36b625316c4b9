"""`shelfsight embedder`, `serve`, `profiles`, `similar`, `reindex` and `shopper-token`."""

import argparse
import shutil
import time

from services.cli import Commands
from services.errors import UserError
from services.settings import Settings


def register(commands: Commands) -> None:
    embedder = commands.add_parser("embedder", help="run the embedder: products.listed → Qdrant + products.indexed")
    embedder.set_defaults(run=_embedder)

    serve = commands.add_parser(
        "serve", help="run the recommender: HTTP API, storefront, Kafka responder, and the embedder (it owns the product store)"
    )
    serve.add_argument("--no-embedder", action="store_true", help="read only; needs SHELFSIGHT_QDRANT_URL (a Qdrant server)")
    serve.set_defaults(run=_serve)

    profiles = commands.add_parser("profiles", help="run the profiles worker: clicks → shopper profiles in Redis")
    profiles.set_defaults(run=_profiles)

    similar = commands.add_parser("similar", help="products that look like a given one (reads the product store)")
    similar.add_argument("product_id")
    similar.add_argument("-k", type=int, default=5)
    similar.add_argument("--using", choices=["fused", "image", "text"], default="image")
    similar.set_defaults(run=_similar)

    reindex = commands.add_parser("reindex", help="drop the product store and re-embed products.listed from the start")
    reindex.add_argument("--yes", action="store_true", help="confirm: the collection is deleted")
    reindex.set_defaults(run=_reindex)

    token = commands.add_parser("shopper-token", help="mint a shopper token for the widget (needs SHELFSIGHT_SHOPPER_TOKEN_SECRET)")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds it stays valid (default 3600)")
    token.set_defaults(run=_shopper_token)


def _embedder(settings: Settings, _args: argparse.Namespace) -> int:
    from services.embedder.service import run_until_signalled

    return run_until_signalled(settings)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from services.recommender.service import run_serve

    if args.no_embedder and not settings.qdrant_url:
        raise UserError("--no-embedder needs a Qdrant server (SHELFSIGHT_QDRANT_URL): the embedded store has one owner")
    return run_serve(settings, with_embedder=not args.no_embedder)


def _profiles(settings: Settings, _args: argparse.Namespace) -> int:
    from services.profiles.service import run_profiles

    return run_profiles(settings)


def _similar(settings: Settings, args: argparse.Namespace) -> int:
    from services.embedder.service import load_predictor, open_product_store
    from services.embedder.versions import live_settings
    from services.redis_clients import redis_client
    from services.vectors.store import SearchFilters

    settings, _group, _revision = live_settings(settings, redis_client(settings))  # the live model version's collection
    store = open_product_store(settings, load_predictor(settings))
    try:
        found = store.get([args.product_id], with_vectors=True)
        if not found:
            raise UserError(f"product {args.product_id} is not in the store; has the embedder indexed it?")
        vector = found[0].vectors.get(args.using)
        if vector is None:
            raise UserError(f"product {args.product_id} has no {args.using} vector (image_error: {found[0].payload.get('image_error')})")
        print(f"{args.product_id}: {found[0].payload['title']} [{found[0].payload['category']}]")
        hits = store.search(list(vector), using=args.using, limit=args.k, filters=SearchFilters(exclude=frozenset({args.product_id})))
        for hit in hits:
            print(f"  {hit.score:.3f}  {hit.product_id}  {hit.payload['title']} [{hit.payload['category']}]")
    finally:
        store.close()
    return 0


def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, TopicPartition

    from schemas.topics import PRODUCTS_LISTED
    from services.bus.broker import require_broker
    from services.bus.config import consumer_config
    from services.embedder.worker import GROUP_ID
    from services.redis_clients import redis_client
    from state.catalogue import read_alias
    from state.keys import Keys

    if not args.yes:
        raise UserError("reindex deletes the product collection; stop the embedder, then run `shelfsight reindex --yes`")
    require_broker(settings)
    if (alias := read_alias(redis_client(settings), Keys.of(settings))) is not None:
        raise UserError(
            f"`shelfsight reembed` manages the catalogue (live: {alias.live.name}); "
            "use `shelfsight reembed --model CHECKPOINT` to embed it again, without downtime"
        )
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        QdrantClient(url=settings.qdrant_url).delete_collection(settings.qdrant_collection)
    else:
        path = settings.qdrant_path or settings.cache_dir / "qdrant" / settings.qdrant_collection
        shutil.rmtree(path, ignore_errors=True)
    topic = settings.topic(PRODUCTS_LISTED.name)
    consumer = Consumer(consumer_config(settings, settings.group(GROUP_ID)))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]) for p in partitions]
        consumer.commit(offsets=starts, asynchronous=False)
    finally:
        consumer.close()
    print(f"product store dropped; {settings.group(GROUP_ID)} will re-embed {topic} from the start: run `shelfsight embedder`")
    return 0


def _shopper_token(settings: Settings, args: argparse.Namespace) -> int:
    from services.recommender.http.tokens import mint

    if settings.shopper_token_secret is None:
        raise UserError("SHELFSIGHT_SHOPPER_TOKEN_SECRET is not set: set it to the secret the API uses")
    if not 0 < args.ttl <= settings.shopper_token_max_ttl_s:
        raise UserError(f"--ttl must be between 0 and {settings.shopper_token_max_ttl_s:.0f} s (SHELFSIGHT_SHOPPER_TOKEN_MAX_TTL_S)")
    print(mint(settings.shopper_token_secret.get_secret_value().encode(), args.user_id, int(time.time() + args.ttl)))
    return 0
