"""The catalogue alias on a real redis-server: a switch is a compare-and-set on its revision."""

import json
import uuid

import pytest

from state.catalogue import (
    MAX_STAGED,
    AliasChanged,
    CatalogueAlias,
    CatalogueVersion,
    decode_alias,
    encode_alias,
    read_alias,
    servable,
    stage,
    staged,
    unstage,
    write_alias,
)
from state.keys import Keys

A = CatalogueVersion("m-1", "products", "/ckpt/a", False, "shelfsight-embedder")
B = CatalogueVersion("m-2", "products-m-2", "/ckpt/b", True, "shelfsight-embedder-m-2")


@pytest.mark.redis
def test_two_switches_from_the_same_revision_cannot_both_land(redis_client):
    keys = Keys(f"alias-{uuid.uuid4().hex[:8]}:")
    assert read_alias(redis_client, keys) is None, "nothing switched yet"
    write_alias(redis_client, keys, CatalogueAlias(B, A, 1))
    with pytest.raises(AliasChanged, match="--status"):
        write_alias(redis_client, keys, CatalogueAlias(A, B, 1))  # read before the first landed
    assert read_alias(redis_client, keys) == CatalogueAlias(B, A, 1)
    write_alias(redis_client, keys, CatalogueAlias(A, B, 2))
    assert read_alias(redis_client, keys) == CatalogueAlias(A, B, 2)
    redis_client.delete(keys.catalogue)


@pytest.mark.parametrize(
    "field",
    [{"collection": "../../etc"}, {"collection": "/tmp/x"}, {"group": "shelfsight-profiles"}, {"checkpoint": "relative/ckpt"}],
)
def test_an_alias_that_names_a_path_or_another_services_group_is_refused(field):
    doc = json.loads(encode_alias(CatalogueAlias(B, A, 1)))
    doc["live"] |= field
    with pytest.raises(ValueError, match="may not"):
        decode_alias(json.dumps(doc))


@pytest.mark.redis
def test_staged_versions_are_servable_bounded_and_an_unsafe_entry_is_left_out(redis_client):
    keys = Keys(f"staged-{uuid.uuid4().hex[:8]}:")
    assert servable(redis_client, keys, A) == {"m-1": A}, "before any switch: the settings' own version"
    stage(redis_client, keys, B)
    assert staged(redis_client, keys) == {"m-2": B} and servable(redis_client, keys, A) == {"m-1": A, "m-2": B}
    others = [
        CatalogueVersion(f"m-{n}", f"products-m-{n}", "/ckpt/n", False, f"shelfsight-embedder-m-{n}") for n in range(3, 3 + MAX_STAGED)
    ]
    for version in others[: MAX_STAGED - 1]:
        stage(redis_client, keys, version)
    with pytest.raises(ValueError, match="unstage one"):
        stage(redis_client, keys, others[-1])
    stage(redis_client, keys, B)  # staged again (after more listings): not one more
    assert unstage(redis_client, keys, "m-2") and not unstage(redis_client, keys, "m-2")
    redis_client.hset(keys.catalogue_staged, "evil", json.dumps({**json.loads(json.dumps(B.__dict__)), "collection": "../../etc"}))
    assert "evil" not in staged(redis_client, keys) and len(staged(redis_client, keys)) == MAX_STAGED - 1
    write_alias(redis_client, keys, CatalogueAlias(others[0], A, 1))
    assert set(servable(redis_client, keys, A)) >= {"m-1", "m-3"}, "live and previous are servable too"
    # A staged entry that would write into a kept version's collection, or read as its group, is not served.
    for gone in ("m-4", "evil"):
        unstage(redis_client, keys, gone)
    stage(redis_client, keys, CatalogueVersion("m-x", A.collection, "/ckpt/x", False, "shelfsight-embedder-m-x"))
    stage(redis_client, keys, CatalogueVersion("m-y", "products-m-y", "/ckpt/y", False, A.group))
    assert {"m-x", "m-y"} <= set(staged(redis_client, keys)) and not {"m-x", "m-y"} & set(servable(redis_client, keys, A))
    assert servable(redis_client, keys, A)["m-1"] == A and servable(redis_client, keys, A)["m-3"] == others[0]
    redis_client.delete(keys.catalogue, keys.catalogue_staged)
